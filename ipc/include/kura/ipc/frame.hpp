// Frames: how kura's processes talk over a stream socket (DESIGN.md section
// 4). A frame is a fixed 24-byte little-endian header and a bounded payload;
// every value-like payload is a kura image (FORMAT.md), read with core's
// validated reader.
//
//   off  size  field
//   0    4     magic "KIPC"
//   4    1     framing version (kFrameVersion, 1)
//   5    1     type (FrameType)
//   6    2     flags (FrameFlags)
//   8    8     id: a task id, or 0
//   16   4     payload length in bytes
//   20   4     reserved, 0
//
// Decoding is pure (no I/O) and never trusts its input: a bad magic, an
// unknown version or type, unknown flags, a reserved field that is not 0 or a
// length over the receiver's limit is Corrupt, and the receiver closes that
// connection.
#pragma once

#include <cstddef>
#include <cstdint>
#include <optional>
#include <span>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"

namespace kura::ipc {

inline constexpr std::size_t kFrameHeaderSize = 24;
// The version of the frame header above. It changes only if the header does.
inline constexpr std::uint8_t kFrameVersion = 1;
// The version of the protocol spoken over frames (the messages, their fields
// and what they mean): sent in hello and welcome, and a peer of another
// version is refused with a message that names both. Version 1 was kura 0.1;
// version 3 added objects that follow names (the welcome names its region
// directory).
inline constexpr std::uint32_t kProtocolVersion = 3;
// The default bound on one frame's payload.
inline constexpr std::uint32_t kDefaultFrameLimit = 1u << 20;

enum class FrameType : std::uint8_t {
  kHello = 1,         // peer -> dispatcher: who it is (client or worker)
  kWelcome = 2,       // dispatcher -> peer: accepted, and the frame limit
  kSubmit = 3,        // client -> dispatcher: a task (id chosen by the client)
  kQueued = 4,        // dispatcher -> client: the task is in the queue
  kFull = 5,          // dispatcher -> client: try-submit refused, no room
  kCancel = 6,        // client -> dispatcher, dispatcher -> worker: cancel task `id`
  kResult = 7,        // dispatcher -> client: the one result of task `id`
  kTask = 8,          // dispatcher -> worker: run task `id`
  kDone = 9,          // worker -> dispatcher: task `id` finished
  kStatusQuery = 10,  // client -> dispatcher
  kStatus = 11,       // dispatcher -> client: counters and workers
  kEverywhere = 12,   // client -> dispatcher: a set-up call for every worker, now and later
  kHeartbeat = 13,    // worker -> dispatcher: its loop is alive (sent every Welcome::heartbeat_ms);
                      // dispatcher -> worker too, to a worker that asked (hello feature kFeaturePing)
  kRefused = 14,      // dispatcher -> peer: why it is refused (a text), then the connection closes
  // Objects that follow names to a worker on another host (docs/design.md
  // "Objects that follow names"); `id` is the task's.
  kPull = 15,     // worker -> dispatcher: send me the value at a name of task `id`
  kObject = 16,   // dispatcher -> worker: the answer to kPull (size, or unchanged, or an error)
  kChunk = 17,    // either way: bytes of the object or result in transit
  kAck = 18,      // either way: bytes of the transfer received so far (flow control)
  kPush = 19,     // worker -> dispatcher: the result region of task `id` follows
  kStored = 20,   // dispatcher -> worker: the pushed result's name for the client, or an error
  kGoodbye = 21,  // dispatcher -> worker: the dispatcher is stopping; exit, do not reconnect
                  // (sent to a worker that announced kFeatureGoodbye), then the connection closes
  kRevoke = 22,   // dispatcher -> worker: give task `id` back if it has not started (a
                  // worker with kFeatureQueue answers kDone with kFlagRevoked); one that has
                  // started is not affected
};
inline constexpr std::uint8_t kMaxFrameType = 22;

enum FrameFlags : std::uint16_t {
  kFlagTry = 1u << 0,      // kSubmit: answer kFull at once instead of waiting for room
  kFlagSetup = 1u << 1,    // kTask, kDone: a set-up call from everywhere()
  kFlagRevoked = 1u << 2,  // kDone: the task was given back unstarted (kRevoke); no payload
};
inline constexpr std::uint16_t kKnownFrameFlags = kFlagTry | kFlagSetup | kFlagRevoked;

struct FrameHeader {
  FrameType type = FrameType::kHello;
  std::uint16_t flags = 0;
  std::uint64_t id = 0;
  std::uint32_t length = 0;
};

// Writes `h` as the 24 header bytes of a frame.
void encode_frame_header(const FrameHeader& h, std::span<std::byte, kFrameHeaderSize> out) noexcept;

// Reads and checks 24 header bytes. Errors: Corrupt (bad magic, version,
// type, flags, reserved field), OutOfRange (a payload longer than `limit`).
Result<FrameHeader> decode_frame_header(std::span<const std::byte, kFrameHeaderSize> in,
                                        std::uint32_t limit) noexcept;

// A frame received whole: its header and a 64-byte-aligned copy of its
// payload (so Region::open reads it in place).
struct Frame {
  FrameHeader header;
  Bytes payload;
};

// Cuts a byte stream into frames. Feed it what the socket delivered, then
// take frames until next() gives nothing. Holds at most one partial frame.
// Pure and single-threaded.
class FrameReader {
 public:
  explicit FrameReader(std::uint32_t limit = kDefaultFrameLimit) : limit_(limit) {}

  // Takes bytes from the stream. Errors: OutOfMemory.
  Status feed(std::span<const std::byte> bytes) noexcept;
  // The next complete frame, or nullopt when more bytes are needed. Errors:
  // as decode_frame_header; after an error the stream is unusable.
  Result<std::optional<Frame>> next() noexcept;
  // Bytes received but not yet returned as frames.
  std::size_t buffered() const noexcept {
    return buffer_.size() - start_ + (big_ ? kFrameHeaderSize + big_have_ : 0);
  }
  std::uint32_t limit() const noexcept { return limit_; }
  void set_limit(std::uint32_t limit) noexcept { limit_ = limit; }

 private:
  // A frame whose payload is at least this long is read into its own
  // payload as it arrives (one copy of its bytes, not two).
  static constexpr std::uint32_t kDirect = 64 * 1024;

  std::uint32_t limit_;
  Bytes buffer_;
  std::size_t start_ = 0;
  std::optional<Frame> big_;  // a large frame being filled, ahead of buffer_
  std::size_t big_have_ = 0;  // its payload bytes so far
};

}  // namespace kura::ipc
