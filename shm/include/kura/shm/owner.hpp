// Owners and leases (DESIGN.md section 3).
//
// Every region belongs to an owner, the first hex field of its name. An
// owner is backed by a lease: the file kura_<owner>.lock in the region
// directory, locked by the owning process for its whole life. The kernel
// drops the lock however the process dies, so a region whose owner's lock
// nobody holds is an orphan that prune() may remove. Owner 0 is "kept": such
// regions live until removed by name.
//
// Three kinds of lock meet on a lease and are never mistaken for each other:
// the owner's (it is alive), a Lease's (someone writes for it), and prune's
// (it is being removed). Asking whether an owner is alive takes no lock.
#pragma once

#include <sys/types.h>

#include <cstdint>

#include "kura/core/status.hpp"

namespace kura::shm {

inline constexpr std::uint64_t kKeptOwner = 0;

// The calling process's owner id: random, non-zero, created with its lease on
// first use and held until the process exits. A forked child does not inherit
// it: the child's first call makes an owner of its own. Errors: Io,
// Permission, NoSpace, OutOfMemory. Thread-safe.
Result<std::uint64_t> process_owner() noexcept;

// A hold on another process's owner, for writing results on its behalf
// (DESIGN.md section 3: a worker holds the client's lease while it writes for
// it; it never creates a lease for someone else). While a Lease is held,
// prune() leaves the owner's files alone even if the owner dies. Move-only;
// the hold ends on destruction. A forked child does not inherit the hold.
class Lease {
 public:
  // Holds the lease of `owner`, which must be alive. Errors: NotFound (no
  // lease, or the owner is dead or being pruned), Permission (another user's
  // lease, a symlink, a FIFO), Io, OutOfMemory. Never blocks.
  static Result<Lease> hold(std::uint64_t owner) noexcept;

  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  std::uint64_t owner() const noexcept { return owner_; }
  // True while the owner still lives and its lease is still in place (it
  // has not exited; a writer checks this before publishing).
  bool owner_alive() const noexcept;

 private:
  friend struct LeaseAccess;
  Lease(std::uint64_t owner, int fd) noexcept;
  void reset() noexcept;
  std::uint64_t owner_ = 0;
  int fd_ = -1;
  pid_t pid_ = 0;
};

// True when the owner's process holds its lease (or it cannot be proved
// dead: a lease of another user, or one that cannot be opened, counts as
// alive). Owner 0 is always alive. Takes no lock, so it never disturbs a
// concurrent hold or prune.
bool owner_alive(std::uint64_t owner) noexcept;

}  // namespace kura::shm
