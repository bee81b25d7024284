// A region arriving as bytes: the image of a region written elsewhere (on
// another host, docs/design.md "Objects that follow names") copied in piece
// by piece, checked whole, and published under a fresh name of this host.
#pragma once

#include <cstdint>
#include <memory>
#include <span>

#include "kura/core/status.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"

namespace kura::shm {

// Like Pending, a temporary file of the region's exact size, space reserved
// up front, locked by its writer (prune removes it if the writer dies) and
// removed if dropped unpublished. Move-only; not for use across fork().
class Incoming {
 public:
  // Creates the temporary region of `size` bytes under this process's owner.
  // Errors: InvalidArgument (under 64 bytes, or too large), NoSpace,
  // Permission, Io, OutOfMemory.
  static Result<Incoming> create(std::uint64_t size) noexcept;
  // The same, written for the owner of `lease` (a result for a client): the
  // published handle never unlinks the region. Errors: as above, and
  // NotFound when the owner has exited.
  static Result<Incoming> create(const Lease& lease, std::uint64_t size) noexcept;

  Incoming(Incoming&& other) noexcept;
  Incoming& operator=(Incoming&& other) noexcept;
  Incoming(const Incoming&) = delete;
  Incoming& operator=(const Incoming&) = delete;
  ~Incoming();

  std::uint64_t size() const noexcept;
  // Copies `bytes` to `offset` of the image. Errors: OutOfRange (past the end).
  Status write(std::uint64_t offset, std::span<const std::byte> bytes) noexcept;

  // Checks the whole image as every reader does (FORMAT.md section 5: the
  // region header, every node and string, the tree rule) and, when the image
  // is hashed, every node's hash; then makes it read-only and links it to a
  // fresh name. Reads every byte once: O(size). Errors: Corrupt (nothing is
  // published), and those of Pending::publish. The temporary file is
  // removed on every error.
  Result<Shared> publish() && noexcept;

 private:
  friend struct IncomingAccess;
  struct State;
  explicit Incoming(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

}  // namespace kura::shm
