// Internal to kura_ipc, never installed: the client's state (Client::Impl)
// and its small helpers. Its parts, one idea per file:
//
//   client.cpp        connecting, the reader thread (frames from the
//                     dispatcher, the end of the connection), destruction
//   client_send.cpp   what calling threads send: submit, try_submit,
//                     everywhere, cancel, status queries
//   client_waits.cpp  taking results: wait, wait_for, wait_any*, wait_all,
//                     map, and the reserved tasks Pipeline uses
#pragma once

#include <uv.h>

#include <atomic>
#include <chrono>
#include <cstddef>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <unordered_map>
#include <utility>
#include <vector>

#include "event_count.hpp"
#include "kura/ipc/client.hpp"
#include "message_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

struct Client::Impl {
  using Clock = std::chrono::steady_clock;
  enum class State { kSent, kQueued, kFull, kDone };
  struct Task {
    State state = State::kSent;
    bool setup = false;             // an everywhere() call: handed to no wait
    bool counted = false;           // a blocking submit the dispatcher has not admitted yet (in `parked`)
    bool abandoned = false;         // its reservation was released: dropped when it ends
    std::uint64_t reservation = 0;  // the map() or Pipeline::run it belongs to; 0: any waiter's
    TaskResult result;
  };
  // Encoded tasks of a map() not sent yet: (input index, payload).
  using Ready = std::deque<std::pair<std::size_t, std::shared_ptr<const Bytes>>>;

  uv_loop_t loop{};
  uv_async_t wake{};
  uv_timer_t linger{};
  std::thread io;
  std::thread::id io_id;               // set before connect() returns, never changed
  detail::Connection* conn = nullptr;  // the loop thread's: it reads
  int conn_fd = -1;                    // conn's descriptor, closed in forked children (loop thread)
  std::uint64_t owner = 0;
  int efd = -1;
  // The eventfd is written only once completion_fd() handed it out (one
  // system call per result saved until then): results that ended before
  // are counted here and written then.
  std::atomic<bool> efd_used{false};
  std::atomic<std::uint64_t> unsignalled{0};
  // Calling threads write frames themselves through the connection's
  // Sender (under mu; it outlives the connection).
  std::shared_ptr<detail::Sender> sender;
  std::atomic<std::uint64_t> sent{0}, received{0};

  std::mutex mu;
  // Waiting threads sleep on it for any change under mu (results, states,
  // the end of the connection); whoever makes one calls notify_all().
  detail::EventCount events;
  bool welcomed = false;
  bool closed = false;
  std::string close_reason;
  std::optional<Status> connect_failure;  // the transport's error when the socket never connected
  bool stopping = false;
  std::uint32_t frame_limit = kDefaultFrameLimit;
  std::uint64_t queue_cap = 0;  // set before connect() returns, never changed
  TaskId next_id = 1;
  std::uint64_t next_reservation = 1;
  std::size_t parked = 0;  // tasks with `counted`: at most detail::kMaxParkedSubmits
  std::unordered_map<TaskId, Task> tasks;
  std::deque<TaskId> arrived;  // ended and not yet taken, in arrival order (no set-up calls)
  std::unordered_map<std::uint64_t, std::optional<Result<DispatcherStatus>>> queries;
  // The completion callback has a mutex of its own: taking `mu` again right
  // after waking a waiter would make the waiter sleep once more on it.
  std::mutex callback_mu;
  std::function<void(TaskId)> callback;  // under callback_mu

  ~Impl();

  // client.cpp: the loop thread
  void loop_main(const std::string& path);
  void on_connected(Result<std::unique_ptr<detail::Stream>> s);
  void send_now(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload);
  void close_connection(const Status& why);
  void on_connection_closed(const Status& why);
  void on_wake();
  void finish_if_stopping();
  void closed_with(const Status& why);
  void notify(TaskId id);
  void signal_completions(std::uint64_t n);
  void on_frame(Frame&& f);
  TaskResult make_result(const std::shared_ptr<const Bytes>& payload);
  void drop_result(const std::shared_ptr<const Bytes>& payload);

  // client_send.cpp: calling threads
  Status write_frame(FrameType type, std::uint16_t flags, std::uint64_t id,
                     std::shared_ptr<const Bytes> payload);
  Status write_frames(std::span<const detail::OutgoingFrame> frames);
  Status too_large(std::size_t size) const;
  Result<std::vector<TaskId>> start_many(const Ready& ready, std::uint64_t reservation);
  Result<TaskId> start(const std::shared_ptr<const Bytes>& payload, std::uint16_t flags, FrameType type,
                       bool setup, std::uint64_t reservation);
  void forget(std::span<const TaskId> ids);
  Result<std::shared_ptr<const Bytes>> encode(const Call& call, const TaskOptions& options);
  Result<TaskId> submit(const Call& call, const TaskOptions& options, std::uint64_t reservation);

  // client_waits.cpp: calling threads
  TaskResult take(TaskId id);
  std::uint64_t reserve();
  void release(std::uint64_t reservation);
  std::optional<TaskResult> wait_one(std::uint64_t reservation, TaskId id,
                                     std::optional<Clock::time_point> deadline);
  std::optional<std::pair<TaskId, TaskResult>> wait_any(std::uint64_t reservation,
                                                        const std::span<const TaskId>* ids,
                                                        std::optional<Clock::time_point> deadline);

  // Small helpers (client.cpp and the calling threads).
  bool on_reader_thread() const { return std::this_thread::get_id() == io_id; }

  // The error of a blocking call made from the completion callback.
  static Status from_callback(const char* what) {
    return invalid_argument(
        std::string(what) +
        " cannot be called from the completion callback (it runs on the client's reader thread)");
  }

  Status disconnected() { return Status(Code::kIo, "not connected to the dispatcher: " + close_reason); }

  void kick() { uv_async_send(&wake); }

  // Whether a waiter holding `reservation` (0: none) may take task `t`.
  static bool takeable(const Task& t, std::uint64_t reservation) {
    return !t.setup && !t.abandoned && t.reservation == reservation;
  }

  // Task `t` has been admitted or has ended: it no longer counts against the
  // parked limit. Returns whether it did (a submit waiting for room may go
  // now). REQUIRES: mu held.
  bool settle(Task& t) {
    if (!t.counted) return false;
    t.counted = false;
    --parked;
    return true;
  }

  // Whether a blocking submit may be sent now (REQUIRES: mu held): without a
  // cap always; with one, while fewer than kMaxParkedSubmits wait for room.
  bool may_send() const { return queue_cap == 0 || parked < detail::kMaxParkedSubmits; }

  // The state of task `id`; kDone also when it is no longer there (its
  // result was taken, by this thread or another). REQUIRES: mu held.
  State state_of(TaskId id) const {
    auto it = tasks.find(id);
    return it == tasks.end() ? State::kDone : it->second.state;
  }
};

}  // namespace kura::ipc
