// Tasks: what a client asks of a worker, and the one result each task ends in
// (DESIGN.md section 4).
#pragma once

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/value.hpp"
#include "kura/core/view.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

namespace detail {
struct TaskResultAccess;
}

// One argument of a task: the name of a value in shared memory (zero-copy:
// only the name travels, and the worker maps it), or a small value copied
// inline into the task's frame.
struct Arg {
  std::string name;            // a kura name such as /kura_1f_2a[3], or empty
  std::optional<Value> value;  // the inline value, when `name` is empty

  static Arg ref(std::string kura_name) { return Arg{std::move(kura_name), std::nullopt}; }
  static Arg copy(Value v) { return Arg{{}, std::move(v)}; }
};

// A function of the workers' registry and its arguments.
struct Call {
  std::string fn;
  std::vector<Arg> args;
};

struct TaskOptions {
  // Resolve as kTimeout when the task has not finished this long after it was
  // submitted (queued time included); 0: no timeout.
  std::chrono::milliseconds timeout{0};
  // How many times a task whose worker died (or was dropped for missing its
  // heartbeats) is queued again, at the front of the queue, before it
  // resolves as kWorkerLost. At most kMaxRetries: a task that kills every
  // worker it reaches must not be able to kill them without end.
  unsigned retries = 0;
  // When no worker has announced the task's function since the dispatcher
  // started (and some worker has connected): false (the default) ends the
  // task at once as kError ("unknown function"); true keeps it queued until
  // a worker that has the function connects (its timeout still applies, and
  // status counts it in `unroutable`).
  bool wait_for_worker = false;
  // Send the result back inline, copied through the sockets, however large
  // (up to the frame limit), instead of as a region when it is large: for
  // measuring what copying costs.
  bool inline_result = false;
  // A W3C trace context ("00-<32 hex trace id>-<16 hex parent span id>-<2
  // hex flags>"), or empty. A dispatcher started with a trace file records
  // the task's spans there as children of that parent (docs/design.md,
  // section 5); without one it is carried and ignored. A malformed one makes
  // submit InvalidArgument.
  std::string traceparent = {};
};

// Whether `s` is a traceparent TaskOptions accepts: version 00, lowercase
// hex, trace and span ids not all zero.
bool valid_traceparent(std::string_view s) noexcept;

// The most TaskOptions::retries may be; a submit asking for more is
// InvalidArgument.
inline constexpr unsigned kMaxRetries = 10;

// How a task ended. Every submitted task ends in exactly one of these.
enum class Outcome : std::uint8_t {
  kOk = 0,            // the function returned a value
  kError = 1,         // the function returned an error, or could not run
  kTimeout = 2,       // TaskOptions::timeout passed
  kCancelled = 3,     // Client::cancel
  kWorkerLost = 4,    // the worker died running it, and no retry was left
  kDisconnected = 5,  // the connection to the dispatcher was lost first
};
inline constexpr std::uint8_t kMaxOutcome = 5;

// "ok", "error", "timeout", "cancelled", "worker-lost", "disconnected".
std::string_view outcome_name(Outcome o) noexcept;

// The result of a task. For kOk it holds the value: in a region that this
// client owns (it came by name, and is unlinked when the TaskResult goes,
// unless taken with take_region()), or in a small inline image. Move-only.
class TaskResult {
 public:
  TaskResult() = default;
  TaskResult(Outcome outcome, std::string message) : outcome_(outcome), message_(std::move(message)) {}

  Outcome outcome() const noexcept { return outcome_; }
  bool ok() const noexcept { return outcome_ == Outcome::kOk; }
  // What went wrong (empty for kOk).
  const std::string& message() const noexcept { return message_; }
  // The value; it keeps its memory mapped while any copy of the view lives.
  // REQUIRES: ok().
  const NodeView& value() const noexcept;
  // The region the value came in, "" when it came inline.
  const std::string& name() const noexcept;
  // The size of that region in bytes, 0 when the value came inline.
  std::uint64_t region_size() const noexcept { return region_ ? region_->size() : 0; }
  // Takes over the result region (empty when the value came inline): the
  // returned handle unlinks it on release.
  std::optional<shm::Shared> take_region() noexcept;
  // "error: division by zero", "ok", ...
  std::string describe() const;

 private:
  friend struct detail::TaskResultAccess;
  Outcome outcome_ = Outcome::kError;
  std::string message_;
  std::optional<NodeView> value_;
  std::optional<shm::Shared> region_;
};

// One row of DispatcherStatus::workers.
struct WorkerStatus {
  std::uint64_t id = 0;  // the dispatcher's id for the connection (unique while it runs)
  std::int64_t pid = 0;  // as the worker said in its hello (0 when it gave none)
  std::string state;     // "idle", "busy", "setup" (running everywhere() calls)
  std::uint64_t tasks_done = 0;
  std::vector<std::string> functions;  // the functions it has, sorted
};

// What Client::status() reports (DESIGN.md section 4). `completed` counts
// the tasks this dispatcher has ended with a result since it started,
// whatever the outcome, those answered at submit included (an unknown
// function, a payload over the cap); a try_submit() answered full is no
// task, and the tasks of a client that left before they ended are
// forgotten, not counted. A status asked after a client took a result
// counts that result's task.
struct DispatcherStatus {
  std::uint64_t connections = 0;  // clients and workers connected now
  std::uint64_t cumulative = 0;   // workers that ever connected
  std::uint64_t awaiting = 0;     // tasks queued or waiting for room
  std::uint64_t executing = 0;    // tasks running on a worker
  // Tasks sent to a worker to wait there behind the one it runs
  // (DispatcherOptions::worker_window above 1).
  std::uint64_t waiting_on_workers = 0;
  std::uint64_t completed = 0;        // tasks ended with a result, whatever the outcome (above)
  std::uint64_t queued_bytes = 0;     // payload bytes in the queue now
  std::uint64_t queued_peak = 0;      // the most there ever were
  std::uint64_t queued_cap = 0;       // the cap (0: none)
  std::uint64_t bytes_in = 0;         // bytes the dispatcher read from all its sockets
  std::uint64_t bytes_out = 0;        // bytes it wrote to them
  std::uint64_t unroutable = 0;       // queued tasks that wait for a worker with their function
  std::uint64_t workers_dropped = 0;  // workers dropped: heartbeats missed, or a stopped task ran on
  std::uint64_t workers_started = 0;  // managed worker processes started
  // Objects that follow names to workers on other hosts: pulls answered (a
  // worker's copy still current counts, sending nothing), bytes of regions
  // sent to them, and bytes of result regions they sent back.
  std::uint64_t pulls = 0;
  std::uint64_t pulled_bytes = 0;
  std::uint64_t pushed_bytes = 0;
  std::vector<WorkerStatus> workers;
};

}  // namespace kura::ipc
