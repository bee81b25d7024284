// Owners and leases (DESIGN.md section 3).
//
// Every region belongs to an owner, the first hex field of its name. An
// owner is backed by a lease: the file /dev/shm/kura_<owner>.lock, held by
// the owning process with a shared flock. The kernel drops the lock however
// the process dies, so a region whose lease nobody holds is an orphan that
// prune() may remove. Owner 0 is "kept": such regions live until removed by
// name.
#pragma once

#include <cstdint>

#include "kura/core/status.hpp"

namespace kura::shm {

inline constexpr std::uint64_t kKeptOwner = 0;

// The calling process's owner id: random, non-zero, created with its lease on
// first use and held until the process exits. A forked child that calls it
// gets an owner of its own. Errors: Io, Permission, NoSpace. Thread-safe.
Result<std::uint64_t> process_owner() noexcept;

// A lease held on another process's owner id, for writing results on its
// behalf (DESIGN.md section 3: a worker holds the client's lease while it
// writes for it; it never creates a lease for someone else). Move-only; the
// lock is dropped on destruction.
class Lease {
 public:
  // Takes a shared lock on the existing lease of `owner`. Errors: NotFound
  // (no lease: the owner is gone), Permission (another user's lease or a
  // symlink), Io.
  static Result<Lease> hold(std::uint64_t owner) noexcept;

  Lease(Lease&& other) noexcept;
  Lease& operator=(Lease&& other) noexcept;
  Lease(const Lease&) = delete;
  Lease& operator=(const Lease&) = delete;
  ~Lease();

  std::uint64_t owner() const noexcept { return owner_; }

 private:
  Lease(std::uint64_t owner, int fd) : owner_(owner), fd_(fd) {}
  std::uint64_t owner_ = 0;
  int fd_ = -1;
};

// True when some process holds the lease of `owner` (or it cannot be proved
// dead: a lease of another user, or one that cannot be opened, counts as
// alive). Owner 0 is always alive.
bool owner_alive(std::uint64_t owner) noexcept;

}  // namespace kura::shm
