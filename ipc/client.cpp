// The client's connection: connect(), the reader thread (the dispatcher's
// frames, results adopted, the end of the connection), destruction, and the
// completion callback and accessors.
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <new>

#include "client_internal.hpp"
#include "fork_guard.hpp"
#include "kura/core/name.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "task_internal.hpp"

namespace kura::ipc {

namespace {

// How long connect() waits for the dispatcher's welcome.
constexpr auto kConnectTimeout = std::chrono::seconds(10);
// How long a client that is being destroyed reads on, after it closed its
// side of the socket, for the dispatcher to close its side.
constexpr std::uint64_t kLingerMs = 2000;

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

}  // namespace

Client::Impl::~Impl() {
  if (efd >= 0) ::close(efd);
}

void Client::Impl::loop_main(const std::string& path) {
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

void Client::Impl::on_connected(Result<std::unique_ptr<detail::Stream>> s) {
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

void Client::Impl::send_now(FrameType type, std::uint16_t flags, std::uint64_t id,
                            std::shared_ptr<const Bytes> payload) {
  if (conn == nullptr) return;
  sent += kFrameHeaderSize + (payload ? payload->size() : 0);
  conn->send(type, flags, id, std::move(payload));
}

// Closes the connection from this side; its descriptor leaves the fork
// guard first (the Connection closes it at once).
void Client::Impl::close_connection(const Status& why) {
  if (conn_fd >= 0) {
    detail::forget_in_forked_child(conn_fd);
    conn_fd = -1;
  }
  conn->close(detail::CloseReason::kLocal, why);
}

void Client::Impl::on_connection_closed(const Status& why) {
  if (conn_fd >= 0) {
    detail::forget_in_forked_child(conn_fd);
    conn_fd = -1;
  }
  conn = nullptr;
  closed_with(why);
  finish_if_stopping();
}

void Client::Impl::on_wake() {
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
            impl->close_connection(Status(Code::kIo, "the dispatcher did not close the connection in time"));
        },
        kLingerMs, 0);
  } else if (conn != nullptr) {
    close_connection(Status(Code::kIo, "the client disconnected"));
  }
  finish_if_stopping();
}

// Once the client is being destroyed and the connection is gone, closes
// the loop's own handles, so that the loop ends.
void Client::Impl::finish_if_stopping() {
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
void Client::Impl::closed_with(const Status& why) {
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
  events.notify_all();
  for (TaskId id : ended) notify(id);
}

void Client::Impl::notify(TaskId id) {
  std::function<void(TaskId)> cb;
  {
    std::lock_guard<std::mutex> lock(callback_mu);
    cb = callback;
  }
  if (efd_used.load()) {
    signal_completions(1);
  } else {
    unsignalled.fetch_add(1);
    // completion_fd() may have been called since: what it did not see is
    // written here (each count is taken once, by one of the two).
    if (efd_used.load()) signal_completions(unsignalled.exchange(0));
  }
  if (cb) cb(id);
}

// Adds `n` to the completion eventfd (none: nothing).
void Client::Impl::signal_completions(std::uint64_t n) {
  if (n > 0) (void)!::write(efd, &n, sizeof n);
}

void Client::Impl::on_frame(Frame&& f) {
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
      events.notify_all();
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
      events.notify_all();
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
      if (wake_waiters) events.notify_all();
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
      events.notify_all();
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
TaskResult Client::Impl::make_result(const std::shared_ptr<const Bytes>& payload) {
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
void Client::Impl::drop_result(const std::shared_ptr<const Bytes>& payload) {
  auto msg = detail::decode_result(payload);
  if (!msg || msg->name.empty()) return;
  auto n = parse_name(msg->name);
  if (n && n->owner == owner) (void)shm::remove(msg->name);
}

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
    if (!raw->events.wait_until(lock, Impl::Clock::now() + kConnectTimeout,
                                [raw] { return raw->welcomed || raw->closed; }))
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

void Client::on_complete(std::function<void(TaskId)> callback) noexcept {
  std::lock_guard<std::mutex> lock(impl_->callback_mu);
  impl_->callback = std::move(callback);
}

int Client::completion_fd() const noexcept {
  if (!impl_->efd_used.exchange(true)) impl_->signal_completions(impl_->unsignalled.exchange(0));
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

}  // namespace kura::ipc
