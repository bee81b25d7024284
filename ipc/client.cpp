#include "kura/ipc/client.hpp"

#include <fcntl.h>
#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <climits>
#include <condition_variable>
#include <cstring>
#include <deque>
#include <mutex>
#include <new>
#include <thread>
#include <unordered_map>

#include "fork_guard.hpp"
#include "kura/core/name.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "task_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

namespace {

using Clock = std::chrono::steady_clock;

// How long connect() waits for the dispatcher's welcome.
constexpr auto kConnectTimeout = std::chrono::seconds(10);
// How long a client that is being destroyed reads on, after it closed its
// side of the socket, for the dispatcher to close its side.
constexpr std::uint64_t kLingerMs = 2000;
// Tasks map() keeps in flight (sent and not ended) at once.
constexpr std::size_t kMapWindow = 256;

// What connect() returns when the connection ended before the dispatcher's
// welcome. `connecting` is the transport's error when the socket could not be
// connected at all; the transport gives it a code (NotFound: nobody listens
// there; Permission: the listener is not this user's), kept as it is. Any
// other end (the dispatcher closed the connection) is Io.
Status connect_error(const std::optional<Status>& connecting, const std::string& path,
                     const std::string& reason) {
  if (connecting) {
    const Code code = connecting->code();
    if (code == Code::kNotFound || code == Code::kPermission || code == Code::kInvalidArgument ||
        code == Code::kOutOfMemory)
      return *connecting;
    return Status(Code::kIo, connecting->message(), connecting->sys_errno());
  }
  return Status(Code::kIo, "the dispatcher at " + path + " refused the connection: " + reason);
}

Status from_callback(const char* what) {
  return invalid_argument(
      std::string(what) +
      " cannot be called from the completion callback (it runs on the client's reader thread)");
}

}  // namespace

struct Client::Impl {
  enum class State { kSent, kQueued, kFull, kDone };
  struct Task {
    State state = State::kSent;
    bool setup = false;             // an everywhere() call: handed to no wait
    bool counted = false;           // a blocking submit the dispatcher has not admitted yet (in `parked`)
    bool abandoned = false;         // its reservation was released: dropped when it ends
    std::uint64_t reservation = 0;  // the map() or Pipeline::run it belongs to; 0: any waiter's
    TaskResult result;
  };
  uv_loop_t loop{};
  uv_async_t wake{};
  uv_timer_t linger{};
  std::thread io;
  std::thread::id io_id;               // set before connect() returns, never changed
  detail::Connection* conn = nullptr;  // the loop thread's: it reads
  int conn_fd = -1;                    // conn's descriptor, closed in forked children (loop thread)
  std::uint64_t owner = 0;
  int efd = -1;
  // Calling threads write frames themselves through the connection's
  // Sender (under mu; it outlives the connection).
  std::shared_ptr<detail::Sender> sender;
  std::atomic<std::uint64_t> sent{0}, received{0};

  std::mutex mu;
  std::condition_variable cv;
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

  ~Impl() {
    if (efd >= 0) ::close(efd);
  }

  bool on_reader_thread() const { return std::this_thread::get_id() == io_id; }

  // --- the loop thread ---------------------------------------------------------------

  void loop_main(const std::string& path) {
    auto endpoint = detail::parse_endpoint(path);
    if (!endpoint) {
      {
        std::lock_guard<std::mutex> lock(mu);
        connect_failure = endpoint.status();
      }
      closed_with(endpoint.status());
    } else {
      detail::connect(&loop, *endpoint,
                      [this](Result<std::unique_ptr<detail::Stream>> s) { on_connected(std::move(s)); });
    }
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }

