// The client: submits tasks to a dispatcher and collects their results
// (DESIGN.md section 4).
//
// Thread-safe: any thread may submit, wait and cancel. The connection is
// served by a thread of the client's own, so results arrive while nobody
// waits. A program with its own event loop uses the completion callback or
// polls completion_fd(). Result regions belong to this process's owner (the
// workers write them holding its lease) and are unlinked when their
// TaskResult goes, or at exit however the process ends. A forked child must
// not use its parent's Client (its thread does not exist there), but may
// destroy it, which then does nothing; it connects a Client of its own.
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kura/core/status.hpp"
#include "kura/ipc/task.hpp"

namespace kura::ipc {

using TaskId = std::uint64_t;

// What map() returns: one result per input, in input order, and the index of
// the first input whose task did not end ok (the tasks after it were
// cancelled), if any.
struct MapResult {
  std::vector<TaskResult> results;
  std::optional<std::size_t> failed;
};

class Client {
 public:
  // Connects to the dispatcher at `socket_path` (empty: default_socket_path()).
  // Errors: NotFound (no dispatcher listens there), Permission, Io,
  // OutOfMemory.
  static Result<std::unique_ptr<Client>> connect(const std::string& socket_path = "") noexcept;

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Disconnects; tasks still running are cancelled by the dispatcher.
  ~Client();

  // Submits a task and returns its id once it is in the dispatcher's queue,
  // waiting for room when the queue is at its cap. Errors: InvalidArgument (a
  // bad argument or name; a task larger than the frame limit: pass large
  // values by name), Io (disconnected), OutOfMemory.
  Result<TaskId> submit(const Call& call, const TaskOptions& options = {}) noexcept;
  // Like submit, but when the queue has no room returns nullopt at once.
  Result<std::optional<TaskId>> try_submit(const Call& call, const TaskOptions& options = {}) noexcept;

  // Waits for task `id` and returns its result, forgetting the id. An
  // unknown (or already taken) id gives an error result.
  TaskResult wait(TaskId id) noexcept;
  // The same, giving up after `timeout` (nullopt; the task stays pending).
  std::optional<TaskResult> wait_for(TaskId id, std::chrono::milliseconds timeout) noexcept;
  // Waits for the first of the pending tasks to end (results are handed out
  // in the order they arrived). With no task pending: {0, an error result}.
  std::pair<TaskId, TaskResult> wait_any() noexcept;
  // The same among `ids` only (results of other tasks stay for whoever waits
  // for them). With none of `ids` pending: {0, an error result}.
  std::pair<TaskId, TaskResult> wait_any(std::span<const TaskId> ids) noexcept;
  // The same, giving up after `timeout` (nullopt).
  std::optional<std::pair<TaskId, TaskResult>> wait_any_for(std::span<const TaskId> ids,
                                                            std::chrono::milliseconds timeout) noexcept;
  // Waits for every task of `ids`; results in the order of `ids`.
  std::vector<TaskResult> wait_all(std::span<const TaskId> ids) noexcept;

  // Cancels task `id`: a queued task never runs, a running one is stopped
  // (its worker survives); its result is then kCancelled. A task that has
  // already ended is left as it is. Errors: Io (disconnected).
  Status cancel(TaskId id) noexcept;

  // Runs `fn` on each of `inputs` (one task each, up to the dispatcher's
  // queue cap in flight) and collects the results in input order. Stops at
  // the first task that does not end ok: the remaining tasks are cancelled
  // and their results (kCancelled) returned too. `progress(done, total)` is
  // called as results arrive. Errors: as submit.
  Result<MapResult> map(
      const std::string& fn, std::span<const std::vector<Arg>> inputs, const TaskOptions& options = {},
      const std::function<void(std::size_t done, std::size_t total)>& progress = {}) noexcept;

  // Runs `call` on every worker connected now and on every worker that
  // connects later (before it runs anything else), and waits until the ones
  // connected now have run it. Errors: InvalidArgument (it failed on a
  // worker: the message says how), Io.
  Status everywhere(const Call& call) noexcept;

  // The dispatcher's counters and workers. Errors: Io.
  Result<DispatcherStatus> status() noexcept;

  // Called on the client's own thread each time a result arrives (keep it
  // short; do not call wait() from it). Replaces any earlier callback.
  void on_complete(std::function<void(TaskId)> callback) noexcept;
  // A descriptor (eventfd) that is readable whenever results arrived since
  // it was last read (made by the first call: results before it are not
  // counted); read 8 bytes from it to reset it. -1 if it cannot be made.
  int completion_fd() const noexcept;

  // This process's owner id, which the results belong to.
  std::uint64_t owner() const noexcept;
  // Bytes this client sent and received through its socket (frames and
  // payloads), for measurements.
  std::uint64_t bytes_sent() const noexcept;
  std::uint64_t bytes_received() const noexcept;

 private:
  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
  int pid_;  // the process that connected; another one leaves the object alone
};

}  // namespace kura::ipc
