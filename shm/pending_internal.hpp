// Internal to kura_shm: a region being written, shared by Pending
// (region.cpp: a value laid out by core's builder) and Incoming
// (incoming.cpp: an image arriving as bytes). Both write a temporary file of
// the region's exact size, locked by its writer, and link it to its name
// once it is complete (fs_internal.hpp says how the files are named and
// locked).
#pragma once

#include <sys/types.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "fs_internal.hpp"
#include "kura/core/builder.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"

namespace kura::shm {

struct Pending::State {
  const Value* value = nullptr;  // null for an Incoming image
  ShareOptions options;
  Layout layout;
  std::optional<Writer> writer;  // borrows `layout` and `mapping`
  detail::Mapping mapping;       // writable, fork-private, until publish
  detail::OwnedFd fd;            // read-write, fork-private, holds the writer's lock
                                 // on the temporary until it is linked or removed
  detail::OwnedFd lease;         // a copy of the Lease written for, if any
  std::uint64_t owner = 0;
  std::uint64_t counter = 0;
  std::string temp_path;  // empty once published
  std::uint64_t size = 0;
  pid_t pid = 0;

  bool for_other() const { return static_cast<bool>(lease); }
  // The owner written for still lives and its lease is still in place.
  bool owner_alive() const {
    return !for_other() || (detail::locked_by_other(lease.get(), detail::kAliveByte) &&
                            detail::same_file(lease.get(), detail::lease_path(owner)));
  }

  ~State() {
    writer.reset();
    mapping.reset();
    // The temporary file is the creating process's to remove, never a
    // forked child's; it goes before the descriptor holding its lock.
    if (!temp_path.empty() && pid == ::getpid()) ::unlink(temp_path.c_str());
    fd.reset();
  }
};

struct PendingAccess {
  using State = Pending::State;
  // The body of both Pending::create overloads: `lease` is null for the
  // calling process's own owner.
  static Result<std::unique_ptr<State>> create(const Lease* lease, const Value& value,
                                               const ShareOptions& options);
  // Creates the temporary file of `size` bytes for `lease`'s owner (null:
  // this process's), locked, with its space reserved and mapped writable.
  static Result<std::unique_ptr<State>> create_file(const Lease* lease, std::uint64_t size,
                                                    const ShareOptions& options);
  static Result<bool> reserve_advised(State& state, std::uint64_t size);
  // Writes the headers and copied payloads into the reserved, mapped file.
  static Result<std::unique_ptr<State>> finish_create(std::unique_ptr<State> state);
  // Drops the writable mapping, makes the complete file read-only and links
  // it to its final name (Pending::publish after sealing). On error the
  // temporary file is removed.
  static Result<Shared> link(std::unique_ptr<State> state);
  static Pending make(std::unique_ptr<State> state) noexcept { return Pending(std::move(state)); }
};

// The NoSpace of a region of `asked` bytes, with the space free.
Status no_space(std::uint64_t asked);

}  // namespace kura::shm
