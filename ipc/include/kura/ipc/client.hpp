// The client: submits tasks to a dispatcher and collects their results
// (DESIGN.md section 4).
//
// Thread-safe: any thread may submit, wait and cancel. The connection is
// served by a reader thread of the client's own, so results arrive while
// nobody waits. A program with its own event loop uses the completion
// callback or polls completion_fd(). Result regions belong to this process's
// owner (the workers write them holding its lease) and are unlinked when
// their TaskResult goes, or at exit however the process ends.
//
// Each waiter gets its own results: the tasks of map() and Pipeline::run are
// reserved for that call, and no wait(), wait_any() or wait_any(ids) of
// anyone else ever takes them (to those they are not pending).
//
// Forking: the client's socket is closed in a child forked without exec
// (right at the fork), so the dispatcher sees the client go when this
// process does, whatever the child does. A child must not use its parent's
// Client (its thread does not exist there), but may destroy it, which then
// does nothing; it connects a Client of its own.
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
class Pipeline;

// What map() returns: one result per input, in input order, and the index of
// the input whose result was the first to arrive not ok (which stopped the
// map: the others then in flight were cancelled, the ones not sent never
// ran), if any.
struct MapResult {
  std::vector<TaskResult> results;
  std::optional<std::size_t> failed;
};

class Client {
 public:
  // Connects to the dispatcher at `socket_path` (empty: default_socket_path())
  // and waits (up to 10 s) for its welcome. Errors: NotFound (nothing
  // listens there: no socket file, or a stale one), Permission (the socket
  // is not this user's to use, or the process listening there is another
  // user's), Io (the dispatcher closed the connection before welcoming it, or
  // did not answer within 10 s; the client thread or its descriptors could
  // not be made), OutOfMemory.
  static Result<std::unique_ptr<Client>> connect(const std::string& socket_path = "") noexcept;

  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;
  // Disconnects: the dispatcher cancels the tasks of this client that have
  // not ended. The client closes its side of the socket first and reads on
  // until the dispatcher closes its side (at most 2 s), removing the result
  // regions that arrive meanwhile; results not taken are unlinked too, so
  // nothing of this client's stays in the region directory. REQUIRES: no
  // other thread uses the client; not called from the completion callback
  // (that aborts).
  ~Client();

  // Submits a task and returns its id. Without a byte cap on the queue
  // (the dispatcher's --memory) it returns once the task is sent. With one it
  // returns once the task is in the queue (or has already ended), waiting
  // for room; at most 64 of this client's submits (from all threads, map()'s
  // included) wait for room at the dispatcher at once: another waits in the
  // client, before it is sent, until one of those is admitted or ends.
  // try_submit, cancel and status are never held back by them. Errors:
  // InvalidArgument (a bad argument or name; a task larger than the frame
  // limit: pass large values by name; called from the completion callback
  // with a byte cap), Io (disconnected), OutOfMemory.
  Result<TaskId> submit(const Call& call, const TaskOptions& options = {}) noexcept;
  // Like submit, but when the queue has no room (or others wait for room)
  // returns nullopt at once. Errors: as submit; InvalidArgument also from the
  // completion callback.
  Result<std::optional<TaskId>> try_submit(const Call& call, const TaskOptions& options = {}) noexcept;

  // The waits see the tasks of submit() and try_submit() only (map()'s,
  // Pipeline::run's and everywhere()'s are not pending to them). Called from
  // the completion callback they return at once with an error result.

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

  // Cancels task `id` (any task of this client's, map()'s and pipelines'
  // included): a queued task never runs, a running one is stopped (its worker
  // survives); its result is then kCancelled. A task that has already ended
  // is left as it is. Works from the completion callback. Errors: Io
  // (disconnected).
  Status cancel(TaskId id) noexcept;

