#include "kura/ipc/client.hpp"

#include <poll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <unistd.h>

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
#include <unordered_set>

#include "kura/ipc/dispatcher.hpp"
#include "kura/shm/owner.hpp"
#include "message_internal.hpp"
#include "task_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

namespace {

// How long connect() waits for the dispatcher's welcome.
constexpr auto kConnectTimeout = std::chrono::seconds(10);
// Tasks map() keeps in flight at once.
constexpr std::size_t kMapWindow = 256;

}  // namespace

struct Client::Impl {
  enum class State { kSent, kQueued, kFull, kDone };
  struct Task {
    State state = State::kSent;
    bool setup = false;  // an everywhere() call, not handed out by wait_any
    TaskResult result;
  };
  uv_loop_t loop{};
  uv_async_t wake{};
  std::thread io;
  detail::Connection* conn = nullptr;  // the loop thread's: it reads
  std::uint64_t owner = 0;
  int efd = -1;
  // Calling threads write frames themselves, on a descriptor of their own
  // for the socket (a dup, so that it stays valid whatever the loop does),
  // one frame at a time.
  int write_fd = -1;
  std::mutex write_mu;
  std::atomic<std::uint64_t> sent{0}, received{0};

  std::mutex mu;
  std::condition_variable cv;
  bool welcomed = false;
  bool closed = false;
  std::string close_reason;
  Code close_code = Code::kOk;  // the code of the status the connection ended with
  bool stopping = false;
  std::uint32_t frame_limit = kDefaultFrameLimit;
  std::uint64_t queue_cap = 0;
  TaskId next_id = 1;
  std::unordered_map<TaskId, Task> tasks;
  std::deque<TaskId> arrived;  // ended and not yet taken, in arrival order
  std::unordered_map<std::uint64_t, std::optional<Result<DispatcherStatus>>> queries;
  // The completion callback has a mutex of its own: taking `mu` again right
  // after waking a waiter would make the waiter sleep once more on it.
  std::mutex callback_mu;
  std::function<void(TaskId)> callback;  // under callback_mu

  ~Impl() {
    if (efd >= 0) ::close(efd);
    if (write_fd >= 0) ::close(write_fd);
  }

  // --- the loop thread ---------------------------------------------------------------