  void on_connected(Result<std::unique_ptr<detail::Stream>> s) {
    if (!s) {
      {
        std::lock_guard<std::mutex> lock(mu);
        connect_failure = s.status();
      }
      return closed_with(s.status());
    }
    conn = detail::Connection::adopt(std::move(s).value(), kDefaultFrameLimit, UINT64_MAX);
    bool stop;
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = stopping;
    }
    if (stop) {
      // Destroyed while connecting: the connection goes at once (it has
      // no callbacks yet, so nothing hears of it).
      conn->close(detail::CloseReason::kLocal, Status(Code::kIo, "the client disconnected"));
      conn = nullptr;
      return;
    }
    Status started = conn->start(detail::Connection::Callbacks{
        [this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
        [this](detail::Connection&, detail::CloseReason, const Status& why) { on_connection_closed(why); }});
    if (!started) return close_connection(started);
    conn_fd = conn->fd();
    if (Status guarded = detail::close_in_forked_child(conn_fd); !guarded) {
      conn_fd = -1;
      return close_connection(guarded);
    }
    auto hello = detail::encode_hello(detail::Hello{"client", ::getpid(), owner, 0, {}});
    if (!hello) return close_connection(hello.status());
    send_now(FrameType::kHello, 0, 0, std::make_shared<const Bytes>(std::move(hello).value()));
  }

  void send_now(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload) {
    if (conn == nullptr) return;
    sent += kFrameHeaderSize + (payload ? payload->size() : 0);
    conn->send(type, flags, id, std::move(payload));
  }

  // Closes the connection from this side; its descriptor leaves the fork
  // guard first (the Connection closes it at once).
  void close_connection(const Status& why) {
    if (conn_fd >= 0) {
      detail::forget_in_forked_child(conn_fd);
      conn_fd = -1;
    }
    conn->close(detail::CloseReason::kLocal, why);
  }

  void on_connection_closed(const Status& why) {
    if (conn_fd >= 0) {
      detail::forget_in_forked_child(conn_fd);
      conn_fd = -1;
    }
    conn = nullptr;
    closed_with(why);
    finish_if_stopping();
  }