  // Runs `fn` on each of `inputs` (one task each) and collects the results in
  // input order. It keeps at most 256 of its tasks in flight (sent and not
  // ended); with a byte cap, its submits also count against the 64 that may
  // wait for room at once (see submit), so it sends more only as earlier
  // ones are admitted, and meanwhile goes on taking results. Its tasks are
  // reserved for it (no other wait takes them). Stops at the first task
  // whose result does not arrive ok: the tasks in flight are cancelled, the
  // ones not sent are never sent, and their results (kCancelled) are
  // returned too. `progress(done, total)` is called on the calling thread as
  // results arrive. Errors: InvalidArgument (a task over the frame limit;
  // called from the completion callback), Io (disconnected while sending),
  // OutOfMemory.
  Result<MapResult> map(
      const std::string& fn, std::span<const std::vector<Arg>> inputs, const TaskOptions& options = {},
      const std::function<void(std::size_t done, std::size_t total)>& progress = {}) noexcept;

  // Runs `call` on every worker connected now, and waits until they have run
  // it. The dispatcher also keeps the call and runs it on every worker that
  // connects later, before its first task, for as long as it runs, whatever
  // the outcome here. With no worker connected it returns ok at once (each
  // worker runs the call when it joins). A failure on a worker that joins
  // later is only logged by the dispatcher, and that worker goes on to run
  // tasks. Errors: InvalidArgument (it failed on a worker connected now, or
  // such a worker was lost while running it: the message says how; it stays
  // registered for later workers; called from the completion callback), Io
  // (disconnected), OutOfMemory.
  Status everywhere(const Call& call) noexcept;

  // The dispatcher's counters and workers. Errors: InvalidArgument (called
  // from the completion callback), Io (disconnected), OutOfMemory.
  Result<DispatcherStatus> status() noexcept;

  // Called on the client's reader thread each time the result of a task
  // that the waits can take arrives (not for map()'s, Pipeline::run's or
  // everywhere()'s tasks), and for each of those when the connection is
  // lost. Replaces any earlier callback. Keep it short: results wait while
  // it runs. From it, submit() without a byte cap, cancel() and
  // on_complete() work; every call that would wait for the reader thread
  // (submit with a byte cap, try_submit, status, wait and its kin, map,
  // everywhere, Pipeline::run) returns at once with InvalidArgument (the
  // waits with an error result): "... cannot be called from the completion
  // callback (it runs on the client's reader thread)". The Client must not
  // be destroyed from it.
  void on_complete(std::function<void(TaskId)> callback) noexcept;
  // A descriptor (eventfd, made by connect()) that is readable whenever the
  // results that on_complete is called for arrived since it was last read,
  // counting from connect(); read 8 bytes from it to reset it.
  int completion_fd() const noexcept;

  // This process's owner id, which the results belong to.
  std::uint64_t owner() const noexcept;
  // Bytes this client sent and received through its socket (frames and
  // payloads), for measurements.
  std::uint64_t bytes_sent() const noexcept;
  std::uint64_t bytes_received() const noexcept;

 private:
  // For Pipeline::run, whose tasks are reserved like map()'s: they are seen
  // only by the waits below given the same reservation.
  friend class Pipeline;
  bool on_reader_thread() const noexcept;
  // A new reservation.
  std::uint64_t reserve() noexcept;
  // Lets go of the tasks of `reservation`: results not taken are dropped,
  // those of tasks still pending when they arrive.
  void release(std::uint64_t reservation) noexcept;
  Result<TaskId> submit_reserved(std::uint64_t reservation, const Call& call,
                                 const TaskOptions& options) noexcept;
  TaskResult wait_reserved(std::uint64_t reservation, TaskId id) noexcept;
  std::optional<std::pair<TaskId, TaskResult>> wait_any_reserved_for(
      std::uint64_t reservation, std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept;

  struct Impl;
  explicit Client(std::unique_ptr<Impl> impl) noexcept;
  std::unique_ptr<Impl> impl_;
  int pid_;  // the process that connected; another one leaves the object alone
};

}  // namespace kura::ipc