  void loop_main(const detail::Endpoint& endpoint) {
    detail::connect(&loop, endpoint, [this](Result<std::unique_ptr<detail::Stream>> s) {
      if (!s) return closed_with(s.status());
      conn = detail::Connection::adopt(std::move(s).value(), kDefaultFrameLimit, UINT64_MAX);
      Status started = conn->start(
          detail::Connection::Callbacks{[this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
                                        [this](detail::Connection&, detail::CloseReason, const Status& why) {
                                          conn = nullptr;
                                          closed_with(why);
                                        }});
      if (!started) return conn->close(detail::CloseReason::kIo, started);
      auto hello = detail::encode_hello(detail::Hello{"client", ::getpid(), owner});
      if (!hello) return conn->close(detail::CloseReason::kLocal, hello.status());
      send_now(FrameType::kHello, 0, 0, std::make_shared<const Bytes>(std::move(hello).value()));
    });
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
  }

  void send_now(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload) {
    if (conn == nullptr) return;
    sent += kFrameHeaderSize + (payload ? payload->size() : 0);
    conn->send(type, flags, id, std::move(payload));
  }

  void on_wake() {
    bool stop;
    {
      std::lock_guard<std::mutex> lock(mu);
      stop = stopping;
    }
    if (stop) {
      if (conn != nullptr)
        conn->close(detail::CloseReason::kLocal, Status(Code::kIo, "the client disconnected"));
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(&wake)))
        uv_close(reinterpret_cast<uv_handle_t*>(&wake), nullptr);
    }
  }

  // The connection is gone: every pending task ends as disconnected.
  void closed_with(const Status& why) {
    std::vector<TaskId> ended;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return;
      closed = true;
      close_reason = why.message();
      close_code = why.code();
      // The write side goes too (the dup would keep the socket open).
      if (write_fd >= 0) ::shutdown(write_fd, SHUT_RDWR);
      for (auto& [id, t] : tasks) {
        if (t.state == State::kDone) continue;
        t.state = State::kDone;
        t.result =
            TaskResult(Outcome::kDisconnected, "lost the connection to the dispatcher: " + close_reason);
        if (!t.setup) arrived.push_back(id);
        ended.push_back(id);
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
        if (!w) return conn->close(detail::CloseReason::kProtocol, w.status());
        conn->set_read_limit(std::max(w->frame_limit, kDefaultFrameLimit));
        const int copy = ::fcntl(conn->fd(), F_DUPFD_CLOEXEC, 0);
        if (copy < 0)
          return conn->close(detail::CloseReason::kLocal, Status(Code::kIo, "cannot duplicate the socket"));
        {
          std::lock_guard<std::mutex> lock(mu);
          welcomed = true;
          frame_limit = w->frame_limit;
          queue_cap = w->queue_cap;
          write_fd = copy;
        }
        cv.notify_all();
        return;
      }
      case FrameType::kQueued:
      case FrameType::kFull: {
        {
          std::lock_guard<std::mutex> lock(mu);
          auto it = tasks.find(id);
          if (it != tasks.end() && it->second.state == State::kSent)
            it->second.state = f.header.type == FrameType::kQueued ? State::kQueued : State::kFull;
        }
        cv.notify_all();
        return;
      }
      case FrameType::kResult: {
        auto payload = std::make_shared<const Bytes>(std::move(f.payload));
        TaskResult r = make_result(payload);
        {
          std::lock_guard<std::mutex> lock(mu);
          auto it = tasks.find(id);
          if (it == tasks.end() || it->second.state == State::kDone)
            return;  // nobody asked: r drops its region
          it->second.state = State::kDone;
          it->second.result = std::move(r);
          if (!it->second.setup) arrived.push_back(id);
        }
        cv.notify_all();
        notify(id);
        return;
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
      default:
        return conn->close(detail::CloseReason::kProtocol, corrupt("the dispatcher sent a frame of type " +
                                                                   std::to_string(int(f.header.type))));
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

  // --- user threads ----------------------------------------------------------------------

  Status disconnected() { return Status(Code::kIo, "not connected to the dispatcher: " + close_reason); }

  void kick() { uv_async_send(&wake); }

  // Writes one frame from the calling thread, waiting while the socket is
  // full (the dispatcher reads a client's socket only while it has room for
  // its tasks: that is the backpressure). Errors: Io.
  struct OutFrame {
    FrameType type;
    std::uint16_t flags;
    std::uint64_t id;
    const Bytes* payload;  // may be null
  };

  Status write_frame(FrameType type, std::uint16_t flags, std::uint64_t id, const Bytes* payload) {
    const OutFrame f{type, flags, id, payload};
    return write_frames(std::span<const OutFrame>(&f, 1));
  }

  // Writes frames in order with as few system calls as the socket allows.
  Status write_frames(std::span<const OutFrame> frames) {
    std::vector<std::array<std::byte, kFrameHeaderSize>> headers(frames.size());
    std::vector<iovec> iov;
    iov.reserve(2 * frames.size());
    std::size_t total = 0;
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const OutFrame& f = frames[i];
      const auto length = f.payload ? static_cast<std::uint32_t>(f.payload->size()) : 0u;
      encode_frame_header(FrameHeader{f.type, f.flags, f.id, length},
                          std::span<std::byte, kFrameHeaderSize>(headers[i].data(), kFrameHeaderSize));
      iov.push_back({headers[i].data(), kFrameHeaderSize});
      if (length > 0) iov.push_back({const_cast<std::byte*>(f.payload->data()), length});
      total += kFrameHeaderSize + length;
    }
    std::lock_guard<std::mutex> lock(write_mu);
    std::size_t first = 0;
    while (total > 0) {
      msghdr msg{};
      msg.msg_iov = iov.data() + first;
      msg.msg_iovlen = std::min<std::size_t>(iov.size() - first, IOV_MAX);
      ssize_t w = ::sendmsg(write_fd, &msg, MSG_NOSIGNAL);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN) {
          pollfd p{write_fd, POLLOUT, 0};
          ::poll(&p, 1, -1);
          continue;
        }
        return Status(Code::kIo, std::string("cannot write to the dispatcher: ") + std::strerror(errno));
      }
      sent += static_cast<std::uint64_t>(w);
      total -= static_cast<std::size_t>(w);
      while (w > 0) {
        const std::size_t take = std::min<std::size_t>(iov[first].iov_len, static_cast<std::size_t>(w));
        iov[first].iov_base = static_cast<char*>(iov[first].iov_base) + take;
        iov[first].iov_len -= take;
        w -= static_cast<ssize_t>(take);
        if (iov[first].iov_len == 0) ++first;
      }
    }
    return Status::ok();
  }

  // Registers new tasks and writes their submits in one go; returns their
  // ids, in order.
  Result<std::vector<TaskId>> start_many(const std::vector<std::shared_ptr<const Bytes>>& payloads) {
    std::vector<TaskId> ids;
    std::vector<OutFrame> frames;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return disconnected();
      for (const auto& p : payloads) {
        if (p->size() > frame_limit)
          return invalid_argument("the task is " + human_bytes(p->size()) + ", over the frame limit of " +
                                  human_bytes(frame_limit) + ": share large values and pass their names");
      }
      for (const auto& p : payloads) {
        const TaskId id = next_id++;
        tasks[id];
        ids.push_back(id);
        frames.push_back(OutFrame{FrameType::kSubmit, 0, id, p.get()});
      }
    }
    Status s = write_frames(frames);
    if (!s) {
      std::lock_guard<std::mutex> lock(mu);
      for (TaskId id : ids) tasks.erase(id);
      return s;
    }
    return ids;
  }

  // Registers a new task and writes its frame; returns its id. The frame is
  // written outside `mu`, so results keep arriving meanwhile.
  Result<TaskId> start(const Bytes& payload, std::uint16_t flags, FrameType type, bool setup) {
    TaskId id;
    {
      std::lock_guard<std::mutex> lock(mu);
      if (closed) return disconnected();
      if (payload.size() > frame_limit)
        return invalid_argument("the task is " + human_bytes(payload.size()) + ", over the frame limit of " +
                                human_bytes(frame_limit) + ": share large values and pass their names");
      id = next_id++;
      tasks[id].setup = setup;
    }
    Status s = write_frame(type, flags, id, &payload);
    if (!s) {
      std::lock_guard<std::mutex> lock(mu);
      tasks.erase(id);
      return s;
    }
    return id;
  }

  Result<std::shared_ptr<const Bytes>> encode(const Call& call, const TaskOptions& options) {
    KURA_ASSIGN_OR_RETURN(Bytes b, detail::encode_submit(call, owner, options));
    return std::make_shared<const Bytes>(std::move(b));
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
};

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)), pid_(::getpid()) {}

