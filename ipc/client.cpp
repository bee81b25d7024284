#include "kura/ipc/client.hpp"

#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <condition_variable>
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
  struct Outgoing {
    FrameType type;
    std::uint16_t flags;
    std::uint64_t id;
    std::shared_ptr<const Bytes> payload;
  };

  uv_loop_t loop{};
  uv_async_t wake{};
  std::thread io;
  detail::Connection* conn = nullptr;  // the loop thread's
  std::uint64_t owner = 0;
  int efd = -1;
  std::atomic<std::uint64_t> sent{0}, received{0};

  std::mutex mu;
  std::condition_variable cv;
  bool welcomed = false;
  bool closed = false;
  std::string close_reason;
  bool stopping = false;
  std::uint32_t frame_limit = kDefaultFrameLimit;
  std::deque<Outgoing> outbox;
  TaskId next_id = 1;
  std::unordered_map<TaskId, Task> tasks;
  std::deque<TaskId> arrived;  // ended and not yet taken, in arrival order
  std::unordered_map<std::uint64_t, std::optional<Result<DispatcherStatus>>> queries;
  std::function<void(TaskId)> callback;

  ~Impl() {
    if (efd >= 0) ::close(efd);
  }

  // --- the loop thread ---------------------------------------------------------------

  void loop_main(const std::string& path) {
    detail::connect_unix(&loop, path, [this](Result<uv_stream_t*> s) {
      if (!s) return closed_with(s.status());
      conn = detail::Connection::adopt(*s, kDefaultFrameLimit, UINT64_MAX);
      Status started = conn->start(
          detail::Connection::Callbacks{[this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
                                        [this](detail::Connection&, const Status& why) {
                                          conn = nullptr;
                                          closed_with(why);
                                        }});
      if (!started) return conn->close(started);
      auto hello = detail::encode_hello(detail::Hello{"client", ::getpid(), owner});
      if (!hello) return conn->close(hello.status());
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
    std::deque<Outgoing> out;
    bool stop;
    {
      std::lock_guard<std::mutex> lock(mu);
      out.swap(outbox);
      stop = stopping;
    }
    for (Outgoing& o : out) send_now(o.type, o.flags, o.id, std::move(o.payload));
    if (stop) {
      if (conn != nullptr) conn->close(Status(Code::kIo, "the client disconnected"));
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
      std::lock_guard<std::mutex> lock(mu);
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
        if (!w) return conn->close(w.status());
        conn->set_read_limit(std::max(w->frame_limit, kDefaultFrameLimit));
        {
          std::lock_guard<std::mutex> lock(mu);
          welcomed = true;
          frame_limit = w->frame_limit;
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
        return conn->close(
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

  // --- user threads ----------------------------------------------------------------------

  void push(Outgoing o) {
    outbox.push_back(std::move(o));  // REQUIRES: mu held
  }

  void kick() { uv_async_send(&wake); }

  Status disconnected() { return Status(Code::kIo, "not connected to the dispatcher: " + close_reason); }

  // Queues a submit without waiting for its answer. REQUIRES: mu held.
  Result<TaskId> submit_locked(std::shared_ptr<const Bytes> payload, std::uint16_t flags, FrameType type,
                               bool setup) {
    if (closed) return disconnected();
    if (payload->size() > frame_limit)
      return invalid_argument("the task is " + human_bytes(payload->size()) + ", over the frame limit of " +
                              human_bytes(frame_limit) + ": share large values and pass their names");
    const TaskId id = next_id++;
    Task& t = tasks[id];
    t.setup = setup;
    push(Outgoing{type, flags, id, std::move(payload)});
    return id;
  }

  Result<std::shared_ptr<const Bytes>> encode(const Call& call, const TaskOptions& options) {
    KURA_ASSIGN_OR_RETURN(Bytes b, detail::encode_submit(call, owner, options));
    return std::make_shared<const Bytes>(std::move(b));
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

Client::Client(std::unique_ptr<Impl> impl) noexcept : impl_(std::move(impl)) {}

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
    if (impl->efd < 0) return Status(Code::kIo, "cannot create an eventfd for completions");
    if (int rc = uv_loop_init(&impl->loop); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    impl->loop.data = impl.get();
    uv_async_init(&impl->loop, &impl->wake,
                  [](uv_async_t* a) { static_cast<Impl*>(a->loop->data)->on_wake(); });
    Impl* raw = impl.get();
    impl->io = std::thread([raw, path] { raw->loop_main(path); });
    std::unique_ptr<Client> client(new Client(std::move(impl)));
    std::unique_lock<std::mutex> lock(raw->mu);
    if (!raw->cv.wait_for(lock, kConnectTimeout, [raw] { return raw->welcomed || raw->closed; }))
      return Status(Code::kIo, "the dispatcher at " + path + " did not answer within 10 s");
    if (!raw->welcomed) {
      Status s = raw->close_reason.find("cannot connect") != std::string::npos
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
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    impl_->stopping = true;
  }
  impl_->kick();
  if (impl_->io.joinable()) impl_->io.join();
}

Result<TaskId> Client::submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    std::unique_lock<std::mutex> lock(impl_->mu);
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->submit_locked(std::move(payload), 0, FrameType::kSubmit, false));
    impl_->kick();
    impl_->cv.wait(lock, [&] { return impl_->tasks.at(id).state != Impl::State::kSent; });
    return id;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::optional<TaskId>> Client::try_submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    std::unique_lock<std::mutex> lock(impl_->mu);
    KURA_ASSIGN_OR_RETURN(TaskId id,
                          impl_->submit_locked(std::move(payload), kFlagTry, FrameType::kSubmit, false));
    impl_->kick();
    impl_->cv.wait(lock, [&] { return impl_->tasks.at(id).state != Impl::State::kSent; });
    if (impl_->tasks.at(id).state == Impl::State::kFull) {
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
  impl_->cv.wait(lock, [&] { return impl_->tasks.at(id).state == Impl::State::kDone; });
  return impl_->take(id);
}

std::optional<TaskResult> Client::wait_for(TaskId id, std::chrono::milliseconds timeout) noexcept {
  std::unique_lock<std::mutex> lock(impl_->mu);
  auto it = impl_->tasks.find(id);
  if (it == impl_->tasks.end() || it->second.setup)
    return TaskResult(Outcome::kError, "no pending task " + std::to_string(id));
  if (!impl_->cv.wait_for(lock, timeout, [&] { return impl_->tasks.at(id).state == Impl::State::kDone; }))
    return std::nullopt;
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
  impl_->cv.wait(lock, [&] { return !impl_->arrived.empty(); });
  const TaskId id = impl_->arrived.front();
  return {id, impl_->take(id)};
}

std::vector<TaskResult> Client::wait_all(std::span<const TaskId> ids) noexcept {
  std::vector<TaskResult> out;
  out.reserve(ids.size());
  for (TaskId id : ids) out.push_back(wait(id));
  return out;
}

Status Client::cancel(TaskId id) noexcept {
  try {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed) return impl_->disconnected();
    auto it = impl_->tasks.find(id);
    if (it == impl_->tasks.end() || it->second.state == Impl::State::kDone) return Status::ok();
    impl_->push(Impl::Outgoing{FrameType::kCancel, 0, id, nullptr});
    impl_->kick();
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<MapResult> Client::map(const std::string& fn, std::span<const std::vector<Arg>> inputs,
                              const TaskOptions& options,
                              const std::function<void(std::size_t, std::size_t)>& progress) noexcept {
  try {
    const std::size_t total = inputs.size();
    MapResult out;
    out.results.resize(total);
    std::vector<TaskId> ids(total, 0);
    std::unordered_map<TaskId, std::size_t> index;
    std::size_t next = 0, done = 0;
    bool stop = false;
    std::unique_lock<std::mutex> lock(impl_->mu);
    while (done < total) {
      // Keep the window full, unless a failure stopped the map.
      while (!stop && next < total && index.size() < kMapWindow) {
        lock.unlock();
        auto payload = impl_->encode(Call{fn, inputs[next]}, options);
        lock.lock();
        if (!payload) {
          stop = true;
          out.failed = next;
          out.results[next] = TaskResult(Outcome::kError, payload.status().message());
          ++done;
          ++next;
          break;
        }
        auto id = impl_->submit_locked(std::move(payload).value(), 0, FrameType::kSubmit, false);
        if (!id) return id.status();
        ids[next] = *id;
        index[*id] = next;
        ++next;
      }
      impl_->kick();
      if (stop && next < total) {
        // Never submitted: they end as cancelled.
        for (; next < total; ++next) {
          out.results[next] = TaskResult(Outcome::kCancelled, "not run: an earlier task failed");
          ++done;
        }
        continue;
      }
      if (index.empty()) break;
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
        const TaskId id = *a;
        const std::size_t i = hit->second;
        index.erase(hit);
        a = impl_->arrived.erase(a);
        auto t = impl_->tasks.find(id);
        out.results[i] = std::move(t->second.result);
        impl_->tasks.erase(t);
        ++done;
        if (!out.results[i].ok() && !stop) {
          stop = true;
          out.failed = i;
          for (const auto& [other, j] : index)
            impl_->push(Impl::Outgoing{FrameType::kCancel, 0, other, nullptr});
          impl_->kick();
        }
      }
      if (progress) {
        lock.unlock();
        progress(done, total);
        lock.lock();
      }
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status Client::everywhere(const Call& call) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, TaskOptions{}));
    std::unique_lock<std::mutex> lock(impl_->mu);
    KURA_ASSIGN_OR_RETURN(TaskId id,
                          impl_->submit_locked(std::move(payload), 0, FrameType::kEverywhere, true));
    impl_->kick();
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
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (impl_->closed) return impl_->disconnected();
    const std::uint64_t id = impl_->next_id++;
    impl_->queries[id];
    impl_->push(Impl::Outgoing{FrameType::kStatusQuery, 0, id, nullptr});
    impl_->kick();
    impl_->cv.wait(lock, [&] { return impl_->queries.at(id).has_value(); });
    Result<DispatcherStatus> s = std::move(*impl_->queries.at(id));
    impl_->queries.erase(id);
    return s;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void Client::on_complete(std::function<void(TaskId)> callback) noexcept {
  std::lock_guard<std::mutex> lock(impl_->mu);
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