  void on_wake() {
    bool stop;
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = stopping;
    }
    if (!stop) return;
    if (conn != nullptr && conn_fd >= 0) {
      // Half-close: the dispatcher sees the client go and closes its side
      // once it has forgotten the client's tasks. Until then results it had
      // already sent still arrive: their regions are removed as they come
      // (on_frame), for a bounded time.
      ::shutdown(conn_fd, SHUT_WR);
      uv_timer_start(
          &linger,
          [](uv_timer_t* t) {
            auto* impl = static_cast<Impl*>(t->loop->data);
            if (impl->conn != nullptr)
              impl->close_connection(
                  Status(Code::kIo, "the dispatcher did not close the connection in time"));
          },
          kLingerMs, 0);
    } else if (conn != nullptr) {
      close_connection(Status(Code::kIo, "the client disconnected"));
    }
    finish_if_stopping();
  }

  // Once the client is being destroyed and the connection is gone, closes
  // the loop's own handles, so that the loop ends.
  void finish_if_stopping() {
    {
      std::lock_guard<std::mutex> lock(mu);
      if (!stopping) return;
    }
    auto close = [](auto* h) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    };
    close(&wake);
    if (conn == nullptr) close(&linger);
  }

  // The connection is gone: every pending task ends as disconnected.
  void closed_with(const Status& why) {
    std::vector<TaskId> ended;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return;
      closed = true;
      close_reason = why.message();
      for (auto it = tasks.begin(); it != tasks.end();) {
        Task& t = it->second;
        settle(t);
        if (t.abandoned) {
          it = tasks.erase(it);
          continue;
        }
        if (t.state != State::kDone) {
          t.state = State::kDone;
          t.result =
              TaskResult(Outcome::kDisconnected, "lost the connection to the dispatcher: " + close_reason);
          if (!t.setup) arrived.push_back(it->first);
          if (takeable(t, 0) && !stopping) ended.push_back(it->first);  // no callback while destroyed
        }
        ++it;
      }
      for (auto& [id, q] : queries)
        if (!q) q = Status(Code::kIo, "lost the connection to the dispatcher: " + close_reason);
    }
    cv.notify_all();
    for (TaskId id : ended) notify(id);
  }

  void notify(TaskId id) {
    std::function<void(TaskId)> cb;
    {
      std::lock_guard<std::mutex> lock(callback_mu);
      cb = callback;
    }
    const std::uint64_t one = 1;
    (void)!::write(efd, &one, sizeof one);
    if (cb) cb(id);
  }

  void on_frame(Frame&& f) {
    received += kFrameHeaderSize + f.payload.size();
    const std::uint64_t id = f.header.id;
    switch (f.header.type) {
      case FrameType::kWelcome: {
        auto w = detail::decode_welcome(f.payload);
        if (!w) return close_connection(w.status());
        conn->set_read_limit(std::max(w->frame_limit, kDefaultFrameLimit));
        if (w->protocol != kProtocolVersion)
          return close_connection(
              Status(Code::kInvalidArgument, detail::version_mismatch("the dispatcher", w->protocol)));
        {
          std::lock_guard<std::mutex> lock(mu);
          welcomed = true;
          frame_limit = w->frame_limit;
          queue_cap = w->queue_cap;
          sender = conn->sender();
        }
        cv.notify_all();
        return;
      }
      case FrameType::kQueued:
      case FrameType::kFull: {
        {
          std::lock_guard<std::mutex> lock(mu);
          auto it = tasks.find(id);
          if (it != tasks.end() && it->second.state == State::kSent) {
            it->second.state = f.header.type == FrameType::kQueued ? State::kQueued : State::kFull;
            settle(it->second);
          }
        }
        cv.notify_all();
        return;
      }
      case FrameType::kResult: {
        auto payload = std::make_shared<const Bytes>(std::move(f.payload));
        bool leaving;
        {
          std::lock_guard<std::mutex> lock(mu);
          leaving = stopping;
        }
        if (leaving) return drop_result(payload);
        TaskResult r = make_result(payload);
        bool wake_waiters = false, tell = false;
        {
          std::lock_guard<std::mutex> lock(mu);
          auto it = tasks.find(id);
          if (it == tasks.end() || it->second.state == State::kDone)
            return;  // nobody asked: r drops its region
          Task& t = it->second;
          wake_waiters = settle(t);
          if (t.abandoned) {
            tasks.erase(it);
          } else {
            t.state = State::kDone;
            t.result = std::move(r);
            if (!t.setup) arrived.push_back(id);
            wake_waiters = true;
            tell = takeable(t, 0);
          }
        }
        if (wake_waiters) cv.notify_all();
        if (tell) notify(id);
        return;  // an abandoned task's result (still in r) is dropped here
      }
      case FrameType::kStatus: {
        auto s = detail::decode_status(f.payload);
        {
          std::lock_guard<std::mutex> lock(mu);
          auto it = queries.find(id);
          if (it != queries.end()) it->second = std::move(s);
        }
        cv.notify_all();
        return;
      }
      case FrameType::kRefused: {
        auto text = detail::decode_refused(f.payload);
        return close_connection(Status(Code::kInvalidArgument, "the dispatcher refused this client: " +
                                                                   (text ? *text : text.status().message())));
      }
      default:
        return close_connection(
            corrupt("the dispatcher sent a frame of type " + std::to_string(int(f.header.type))));
    }
  }

  // The TaskResult of a result image: a region by name is adopted (this
  // process owns it from now on) and mapped.
  TaskResult make_result(const std::shared_ptr<const Bytes>& payload) {
    auto msg = detail::decode_result(payload);
    if (!msg) return TaskResult(Outcome::kError, "cannot read the result: " + msg.status().message());
    if (msg->outcome != Outcome::kOk) return TaskResult(msg->outcome, msg->message);
    if (msg->name.empty()) {
      if (!msg->value) return TaskResult(Outcome::kError, "an ok result without a value");
      return detail::TaskResultAccess::make(*msg->value, std::nullopt);
    }
    auto region = shm::adopt(msg->name);
    if (!region) {
      (void)shm::remove(msg->name);
      return TaskResult(Outcome::kError,
                        "cannot take the result region " + msg->name + ": " + region.status().message());
    }
    auto mapped = region->map();
    if (!mapped)
      return TaskResult(Outcome::kError,
                        "cannot map the result " + msg->name + ": " + mapped.status().message());
    return detail::TaskResultAccess::make(mapped->node(), std::move(region).value());
  }

  // A result that arrived while the client is being destroyed: nobody will
  // take it, so its region (this process's, the dispatcher checked) goes.
  void drop_result(const std::shared_ptr<const Bytes>& payload) {
    auto msg = detail::decode_result(payload);
    if (!msg || msg->name.empty()) return;
    auto n = parse_name(msg->name);
    if (n && n->owner == owner) (void)shm::remove(msg->name);
  }

  // --- user threads ----------------------------------------------------------------------

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

  // Writes frames from the calling thread through the connection's one
  // write path (the transport's Sender: frames of one call are contiguous,
  // and written at once when the socket takes them). Errors: Io.
  Status write_frame(FrameType type, std::uint16_t flags, std::uint64_t id,
                     std::shared_ptr<const Bytes> payload) {
    const detail::OutgoingFrame f{type, flags, id, std::move(payload)};
    return write_frames(std::span<const detail::OutgoingFrame>(&f, 1));
  }
  Status write_frames(std::span<const detail::OutgoingFrame> frames) {
    std::shared_ptr<detail::Sender> out;
    {
      std::lock_guard<std::mutex> lock(mu);
      out = sender;
    }
    if (!out) return disconnected();
    std::uint64_t bytes = 0;
    for (const auto& f : frames) bytes += kFrameHeaderSize + (f.payload ? f.payload->size() : 0);
    KURA_RETURN_IF_ERROR(out->send_many(frames));
    sent += bytes;
    return Status::ok();
  }

  Status too_large(std::size_t size) const {
    return invalid_argument("the task is " + human_bytes(size) + ", over the frame limit of " +
                            human_bytes(frame_limit) + ": share large values and pass their names");
  }

  // Registers new blocking submits of `reservation` for the first payloads of
  // `ready`, as many as may be sent now (see may_send), and writes them in
  // one go; returns their ids, in order (maybe none).
  template <class Ready>
  Result<std::vector<TaskId>> start_many(const Ready& ready, std::uint64_t reservation) {
    std::vector<TaskId> ids;
    std::vector<detail::OutgoingFrame> frames;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return disconnected();
      for (const auto& [input, p] : ready)
        if (p->size() > frame_limit) return too_large(p->size());
      for (const auto& [input, p] : ready) {
        if (!may_send()) break;
        const TaskId id = next_id++;
        Task& t = tasks[id];
        t.reservation = reservation;
        if (queue_cap > 0) {
          t.counted = true;
          ++parked;
        }
        ids.push_back(id);
        frames.push_back(detail::OutgoingFrame{FrameType::kSubmit, 0, id, p});
      }
    }
    if (frames.empty()) return ids;
    Status s = write_frames(frames);
    if (!s) {
      forget(ids);
      return s;
    }
    return ids;
  }

  // Registers a new task and writes its frame; returns its id. A blocking
  // submit first waits (in the client, before its frame is written) while
  // kMaxParkedSubmits others wait for room. The frame is written outside
  // `mu`, so results keep arriving meanwhile.
  Result<TaskId> start(const std::shared_ptr<const Bytes>& payload, std::uint16_t flags, FrameType type,
                       bool setup, std::uint64_t reservation) {
    TaskId id;
    {
      std::unique_lock<std::mutex> lock(mu);
      if (closed) return disconnected();
      if (payload->size() > frame_limit) return too_large(payload->size());
      const bool counted = type == FrameType::kSubmit && (flags & kFlagTry) == 0 && queue_cap > 0;
      if (counted) {
        cv.wait(lock, [&] { return closed || may_send(); });
        if (closed) return disconnected();
        ++parked;
      }
      id = next_id++;
      Task& t = tasks[id];
      t.setup = setup;
      t.counted = counted;
      t.reservation = reservation;
    }
    Status s = write_frame(type, flags, id, payload);
    if (!s) {
      const TaskId one[] = {id};
      forget(one);
      return s;
    }
    return id;
  }

  // Forgets tasks whose frames could not be written.
  void forget(std::span<const TaskId> ids) {
    {
      std::lock_guard<std::mutex> lock(mu);
      for (TaskId id : ids) {
        auto it = tasks.find(id);
        if (it == tasks.end()) continue;
        settle(it->second);
        tasks.erase(it);
      }
    }
    cv.notify_all();
  }

  Result<std::shared_ptr<const Bytes>> encode(const Call& call, const TaskOptions& options) {
    KURA_ASSIGN_OR_RETURN(Bytes b, detail::encode_submit(call, owner, options));
    return std::make_shared<const Bytes>(std::move(b));
  }

  // Submits `call` for `reservation`; with a cap, returns once the task is
  // admitted (or has ended).
  Result<TaskId> submit(const Call& call, const TaskOptions& options, std::uint64_t reservation) {
    if (queue_cap > 0 && on_reader_thread()) return from_callback("submit() with a byte cap");
    KURA_ASSIGN_OR_RETURN(auto payload, encode(call, options));
    KURA_ASSIGN_OR_RETURN(TaskId id, start(payload, 0, FrameType::kSubmit, false, reservation));
    if (queue_cap > 0) {
      std::unique_lock<std::mutex> lock(mu);
      cv.wait(lock, [&] { return state_of(id) != State::kSent; });
    }
    return id;
  }

  // The state of task `id`; kDone also when it is no longer there (its
  // result was taken, by this thread or another). REQUIRES: mu held.
  State state_of(TaskId id) const {
    auto it = tasks.find(id);
    return it == tasks.end() ? State::kDone : it->second.state;
  }

  // Takes the result of ended task `id`. REQUIRES: mu held, the task ended.
  TaskResult take(TaskId id) {
    auto it = tasks.find(id);
    TaskResult r = std::move(it->second.result);
    tasks.erase(it);
    auto a = std::find(arrived.begin(), arrived.end(), id);
    if (a != arrived.end()) arrived.erase(a);
    return r;
  }

  std::uint64_t reserve() {
    std::lock_guard<std::mutex> lock(mu);
    return next_reservation++;
  }

  // Lets go of the tasks of `reservation`: results not taken are dropped now,
  // those of tasks still pending when they arrive.
  void release(std::uint64_t reservation) {
    std::vector<TaskResult> dropped;  // their regions are unlinked outside `mu`
    {
      std::lock_guard<std::mutex> lock(mu);
      for (auto it = tasks.begin(); it != tasks.end();) {
        Task& t = it->second;
        if (t.reservation != reservation || t.setup) {
          ++it;
          continue;
        }
        if (t.state != State::kDone) {
          t.abandoned = true;
          ++it;
          continue;
        }
        dropped.push_back(std::move(t.result));
        auto a = std::find(arrived.begin(), arrived.end(), it->first);
        if (a != arrived.end()) arrived.erase(a);
        it = tasks.erase(it);
      }
    }
  }

  // Waits for task `id` (of `reservation`) until `deadline` (none: for
  // ever); nullopt when it passed.
  std::optional<TaskResult> wait_one(std::uint64_t reservation, TaskId id,
                                     std::optional<Clock::time_point> deadline) {
    if (on_reader_thread()) return TaskResult(Outcome::kError, from_callback("wait()").message());
    std::unique_lock<std::mutex> lock(mu);
    auto it = tasks.find(id);
    if (it == tasks.end() || !takeable(it->second, reservation))
      return TaskResult(Outcome::kError, "no pending task " + std::to_string(id));
    // Another thread may take it first (a wait or wait_any of its own).
    auto ended = [&] { return state_of(id) == State::kDone; };
    if (!deadline) {
      cv.wait(lock, ended);
    } else if (!cv.wait_until(lock, *deadline, ended)) {
      return std::nullopt;
    }
    if (tasks.count(id) == 0)
      return TaskResult(Outcome::kError, "task " + std::to_string(id) + " was taken by another wait");
    return take(id);
  }

  // Waits for the first task of `reservation` (among `ids` when given) to
  // end, until `deadline` (none: for ever); nullopt when it passed.
  std::optional<std::pair<TaskId, TaskResult>> wait_any(std::uint64_t reservation,
                                                        const std::span<const TaskId>* ids,
                                                        std::optional<Clock::time_point> deadline) {
    const char* none = ids != nullptr ? "none of the tasks is pending" : "no task is pending";
    if (on_reader_thread())
      return std::pair<TaskId, TaskResult>{
          0, TaskResult(Outcome::kError, from_callback("wait_any()").message())};
    std::unique_lock<std::mutex> lock(mu);
    auto mine = [&](TaskId id) {
      auto it = tasks.find(id);
      if (it == tasks.end() || !takeable(it->second, reservation)) return false;
      return ids == nullptr || std::find(ids->begin(), ids->end(), id) != ids->end();
    };
    auto pending = [&] {
      if (ids != nullptr) return std::any_of(ids->begin(), ids->end(), mine);
      for (const auto& [id, t] : tasks)
        if (takeable(t, reservation)) return true;
      return false;
    };
    if (!pending()) return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, none)};
    TaskId found = 0;
    // Another thread may take the tasks meanwhile: then none is left.
    auto ready = [&] {
      for (TaskId a : arrived)
        if (mine(a)) {
          found = a;
          return true;
        }
      return !pending();
    };
    if (!deadline) {
      cv.wait(lock, ready);
    } else if (!cv.wait_until(lock, *deadline, ready)) {
      return std::nullopt;
    }
    if (found == 0) return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, none)};
    return std::pair<TaskId, TaskResult>{found, take(found)};
  }
};

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)), pid_(::getpid()) {}

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) noexcept {
  try {
    std::string path = socket_path;
    if (path.empty()) {
      KURA_ASSIGN_OR_RETURN(path, default_socket_path());
    }
    detail::ignore_sigpipe();
    auto impl = std::make_unique<Impl>();
    KURA_ASSIGN_OR_RETURN(impl->owner, shm::process_owner());
    impl->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl->efd < 0) return Status(Code::kIo, "cannot create an eventfd for completions", errno);
    if (int rc = uv_loop_init(&impl->loop); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    impl->loop.data = impl.get();
    uv_async_init(&impl->loop, &impl->wake,
                  [](uv_async_t* a) { static_cast<Impl*>(a->loop->data)->on_wake(); });
    uv_timer_init(&impl->loop, &impl->linger);
    Impl* raw = impl.get();
    impl->io = std::thread([raw, path] { raw->loop_main(path); });
    impl->io_id = impl->io.get_id();
    std::unique_ptr<Client> client(new Client(std::move(impl)));
    std::unique_lock<std::mutex> lock(raw->mu);
    if (!raw->cv.wait_for(lock, kConnectTimeout, [raw] { return raw->welcomed || raw->closed; }))
      return Status(Code::kIo, "the dispatcher at " + path + " did not answer within 10 s");
    if (!raw->welcomed) return connect_error(raw->connect_failure, path, raw->close_reason);
    return client;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::system_error& e) {
    return Status(Code::kIo, std::string("cannot start the client thread: ") + e.what());
  }
}