Result<std::unique_ptr<Client>> Client::connect(const std::string& socket_path) noexcept {
  try {
    std::string path = socket_path;
    if (path.empty()) {
      KURA_ASSIGN_OR_RETURN(path, default_socket_path());
    }
    KURA_ASSIGN_OR_RETURN(detail::Endpoint endpoint, detail::parse_endpoint(path));
    detail::ignore_sigpipe();
    auto impl = std::make_unique<Impl>();
    KURA_ASSIGN_OR_RETURN(impl->owner, shm::process_owner());
    impl->efd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (impl->efd < 0) return Status(Code::kIo, "cannot create an eventfd for completions");
    if (int rc = uv_loop_init(&impl->loop); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    impl->loop.data = impl.get();
    uv_async_init(&impl->loop, &impl->wake,
                  [](uv_async_t* a) { static_cast<Impl*>(a->loop->data)->on_wake(); });
    Impl* raw = impl.get();
    impl->io = std::thread([raw, endpoint] { raw->loop_main(endpoint); });
    std::unique_ptr<Client> client(new Client(std::move(impl)));
    std::unique_lock<std::mutex> lock(raw->mu);
    if (!raw->cv.wait_for(lock, kConnectTimeout, [raw] { return raw->welcomed || raw->closed; }))
      return Status(Code::kIo, "the dispatcher at " + path + " did not answer within 10 s");
    if (!raw->welcomed) {
      Status s = raw->close_code == Code::kNotFound
                     ? Status(Code::kNotFound, raw->close_reason)
                     : Status(Code::kIo, "the dispatcher refused the connection: " + raw->close_reason);
      return s;
    }
    return client;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::system_error& e) {
    return Status(Code::kIo, std::string("cannot start the client thread: ") + e.what());
  }
}

Client::~Client() {
  if (pid_ != ::getpid()) {
    // A forked child: the connection and its thread are the parent's. The
    // parent's state is left as it is (never freed here), and the thread
    // handle is let go without joining a thread that does not exist here.
    Impl* impl = impl_.release();
    if (impl->io.joinable()) new std::thread(std::move(impl->io));  // NOLINT: deliberately never freed
    return;
  }
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
    if (impl_->write_fd >= 0) ::shutdown(impl_->write_fd, SHUT_RDWR);
  }
  impl_->kick();
  if (impl_->io.joinable()) impl_->io.join();
}

