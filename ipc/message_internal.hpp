// Internal to kura_ipc: the payloads of frames. Every payload is a kura image
// (a sealed region laid out by core's builder, unhashed) whose root is a list
// with names; decoding goes through core's validated reader and then checks
// each field's kind, dtype and length, so a peer's garbage is Corrupt, never
// a crash. Decoders are pure and fuzzed (tests/fuzz/message_fuzz.cpp).
//
//   hello     protocol: u32[1], features: u64[1], role: strings[1] ("client" |
//             "worker"), pid: i64[1], owner: u64[1], token: u64[1] (the one a
//             managed worker was started with, else 0), functions: strings[n]
//             (a worker's functions; none for a client)
//   welcome   protocol: u32[1], features: u64[1], frame_limit: u32[1], pid: i64[1],
//             queue_cap: u64[1], heartbeat_ms: u32[1], heartbeat_timeout_ms: u32[1],
//             regions: strings[1]
//   refused   message: strings[1]
//   submit    fn: strings[1], owner: u64[1], timeout_ms: u64[1], retries: u32[1],
//             inline_result: lgl[1], wait_for_worker: lgl[1],
//             traceparent: strings[1] ("" when none), kinds: u8[n]
//             (0 inline, 1 name), args: list[n] (the inline value, or
//             strings[1] holding the name)
//   result    outcome: u8[1], message: strings[1], name: strings[1] ("" when
//             inline), value: the inline value, or null, timing: u64[0]
//             or u64[3] (Timing, for a traced task)
//   status    counters: u64[16], worker_id: u64[w], worker_pid: i64[w],
//             worker_state: strings[w], worker_done: u64[w], worker_fns: list[w]
//             of strings
//   pull      name: strings[1], have: u64[1] (the identity of the copy the
//             worker holds, 0 for none)
//   object    message: strings[1] ("" unless refused), size: u64[1],
//             identity: u64[1], unchanged: lgl[1], checksums: lgl[1]
//   push      size: u64[1], checksums: lgl[1]
//   stored    message: strings[1] ("" unless refused), name: strings[1]
// and two that are not images, for bytes in transit:
//   chunk     offset: u64, checksum: u64 (XXH3-64 of the data, or 0), the data
//   ack       received: u64 (bytes of the transfer taken so far)
//
// Version 1's hello and welcome (kura 0.1: role, pid, owner; frame_limit,
// pid, queue_cap) are recognised and decode with protocol 1, so that a peer
// of that version can be refused with a message naming both versions.
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/core/view.hpp"
#include "kura/ipc/frame.hpp"
#include "kura/ipc/task.hpp"

