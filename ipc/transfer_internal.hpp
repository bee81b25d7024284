// Internal to kura_ipc: regions crossing a connection (docs/design.md
// "Objects that follow names"). A region's bytes go out as kChunk frames,
// written from the mapping where they are, at most kTransferWindow bytes
// ahead of the receiver's kAck; they come in through an shm::Incoming that
// is checked whole before it is published. The dispatcher sends regions to
// remote workers (pulls) and receives their results (pushes); a remote
// worker does the reverse; both use these two classes.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>

#include "kura/core/status.hpp"
#include "kura/shm/incoming.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

// What identifies this host's region directory: the boot, and the
// directory's device and inode. Two processes with the same one see the
// same regions by the same names (Welcome::regions).
std::string region_home();

// The bytes of one region on their way out, for transfer `id` (the task's).
// Not thread-safe: one thread at a time calls it.
class OutgoingTransfer {
 public:
  // `bytes` stays valid while `keep` lives (a Mapped's region).
  OutgoingTransfer(std::uint64_t id, std::span<const std::byte> bytes, std::shared_ptr<const void> keep,
                   bool checksums)
      : id_(id), bytes_(bytes), keep_(std::move(keep)), checksums_(checksums) {}

  // Sends the chunks the window allows. Errors: those of Sender::send.
  Status pump(Sender& sender);
  // The receiver has taken `received` bytes. Errors: Corrupt (more than was
  // sent, or fewer than an earlier ack said).
  Status on_ack(std::uint64_t received);
  bool done() const noexcept { return acked_ == bytes_.size(); }
  std::uint64_t id() const noexcept { return id_; }
  std::uint64_t size() const noexcept { return bytes_.size(); }
  std::uint64_t sent() const noexcept { return sent_; }  // bytes sent so far

 private:
  std::uint64_t id_;
  std::span<const std::byte> bytes_;
  std::shared_ptr<const void> keep_;
  bool checksums_;
  std::uint64_t sent_ = 0;
  std::uint64_t acked_ = 0;
};

// The bytes of one region on their way in. Not thread-safe.
class IncomingTransfer {
 public:
  // Creates the region (for `lease`'s owner, or this process's when null).
  // Errors: those of shm::Incoming::create.
  static Result<IncomingTransfer> start(std::uint64_t id, std::uint64_t size, bool checksums,
                                        const shm::Lease* lease) noexcept;

  // Takes one kChunk payload: it must continue where the last one ended and
  // stay within the size; its checksum is checked when the sender sent
  // them. Returns the bytes received so far (for the kAck). Errors: Corrupt.
  Result<std::uint64_t> on_chunk(std::span<const std::byte> payload) noexcept;
  bool complete() const noexcept { return received_ == region_.size(); }
  std::uint64_t id() const noexcept { return id_; }
  // Checks the region whole and publishes it (shm::Incoming::publish).
  // REQUIRES: complete().
  Result<shm::Shared> publish() && noexcept { return std::move(region_).publish(); }

 private:
  IncomingTransfer(std::uint64_t id, shm::Incoming region, bool checksums)
      : id_(id), region_(std::move(region)), checksums_(checksums) {}
  std::uint64_t id_;
  shm::Incoming region_;
  bool checksums_;
  std::uint64_t received_ = 0;
};

}  // namespace kura::ipc::detail