Client::~Client() {
  if (pid_ != ::getpid()) {
    // A forked child: the connection and its thread are the parent's (its
    // sockets were closed here at the fork). The parent's state is left as
    // it is (never freed here), and the thread handle is let go without
    // joining a thread that does not exist here.
    Impl* impl = impl_.release();
    if (impl->io.joinable()) new std::thread(std::move(impl->io));  // NOLINT: deliberately never freed
    return;
  }
  KURA_CHECK(!impl_->on_reader_thread());  // destroyed from its own completion callback
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->kick();
  if (impl_->io.joinable()) impl_->io.join();
}

Result<TaskId> Client::submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    return impl_->submit(call, options, 0);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::optional<TaskId>> Client::try_submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    if (impl_->on_reader_thread()) return from_callback("try_submit()");
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(payload, kFlagTry, FrameType::kSubmit, false, 0));
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return impl_->state_of(id) != Impl::State::kSent; });
    if (impl_->state_of(id) == Impl::State::kFull) {
      impl_->tasks.erase(id);
      return std::optional<TaskId>();
    }
    return std::optional<TaskId>(id);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

TaskResult Client::wait(TaskId id) noexcept {
  try {
    return *impl_->wait_one(0, id, std::nullopt);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::optional<TaskResult> Client::wait_for(TaskId id, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_one(0, id, Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::pair<TaskId, TaskResult> Client::wait_any() noexcept {
  try {
    return *impl_->wait_any(0, nullptr, std::nullopt);
  } catch (const std::bad_alloc&) {
    return {0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::pair<TaskId, TaskResult> Client::wait_any(std::span<const TaskId> ids) noexcept {
  try {
    return *impl_->wait_any(0, &ids, std::nullopt);
  } catch (const std::bad_alloc&) {
    return {0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::optional<std::pair<TaskId, TaskResult>> Client::wait_any_for(
    std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_any(0, &ids, Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::vector<TaskResult> Client::wait_all(std::span<const TaskId> ids) noexcept {
  std::vector<TaskResult> out;
  try {
    out.reserve(ids.size());
    for (TaskId id : ids) out.push_back(wait(id));
  } catch (const std::bad_alloc&) {
    out.clear();
  }
  return out;
}

Status Client::cancel(TaskId id) noexcept {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed) return impl_->disconnected();
    auto it = impl_->tasks.find(id);
    if (it == impl_->tasks.end() || it->second.state == Impl::State::kDone) return Status::ok();
  }
  return impl_->write_frame(FrameType::kCancel, 0, id, nullptr);
}

Result<MapResult> Client::map(const std::string& fn, std::span<const std::vector<Arg>> inputs,
                              const TaskOptions& options,
                              const std::function<void(std::size_t, std::size_t)>& progress) noexcept {
  if (impl_->on_reader_thread()) return from_callback("map()");
  Impl& im = *impl_;
  const std::uint64_t reservation = im.reserve();
  // However map ends, it lets go of its tasks (results not taken are dropped).
  struct Release {
    Impl& im;
    std::uint64_t reservation;
    ~Release() { im.release(reservation); }
  } release{im, reservation};
  try {
    const std::size_t total = inputs.size();
    MapResult out;
    out.results.resize(total);
    std::unordered_map<TaskId, std::size_t> index;                           // in flight -> input
    std::deque<std::pair<std::size_t, std::shared_ptr<const Bytes>>> ready;  // encoded, not sent yet
    std::size_t next = 0, done = 0;
    bool stop = false;
    auto not_run = [] { return TaskResult(Outcome::kCancelled, "not run: an earlier task failed"); };
    // Input `i` ended with `r`, which is not ok: the first such stops the map.
    auto fail_at = [&](std::size_t i, TaskResult r) {
      out.results[i] = std::move(r);
      ++done;
      if (stop) return;
      stop = true;
      out.failed = i;
      for (const auto& [other, j] : index) (void)im.write_frame(FrameType::kCancel, 0, other, nullptr);
      for (const auto& [j, payload] : ready) {
        out.results[j] = not_run();
        ++done;
      }
      ready.clear();
      for (; next < total; ++next, ++done) out.results[next] = not_run();
    };
    while (done < total) {
      // Fill the window, and send what may be sent now, in one write.
      while (!stop && next < total && index.size() + ready.size() < kMapWindow) {
        auto payload = im.encode(Call{fn, inputs[next]}, options);
        const std::size_t i = next++;
        if (!payload) {
          fail_at(i, TaskResult(Outcome::kError, payload.status().message()));
          break;
        }
        ready.emplace_back(i, std::move(payload).value());
      }
      if (!ready.empty()) {
        auto ids = im.start_many(ready, reservation);
        if (!ids) {
          for (const auto& [id, j] : index) (void)im.write_frame(FrameType::kCancel, 0, id, nullptr);
          return ids.status();
        }
        for (TaskId id : *ids) {
          index[id] = ready.front().first;
          ready.pop_front();
        }
      }
      if (done == total) break;
      // Wait for results, or for room to send more.
      std::vector<std::pair<std::size_t, TaskResult>> arrived;
      {
        std::unique_lock<std::mutex> lock(im.mu);
        auto any_arrived = [&] {
          for (TaskId a : im.arrived)
            if (index.count(a) != 0) return true;
          return false;
        };
        im.cv.wait(lock, [&] { return any_arrived() || (!ready.empty() && (im.may_send() || im.closed)); });
        for (auto a = im.arrived.begin(); a != im.arrived.end();) {
          auto hit = index.find(*a);
          if (hit == index.end()) {
            ++a;
            continue;
          }
          auto t = im.tasks.find(*a);
          arrived.emplace_back(hit->second, std::move(t->second.result));
          im.tasks.erase(t);
          index.erase(hit);
          a = im.arrived.erase(a);
        }
      }
      for (auto& [i, r] : arrived) {
        if (!r.ok()) {
          fail_at(i, std::move(r));
        } else {
          out.results[i] = std::move(r);
          ++done;
        }
      }
      if (progress && !arrived.empty()) progress(done, total);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status Client::everywhere(const Call& call) noexcept {
  try {
    if (impl_->on_reader_thread()) return from_callback("everywhere()");
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, TaskOptions{}));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(payload, 0, FrameType::kEverywhere, true, 0));
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return impl_->state_of(id) == Impl::State::kDone; });
    TaskResult r = impl_->take(id);
    if (r.ok()) return Status::ok();
    if (r.outcome() == Outcome::kDisconnected)
      return Status(Code::kIo, "everywhere(" + call.fn + "): " + r.message());
    return invalid_argument("everywhere(" + call.fn + ") failed on a worker: " + r.message());
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<DispatcherStatus> Client::status() noexcept {
  try {
    if (impl_->on_reader_thread()) return from_callback("status()");
    std::uint64_t id;
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      if (impl_->closed) return impl_->disconnected();
      id = impl_->next_id++;
      impl_->queries[id];
    }
    Status s = impl_->write_frame(FrameType::kStatusQuery, 0, id, nullptr);
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (!s) {
      impl_->queries.erase(id);
      return s;
    }
    // Looked up each time: other queries come and go meanwhile.
    impl_->cv.wait(lock, [&] { return impl_->queries.find(id)->second.has_value(); });
    auto it = impl_->queries.find(id);
    Result<DispatcherStatus> r = std::move(*it->second);
    impl_->queries.erase(it);
    return r;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void Client::on_complete(std::function<void(TaskId)> callback) noexcept {
  std::lock_guard<std::mutex> lock(impl_->callback_mu);
  impl_->callback = std::move(callback);
}

int Client::completion_fd() const noexcept {
  return impl_->efd;
}
std::uint64_t Client::owner() const noexcept {
  return impl_->owner;
}
std::uint64_t Client::bytes_sent() const noexcept {
  return impl_->sent.load();
}
std::uint64_t Client::bytes_received() const noexcept {
  return impl_->received.load();
}

bool Client::on_reader_thread() const noexcept {
  return impl_->on_reader_thread();
}

std::uint64_t Client::reserve() noexcept {
  return impl_->reserve();
}

void Client::release(std::uint64_t reservation) noexcept {
  try {
    impl_->release(reservation);
  } catch (const std::bad_alloc&) {
    // The dropped results could not be gathered: they stay until the Client goes.
  }
}

Result<TaskId> Client::submit_reserved(std::uint64_t reservation, const Call& call,
                                       const TaskOptions& options) noexcept {
  try {
    return impl_->submit(call, options, reservation);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

TaskResult Client::wait_reserved(std::uint64_t reservation, TaskId id) noexcept {
  try {
    return *impl_->wait_one(reservation, id, std::nullopt);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::optional<std::pair<TaskId, TaskResult>> Client::wait_any_reserved_for(
    std::uint64_t reservation, std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_any(reservation, &ids, Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, "out of memory")};
  }
}

}  // namespace kura::ipc