namespace kura::ipc::detail {

// Feature bits of hello and welcome: what a peer of this protocol version
// can do beyond the version's base. Unknown bits are ignored.
enum Feature : std::uint64_t {
  kFeatureHeartbeat = 1u << 0,  // a worker sends kHeartbeat every Welcome::heartbeat_ms
  kFeatureObjects = 1u << 1,    // objects follow names (kPull ... kStored)
  // A worker that announces it wants the dispatcher's kHeartbeat every
  // Welcome::heartbeat_ms, and takes silence for Welcome::heartbeat_timeout_ms
  // as a dropped connection (a worker over TCP: a cut network may never
  // close the socket). In a welcome: the dispatcher sends them.
  kFeaturePing = 1u << 2,
  // A worker that announces it is sent kGoodbye before the dispatcher closes
  // its connection because it stops: how a worker that reconnects tells a
  // stop (exit) from a drop (reconnect). In a welcome: the dispatcher does.
  kFeatureGoodbye = 1u << 3,
  // A worker that takes tasks while one runs (up to the dispatcher's
  // DispatcherOptions::worker_window), runs them in the order sent, answers
  // the cancel of one that has not started with its kDone at once, and
  // gives one that has not started back when sent kRevoke.
  kFeatureQueue = 1u << 4,
};
inline constexpr std::uint64_t kOurFeatures =
    kFeatureHeartbeat | kFeatureObjects | kFeaturePing | kFeatureGoodbye | kFeatureQueue;

// Bounds on a worker's hello: how many functions it may announce, and how
// long each name may be (a submit's too).
inline constexpr std::uint64_t kMaxFunctions = 4096;
inline constexpr std::size_t kMaxFunctionName = 256;
// Distinct function names a dispatcher keeps over its life (announced by
// workers or waited for by tasks): what names alone can make it hold, at
// most kMaxKnownFunctions x kMaxFunctionName bytes and then some.
inline constexpr std::size_t kMaxKnownFunctions = 16384;

struct Hello {
  std::string role;  // "client" or "worker"
  std::int64_t pid = 0;
  std::uint64_t owner = 0;  // the client's owner id (0 for workers)
  std::uint64_t token = 0;  // a managed worker's start token, else 0
  std::vector<std::string> functions;
  std::uint32_t protocol = kProtocolVersion;
  std::uint64_t features = kOurFeatures;
};

struct Welcome {
  std::uint32_t frame_limit = 0;
  std::int64_t pid = 0;
  // The queue's byte cap (0: none). Only with a cap does a submit wait for
  // kQueued: without one every task is admitted at once, and the dispatcher
  // sends no kQueued (except to a try-submit).
  std::uint64_t queue_cap = 0;
  // How often a worker sends kHeartbeat (0 for clients).
  std::uint32_t heartbeat_ms = 0;
  // How long the dispatcher lets a worker be silent before it drops it (0
  // for clients); a worker with kFeaturePing drops a dispatcher that is
  // silent as long.
  std::uint32_t heartbeat_timeout_ms = 0;
  // Which region directory the dispatcher's names live in (region_home(),
  // objects_internal.hpp):
  // a worker whose own differs pulls the bytes behind a name.
  std::string regions;
  std::uint32_t protocol = kProtocolVersion;
  std::uint64_t features = kOurFeatures;
};

// The most submits a client keeps waiting for room (under a byte cap)
// before it waits itself; the dispatcher closes a client that has more.
inline constexpr std::uint32_t kMaxParkedSubmits = 64;

// The environment variable through which a managed worker receives its
// start token (Hello::token): how the dispatcher knows which of the
// processes it started a connection is, without trusting pids.
inline constexpr const char* kWorkerTokenEnv = "KURA_WORKER_TOKEN";

// The text both sides use when protocol versions differ.
std::string version_mismatch(std::string_view who, std::uint32_t theirs);

// A decoded submit: views into the payload, which it keeps alive.
struct Submit {
  std::string fn;
  std::uint64_t owner = 0;
  std::uint64_t timeout_ms = 0;
  std::uint32_t retries = 0;
  bool inline_result = false;
  bool wait_for_worker = false;
  std::string traceparent;  // valid_traceparent(), or empty
  struct ArgView {
    std::string name;               // a name argument (checked with parse_name), or empty
    std::optional<NodeView> value;  // an inline argument
  };
  std::vector<ArgView> args;
};

// When a worker ran a traced task, in nanoseconds since the Unix epoch
// (CLOCK_REALTIME): the function's start and end, and when its result was
// written (a region published, or the inline value encoded).
struct Timing {
  std::uint64_t started_ns = 0;
  std::uint64_t returned_ns = 0;
  std::uint64_t written_ns = 0;
};
// Now, in nanoseconds since the Unix epoch (the clock of Timing and spans).
std::uint64_t wall_ns() noexcept;

// A decoded result (also what a worker's kDone carries).
struct ResultMsg {
  Outcome outcome = Outcome::kError;
  std::string message;
  std::string name;               // the result region, or empty
  std::optional<NodeView> value;  // the inline value (outcome kOk, no name)
  std::optional<Timing> timing;   // a traced task's times on its worker
};

Result<Bytes> encode_hello(const Hello& h) noexcept;
Result<Hello> decode_hello(std::span<const std::byte> payload) noexcept;

Result<Bytes> encode_welcome(const Welcome& w) noexcept;
Result<Welcome> decode_welcome(std::span<const std::byte> payload) noexcept;

Result<Bytes> encode_refused(std::string_view message) noexcept;
Result<std::string> decode_refused(std::span<const std::byte> payload) noexcept;

// Errors: InvalidArgument (an argument with neither a name nor a value, an
// invalid name, retries over kMaxRetries), OutOfMemory.
Result<Bytes> encode_submit(const Call& call, std::uint64_t owner, const TaskOptions& options) noexcept;
// `payload` must stay alive and unchanged while the views live: pass the
// frame's payload in a shared_ptr. Errors: Corrupt (not a submit, or an
// argument name that is not a valid kura name).
Result<Submit> decode_submit(std::shared_ptr<const Bytes> payload) noexcept;

// `value` is the inline value (outcome kOk, empty name) or null.
Result<Bytes> encode_result(Outcome outcome, std::string_view message, std::string_view name,
                            const Value* value, const Timing* timing = nullptr) noexcept;
Result<ResultMsg> decode_result(std::shared_ptr<const Bytes> payload) noexcept;

Result<Bytes> encode_status(const DispatcherStatus& s) noexcept;
Result<DispatcherStatus> decode_status(std::span<const std::byte> payload) noexcept;

// --- objects that follow names (docs/design.md) ---------------------------------

struct Pull {
  std::string name;        // checked with parse_name
  std::uint64_t have = 0;  // the identity of the worker's copy, or 0
};
struct ObjectInfo {
  std::string message;  // why the pull was refused, or empty
  std::uint64_t size = 0;
  std::uint64_t identity = 0;  // what a later pull of the same name may say it has
  bool unchanged = false;      // the worker's copy is current: no chunks follow
  bool checksums = false;      // each chunk carries the XXH3-64 of its data
};
struct PushInfo {
  std::uint64_t size = 0;
  bool checksums = false;
};
struct Stored {
  std::string message;  // why the result was refused, or empty
  std::string name;     // the region written for the client
};
// The largest data a chunk carries (a chunk frame stays under the default
// frame limit), and the bytes a sender keeps unacknowledged.
inline constexpr std::size_t kChunkData = 512 * 1024;
inline constexpr std::size_t kChunkHead = 16;
inline constexpr std::uint64_t kTransferWindow = 8u << 20;

Result<Bytes> encode_pull(const Pull& p) noexcept;
Result<Pull> decode_pull(std::span<const std::byte> payload) noexcept;
Result<Bytes> encode_object(const ObjectInfo& o) noexcept;
Result<ObjectInfo> decode_object(std::span<const std::byte> payload) noexcept;
Result<Bytes> encode_push(const PushInfo& p) noexcept;
Result<PushInfo> decode_push(std::span<const std::byte> payload) noexcept;
Result<Bytes> encode_stored(const Stored& s) noexcept;
Result<Stored> decode_stored(std::span<const std::byte> payload) noexcept;

// The head of a chunk carrying `data` at `offset` (with its checksum when
// `checksum`); the data follows it in the frame, sent from where it is.
Bytes encode_chunk_head(std::uint64_t offset, std::span<const std::byte> data, bool checksum);
struct Chunk {
  std::uint64_t offset = 0;
  std::span<const std::byte> data;  // borrowed from the payload
};
// Reads a chunk and, when `checksum`, checks its data against its checksum.
// Errors: Corrupt (shorter than its head, over kChunkData, a checksum that
// does not match).
Result<Chunk> decode_chunk(std::span<const std::byte> payload, bool checksum) noexcept;
Bytes encode_ack(std::uint64_t received);
// Errors: Corrupt (not 8 bytes).
Result<std::uint64_t> decode_ack(std::span<const std::byte> payload) noexcept;

// A tree that reads `v`'s array and bytes payloads from where they are
// instead of copying them (for building an image of a value the caller
// keeps alive meanwhile).
Value borrow_value(const Value& v);

}  // namespace kura::ipc::detail
