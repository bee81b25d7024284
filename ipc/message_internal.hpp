// Internal to kura_ipc: the payloads of frames. Every payload is a kura image
// (a sealed region laid out by core's builder, unhashed) whose root is a list
// with names; decoding goes through core's validated reader and then checks
// each field's kind, dtype and length, so a peer's garbage is Corrupt, never
// a crash. Decoders are pure and fuzzed (tests/fuzz/message_fuzz.cpp).
//
//   hello     role: strings[1] ("client" | "worker"), pid: i64[1], owner: u64[1]
//   welcome   frame_limit: u32[1], pid: i64[1], queue_cap: u64[1]
//   submit    fn: strings[1], owner: u64[1], timeout_ms: u64[1], retries: u32[1],
//             inline_result: lgl[1], kinds: u8[n] (0 inline, 1 name),
//             args: list[n] (the inline value, or strings[1] holding the name)
//   result    outcome: u8[1], message: strings[1], name: strings[1] ("" when
//             inline), value: the inline value, or null
//   status    counters: u64[10], worker_pid: i64[w], worker_state: strings[w],
//             worker_done: u64[w]
#pragma once

#include <cstdint>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/core/view.hpp"
#include "kura/ipc/task.hpp"

namespace kura::ipc::detail {

struct Hello {
  std::string role;  // "client" or "worker"
  std::int64_t pid = 0;
  std::uint64_t owner = 0;  // the client's owner id (0 for workers)
};

struct Welcome {
  std::uint32_t frame_limit = 0;
  std::int64_t pid = 0;
  // The queue's byte cap (0: none). Only with a cap does a submit wait for
  // kQueued: without one every task is admitted at once, and the dispatcher
  // sends no kQueued (except to a try-submit).
  std::uint64_t queue_cap = 0;
};

// A decoded submit: views into the payload, which it keeps alive.
struct Submit {
  std::string fn;
  std::uint64_t owner = 0;
  std::uint64_t timeout_ms = 0;
  std::uint32_t retries = 0;
  bool inline_result = false;
  struct ArgView {
    std::string name;               // a name argument (checked with parse_name), or empty
    std::optional<NodeView> value;  // an inline argument
  };
  std::vector<ArgView> args;
};

// A decoded result (also what a worker's kDone carries).
struct ResultMsg {
  Outcome outcome = Outcome::kError;
  std::string message;
  std::string name;               // the result region, or empty
  std::optional<NodeView> value;  // the inline value (outcome kOk, no name)
};

Result<Bytes> encode_hello(const Hello& h) noexcept;
Result<Hello> decode_hello(std::span<const std::byte> payload) noexcept;

Result<Bytes> encode_welcome(const Welcome& w) noexcept;
Result<Welcome> decode_welcome(std::span<const std::byte> payload) noexcept;

// Errors: InvalidArgument (an argument with neither a name nor a value, or
// an invalid name), OutOfMemory.
Result<Bytes> encode_submit(const Call& call, std::uint64_t owner, const TaskOptions& options) noexcept;
// `payload` must stay alive and unchanged while the views live: pass the
// frame's payload in a shared_ptr. Errors: Corrupt (not a submit, or an
// argument name that is not a valid kura name).
Result<Submit> decode_submit(std::shared_ptr<const Bytes> payload) noexcept;

// `value` is the inline value (outcome kOk, empty name) or null.
Result<Bytes> encode_result(Outcome outcome, std::string_view message, std::string_view name,
                            const Value* value) noexcept;
Result<ResultMsg> decode_result(std::shared_ptr<const Bytes> payload) noexcept;

Result<Bytes> encode_status(const DispatcherStatus& s) noexcept;
Result<DispatcherStatus> decode_status(std::span<const std::byte> payload) noexcept;

// A tree that reads `v`'s array and bytes payloads from where they are
// instead of copying them (for building an image of a value the caller
// keeps alive meanwhile).
Value borrow_value(const Value& v);

// Blocking submits a client may have waiting for room at once (queue_cap > 0).
inline constexpr std::uint32_t kMaxParkedSubmits = 64;

}  // namespace kura::ipc::detail
