// Internal to kura_ipc: the dispatcher's record of traced tasks, written as
// OpenTelemetry spans in OTLP/JSON, one line per task (a whole
// ExportTraceServiceRequest), the form the OpenTelemetry Collector's file
// receiver reads. Only tasks that carry a traceparent, and only when the
// dispatcher was given a trace file: nothing is measured for any other.
//
// The spans of one task, each a child of the one above it:
//
//   kura.task          submit .. result sent       (child of the caller's span)
//     kura.queued      submit .. sent to a worker  (or .. the end, if never)
//     kura.run         sent to worker N .. its answer
//       kura.function       the function, on the worker
//       kura.result.write   writing its result, on the worker
#pragma once

#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <string>

#include "kura/core/status.hpp"
#include "kura/ipc/task.hpp"
#include "message_internal.hpp"

namespace kura::ipc::detail {

// What the dispatcher notes of one traced task. Times in nanoseconds since
// the Unix epoch (wall_ns()).
struct TaskTrace {
  std::string trace_id;   // 32 hex digits, from the traceparent
  std::string parent_id;  // 16 hex digits: the caller's span
  std::string fn;
  std::uint64_t task = 0;  // the client's id of the task
  std::uint64_t submitted_ns = 0;
  std::uint64_t started_ns = 0;  // last sent to a worker; 0: never
  std::uint64_t ended_ns = 0;
  std::uint64_t worker = 0;  // the dispatcher's id of that worker
  std::int64_t worker_pid = 0;
  unsigned attempts = 0;  // times sent to a worker (retries after a lost worker)
  std::uint64_t payload_bytes = 0;
  std::uint64_t result_bytes = 0;
  std::string result_kind = "none";  // "inline", "region" or "none"
  Outcome outcome = Outcome::kOk;
  std::string message;
  std::optional<Timing> timing;  // as the worker reported it
};

// Starts a trace of the task submitted with `traceparent` (valid).
std::unique_ptr<TaskTrace> start_trace(const std::string& traceparent, const std::string& fn,
                                       std::uint64_t task, std::uint64_t payload_bytes);

class Tracer {
 public:
  // Appends to `path` (created 0600 if missing). Errors: Io.
  static Result<std::unique_ptr<Tracer>> open(const std::string& path) noexcept;
  ~Tracer();
  Tracer(const Tracer&) = delete;
  Tracer& operator=(const Tracer&) = delete;

  // Writes the spans of a task that ended (ended_ns set), as one line.
  // Returns false when the line could not be written (the file is full).
  bool write(const TaskTrace& t);

 private:
  explicit Tracer(std::FILE* f, std::uint64_t seed) : file_(f), state_(seed) {}
  std::string span_id();

  std::FILE* file_;
  std::uint64_t state_;  // for span ids
};

}  // namespace kura::ipc::detail