Result<TaskId> Client::submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(*payload, 0, FrameType::kSubmit, false));
    std::unique_lock<std::mutex> lock(impl_->mu);
    // Without a cap every task is in the queue as soon as it arrives;
    // with one, wait until the dispatcher says it is.
    if (impl_->queue_cap > 0) impl_->cv.wait(lock, [&] { return impl_->state_of(id) != Impl::State::kSent; });
    return id;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::optional<TaskId>> Client::try_submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(*payload, kFlagTry, FrameType::kSubmit, false));
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
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto it = impl_->tasks.find(id);
  if (it == impl_->tasks.end() || it->second.setup)
    return TaskResult(Outcome::kError, "no pending task " + std::to_string(id));
  // Another thread may take it first (a wait or wait_any of its own).
  impl_->cv.wait(lock, [&] { return impl_->state_of(id) == Impl::State::kDone; });
  if (impl_->tasks.count(id) == 0)
    return TaskResult(Outcome::kError, "task " + std::to_string(id) + " was taken by another wait");
  return impl_->take(id);
}

std::optional<TaskResult> Client::wait_for(TaskId id, std::chrono::milliseconds timeout) noexcept {
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto it = impl_->tasks.find(id);
  if (it == impl_->tasks.end() || it->second.setup)
    return TaskResult(Outcome::kError, "no pending task " + std::to_string(id));
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->state_of(id) == Impl::State::kDone; }))
    return std::nullopt;
  if (impl_->tasks.count(id) == 0)
    return TaskResult(Outcome::kError, "task " + std::to_string(id) + " was taken by another wait");
  return impl_->take(id);
}

std::pair<TaskId, TaskResult> Client::wait_any() noexcept {
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto pending = [&] {
    for (const auto& [id, t] : impl_->tasks)
      if (!t.setup) return true;
    return false;
  };
  if (!pending()) return {0, TaskResult(Outcome::kError, "no task is pending")};
  // Another thread may take the pending tasks meanwhile: then none is left.
  impl_->cv.wait(lock, [&] { return !impl_->arrived.empty() || !pending(); });
  if (impl_->arrived.empty()) return {0, TaskResult(Outcome::kError, "no task is pending")};
  const TaskId id = impl_->arrived.front();
  return {id, impl_->take(id)};
}

std::pair<TaskId, TaskResult> Client::wait_any(std::span<const TaskId> ids) noexcept {
  for (;;) {
    auto got = wait_any_for(ids, std::chrono::hours(24));
    if (got) return std::move(*got);
  }
}

