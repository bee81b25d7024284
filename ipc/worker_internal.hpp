// Internal to kura_ipc: the parts of a worker process, one idea per file:
//
//   worker.cpp        the loop: the connection to the dispatcher, heartbeats,
//                     cancel frames, and the executor thread functions run on
//   task_context.cpp  the process's function registry, cancellation marks,
//                     and TaskContext (a function's view of its task)
//   task_runner.cpp   one task: decode it, map its arguments, call the
//                     function, write its result inline or as a region
//   remote_objects.cpp  a worker on another host: the bytes behind its
//                     tasks' names pulled from the dispatcher and cached,
//                     its results pushed back
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

struct TaskContext::Internals {
  std::optional<shm::Lease>* lease;  // held on first need
  // A worker on another host writes results under its own owner (they
  // travel to the client's host after): no lease of the client's.
  bool own_owner = false;

  // `origins`: the task's names; `names`: what maps them here (TaskContext::arg_name).
  static TaskContext make(std::vector<NodeView> args, std::vector<std::string> names,
                          std::vector<std::string> origins, std::uint64_t owner, bool want_inline,
                          const Internals* in);
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

// The objects of a worker on another host, one that cannot map the
// dispatcher's names (docs/design.md "Objects that follow names"). The
// executor asks for the value at a name of its task: from the cache when
// the dispatcher says the copy there is current, else pulled in chunks into
// a region of this worker's own, checked, and cached (least recently used
// out past the byte bound; a copy a running task maps stays mapped). It
// pushes a result region back the same way. The loop hands it the frames of
// these transfers. Thread-safe.
class RemoteObjects {
 public:
  explicit RemoteObjects(std::uint64_t cache_bytes) : cache_bytes_(cache_bytes) {}

  // Loop thread: connected, through `sender`.
  void attach(std::shared_ptr<Sender> sender);
  // Loop thread: a kObject, kChunk, kAck or kStored frame. Errors: Corrupt
  // (a frame this side did not ask for; the loop closes the connection).
  Status on_frame(Frame&& f);
  // Loop thread: a task was cancelled, or the connection is gone: a waiting
  // executor looks again.
  void wake();
  void lost();

  // Executor: the value at `name` for task `task`, mapped from this host's
  // copy, whose name goes to `*local`. Errors: NotFound and the like (the
  // dispatcher's answer), Corrupt (damaged on its way), Cancelled as Io,
  // those of shm::Incoming.
  Result<shm::Mapped> fetch(std::uint64_t task, const std::string& name, std::string* local);
  // Executor: sends `region` back for task `task`'s client; returns the
  // name the dispatcher stored it under. Errors: Io (cancelled, the
  // connection gone), those the dispatcher answered.
  Result<std::string> push(std::uint64_t task, const shm::Mapped& region);
  // Bytes pulled since the worker started (for logs and tests).
  std::uint64_t pulled() const;

 private:
  struct Entry {
    std::uint64_t identity = 0;
    std::optional<shm::Shared> copy;
    std::uint64_t last_use = 0;
  };
  // Waits for `ready` under `lock`; false when the task was cancelled or the
  // connection is gone first.
  template <class Pred>
  bool wait(std::unique_lock<std::mutex>& lock, std::uint64_t task, Pred ready);
  // The connection's sender, copied under the lock. Errors: Io (not
  // connected).
  Result<std::shared_ptr<Sender>> connected() const;
  static Status send(Sender& sender, FrameType type, std::uint64_t id, Result<Bytes> payload);
  void remember(const std::string& name, std::uint64_t identity, shm::Shared copy);

  mutable std::mutex mu_;
  std::condition_variable cv_;
  std::shared_ptr<Sender> sender_;
  bool lost_ = false;
  // The pull in progress: its task, the dispatcher's answer, chunks to take.
  std::uint64_t pull_task_ = 0;
  std::optional<ObjectInfo> info_;
  std::deque<Frame> chunks_;
  // The push in progress: its task, bytes acknowledged, the answer.
  std::uint64_t push_task_ = 0;
  std::uint64_t acked_ = 0;
  std::optional<Stored> stored_;
  // The cache, by the dispatcher's name.
  std::map<std::string, Entry> cache_;
  std::uint64_t cache_bytes_;
  std::uint64_t used_ = 0;
  std::uint64_t clock_ = 0;
  std::uint64_t pulled_ = 0;
};

// Runs tasks on the thread that calls run(): the executor's. Not thread-safe.
class TaskRunner {
 public:
  explicit TaskRunner(std::uint64_t inline_limit) : inline_limit_(inline_limit) {}
  // A worker on another host: names are pulled through `remote` (null: they
  // are mapped here).
  void set_remote(RemoteObjects* remote) noexcept { remote_ = remote; }
  // The frame limit the dispatcher set (results and errors stay under it).
  void set_frame_limit(std::uint32_t limit) noexcept { frame_limit_ = limit; }
  // Runs one task (or a set-up call) and returns its result image for the
  // dispatcher's kDone (null only when out of memory).
  std::shared_ptr<const Bytes> run(std::uint64_t id, const std::shared_ptr<const Bytes>& payload,
                                   bool setup) noexcept;
  // The image of an error result; its message cut to fit the frame limit.
  std::shared_ptr<const Bytes> error_result(Outcome o, const std::string& message) const;

 private:
  std::shared_ptr<const Bytes> make_result(const std::string& name, const Value* v);

  // The result `region` (a name of this host) as the client will see it: a
  // remote worker pushes it and gets the dispatcher's name for it.
  Result<std::string> deliver(std::uint64_t id, shm::Shared region);

  std::uint64_t inline_limit_;
  std::uint32_t frame_limit_ = kDefaultFrameLimit;
  RemoteObjects* remote_ = nullptr;
  bool timed_ = false;  // the task running is traced: its times are kept
  Timing timing_;
};

}  // namespace detail
}  // namespace kura::ipc
