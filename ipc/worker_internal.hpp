// Internal to kura_ipc: the parts of a worker process, one idea per file:
//
//   worker.cpp        the loop: the connection to the dispatcher, heartbeats,
//                     cancel frames, and the executor thread functions run on
//   task_context.cpp  the process's function registry, cancellation marks,
//                     and TaskContext (a function's view of its task)
//   task_runner.cpp   one task: decode it, map its arguments, call the
//                     function, write its result inline or as a region
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/owner.hpp"
#include "message_internal.hpp"

namespace kura::ipc {

struct TaskContext::Internals {
  std::optional<shm::Lease>* lease;  // held on first need

  static TaskContext make(std::vector<NodeView> args, std::vector<std::string> names, std::uint64_t owner,
                          bool want_inline, const Internals* in);
  // The client's lease, held on the first call. Errors: as shm::Lease::hold.
  static Result<const shm::Lease*> lease_of(TaskContext& c);
};

namespace detail {

// The process's functions (Worker::add, plugins, the built-ins). Never
// destroyed: a worker may run until _exit. Thread-safe.
class FunctionRegistry final : public Registry {
 public:
  void add(std::string name, Function fn) override;
  // A copy of the function called `name`, or an empty function.
  Function find(const std::string& name);
  // The names, comma separated (for an error message).
  std::string names();
  // The names, sorted (what a worker announces in its hello).
  std::vector<std::string> list();

 private:
  std::mutex mu_;
  std::map<std::string, Function> fns_;
};
FunctionRegistry& functions();

// Cancellation of the running task, process-wide (one worker loop per
// process at a time). The loop marks a cancelled task and wakes a
// TaskContext sleeping in it; the executor brackets each task.
//
// Installs the handler of kCancelSignal (its value a task id) and creates the
// wake-up descriptor. Errors: Io.
Status install_cancel_handler() noexcept;
// Marks task `id` cancelled and wakes its sleep. Async-signal-safe.
void mark_cancelled(std::uint64_t id) noexcept;
// True when task `id` was cancelled before it started.
bool cancelled_before_start(std::uint64_t id) noexcept;
// Task `id` starts (0: a set-up call, never cancelled) and ends.
void begin_task(std::uint64_t id) noexcept;
void end_task() noexcept;
// True when task `id` is the one running now.
bool running(std::uint64_t id) noexcept;

// Runs tasks on the thread that calls run(): the executor's. Not thread-safe.
class TaskRunner {
 public:
  explicit TaskRunner(std::uint64_t inline_limit) : inline_limit_(inline_limit) {}
  // The frame limit the dispatcher set (results and errors stay under it).
  void set_frame_limit(std::uint32_t limit) noexcept { frame_limit_ = limit; }
  // Runs one task (or a set-up call) and returns its result image for the
  // dispatcher's kDone (null only when out of memory).
  std::shared_ptr<const Bytes> run(const std::shared_ptr<const Bytes>& payload, bool setup) noexcept;
  // The image of an error result; its message cut to fit the frame limit.
  std::shared_ptr<const Bytes> error_result(Outcome o, const std::string& message) const;

 private:
  std::shared_ptr<const Bytes> make_result(const std::string& name, const Value* v);

  std::uint64_t inline_limit_;
  std::uint32_t frame_limit_ = kDefaultFrameLimit;
  bool timed_ = false;  // the task running is traced: its times are kept
  Timing timing_;
};

}  // namespace detail
}  // namespace kura::ipc