std::optional<std::pair<TaskId, TaskResult>> Client::wait_any_for(
    std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept {
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto mine = [&](TaskId id) { return std::find(ids.begin(), ids.end(), id) != ids.end(); };
  auto pending = [&] {
    for (TaskId id : ids) {
      auto it = impl_->tasks.find(id);
      if (it != impl_->tasks.end() && !it->second.setup) return true;
    }
    return false;
  };
  auto none_pending = [] {
    return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, "none of the tasks is pending")};
  };
  if (!pending()) return none_pending();
  TaskId found = 0;
  // Another thread may take the tasks meanwhile: then none is left.
  const bool arrived = impl_->cv.wait_for(lock, timeout, [&] {
    for (TaskId a : impl_->arrived)
      if (mine(a)) {
        found = a;
        return true;
      }
    return !pending();
  });
  if (!arrived) return std::nullopt;
  if (found == 0) return none_pending();
  return std::pair<TaskId, TaskResult>{found, impl_->take(found)};
}

std::vector<TaskResult> Client::wait_all(std::span<const TaskId> ids) noexcept {
  std::vector<TaskResult> out;
  out.reserve(ids.size());
  for (TaskId id : ids) out.push_back(wait(id));
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
  try {
    const std::size_t total = inputs.size();
    MapResult out;
    out.results.resize(total);
    std::unordered_map<TaskId, std::size_t> index;  // in flight
    std::size_t next = 0, done = 0;
    bool stop = false;
    auto fail_at = [&](std::size_t i, TaskResult r) {
      out.results[i] = std::move(r);
      ++done;
      if (!stop) {
        stop = true;
        out.failed = i;
        for (const auto& [other, j] : index) (void)impl_->write_frame(FrameType::kCancel, 0, other, nullptr);
      }
    };
    while (done < total) {
      // Keep the window full, unless a failure stopped the map: the new
      // tasks go out in one write.
      std::vector<std::shared_ptr<const Bytes>> payloads;
      std::vector<std::size_t> positions;
      while (!stop && next < total && index.size() + payloads.size() < kMapWindow) {
        auto payload = impl_->encode(Call{fn, inputs[next]}, options);
        if (!payload) {
          fail_at(next++, TaskResult(Outcome::kError, payload.status().message()));
          break;
        }
        payloads.push_back(std::move(payload).value());
        positions.push_back(next++);
      }
      if (!payloads.empty()) {
        KURA_ASSIGN_OR_RETURN(std::vector<TaskId> ids, impl_->start_many(payloads));
        for (std::size_t k = 0; k < ids.size(); ++k) index[ids[k]] = positions[k];
      }
      if (stop && next < total) {
        for (; next < total; ++next, ++done)
          out.results[next] = TaskResult(Outcome::kCancelled, "not run: an earlier task failed");
        continue;
      }
      if (index.empty()) break;
      std::vector<std::pair<std::size_t, TaskResult>> arrived;
      {
        std::unique_lock<std::mutex> lock(impl_->mu);
        impl_->cv.wait(lock, [&] {
          for (TaskId a : impl_->arrived)
            if (index.count(a) != 0) return true;
          return false;
        });
        for (auto a = impl_->arrived.begin(); a != impl_->arrived.end();) {
          auto hit = index.find(*a);
          if (hit == index.end()) {
            ++a;
            continue;
          }
          auto t = impl_->tasks.find(*a);
          arrived.emplace_back(hit->second, std::move(t->second.result));
          impl_->tasks.erase(t);
          index.erase(hit);
          a = impl_->arrived.erase(a);
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
      if (progress) progress(done, total);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status Client::everywhere(const Call& call) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, TaskOptions{}));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(*payload, 0, FrameType::kEverywhere, true));
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->cv.wait(lock, [&] { return impl_->tasks.at(id).state == Impl::State::kDone; });
    TaskResult r = impl_->take(id);
    if (r.ok()) return Status::ok();
    return Status(Code::kIo, "everywhere(" + call.fn + "): " + r.describe());
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<DispatcherStatus> Client::status() noexcept {
  try {
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
    impl_->cv.wait(lock, [&] { return impl_->queries.at(id).has_value(); });
    Result<DispatcherStatus> r = std::move(*impl_->queries.at(id));
    impl_->queries.erase(id);
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

}  // namespace kura::ipc
