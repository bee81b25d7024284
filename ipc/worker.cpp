#include "kura/ipc/worker.hpp"

#include <dlfcn.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <climits>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <string_view>
#include <thread>

#include "kura/core/builder.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/owner.hpp"
#include "message_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

void register_builtins(Registry& registry);  // builtins.cpp

namespace {

// The process's functions. Never destroyed (a worker may run until _exit).
class GlobalRegistry final : public Registry {
 public:
  void add(std::string name, Function fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    fns_[std::move(name)] = std::move(fn);
  }
  // A copy of the function called `name`, or an empty function.
  Function find(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fns_.find(name);
    return it == fns_.end() ? Function() : it->second;
  }
  std::string names() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [name, fn] : fns_) out += (out.empty() ? "" : ", ") + name;
    return out;
  }
  // The names, sorted (what a worker announces in its hello).
  std::vector<std::string> list() {
    std::lock_guard<std::mutex> lock(mu_);
    std::vector<std::string> out;
    out.reserve(fns_.size());
    for (const auto& [name, fn] : fns_) out.push_back(name);
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, Function> fns_;
};

GlobalRegistry& registry() {
  static GlobalRegistry* r = [] {
    auto* g = new GlobalRegistry;
    register_builtins(*g);
    return g;
  }();
  return *r;
}

}  // namespace

// Cancellation. The dispatcher sends a kCancel frame; the worker's loop,
// which stays free while a function runs on the executor thread, marks the
// task (TaskContext::cancelled polls the mark), wakes a sleeping
// TaskContext through an eventfd, and sends WorkerOptions::cancel_signal
// (kCancelSignal unless the host chose another) to the thread that runs
// functions (its value the task id) for code that does not poll: a handler
// of its own may act on it. One worker loop per process at a time.
namespace {

std::atomic<std::uint64_t> g_running{0};    // the task running now, 0 when idle
std::atomic<std::uint64_t> g_cancelled{0};  // the last task cancelled
int g_cancel_fd = -1;                       // eventfd written when the running task is cancelled
std::atomic<bool> g_cancel_fd_written{false};

// Marks task `id` cancelled and wakes its sleep. Async-signal-safe.
void mark_cancelled(std::uint64_t id) noexcept {
  g_cancelled.store(id);
  if (id != 0 && id == g_running.load() && g_cancel_fd >= 0) {
    const std::uint64_t one = 1;
    g_cancel_fd_written.store(true);
    (void)!::write(g_cancel_fd, &one, sizeof one);
  }
}

void on_cancel_signal(int, siginfo_t* info, void*) {
  mark_cancelled(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(info->si_value.sival_ptr)));
}

}  // namespace

struct TaskContext::Internals {
  std::optional<shm::Lease>* lease;  // held on first need

  static TaskContext make(std::vector<NodeView> args, std::vector<std::string> names, std::uint64_t owner,
                          bool want_inline, const Internals* in) {
    TaskContext c;
    c.args_ = std::move(args);
    c.names_ = std::move(names);
    c.owner_ = owner;
    c.inline_ = want_inline;
    c.in_ = in;
    return c;
  }
  static Result<const shm::Lease*> lease_of(TaskContext& c) {
    if (!*c.in_->lease) {
      KURA_ASSIGN_OR_RETURN(shm::Lease l, shm::Lease::hold(c.owner_));
      c.in_->lease->emplace(std::move(l));
    }
    return &**c.in_->lease;
  }
};

bool TaskContext::cancelled() const noexcept {
  const std::uint64_t running = g_running.load();
  return in_ != nullptr && running != 0 && g_cancelled.load() == running;
}

bool TaskContext::sleep_for(std::chrono::milliseconds d) const noexcept {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!cancelled()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (in_ == nullptr || g_cancel_fd < 0) {
      std::this_thread::sleep_for(left);
      return false;
    }
    pollfd p{g_cancel_fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), INT_MAX)));
  }
  return true;
}

Result<shm::Pending> TaskContext::result_region(const Value& layout) noexcept {
  auto lease = Internals::lease_of(*this);
  if (!lease) return lease.status();
  return shm::Pending::create(**lease, layout);
}

Status Worker::add(std::string name, Function fn) noexcept {
  if (name.empty()) return invalid_argument("a function needs a name");
  try {
    registry().add(std::move(name), std::move(fn));
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

namespace {

// One worker process's connection and loop. Functions run one at a time on
// an executor thread (or on the calling thread, with the loop on a thread of
// its own: WorkerOptions::run_on_calling_thread), so the loop stays free to
// answer the dispatcher while they run: it sends heartbeats, acts on cancels, and sees the
// dispatcher go away (the process then exits at once: a worker never
// outlives its dispatcher, and nobody wants the result).
class WorkerLoop {
 public:
  explicit WorkerLoop(const WorkerOptions& o) : options_(o) {
    if (!options_.log)
      options_.log = [](const std::string& line) { std::fprintf(stderr, "kura worker: %s\n", line.c_str()); };
  }

  Status run() {
    detail::ignore_sigpipe();
    for (const std::string& p : options_.plugins) KURA_RETURN_IF_ERROR(load_plugin(p));
    KURA_RETURN_IF_ERROR(install_cancel_handler());
    if (int rc = uv_loop_init(&loop_); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    loop_.data = this;
    uv_timer_init(&loop_, &heartbeat_);
    if (!options_.run_on_calling_thread) {
      executor_ = std::thread([this] { executor_main(); });
      executor_id_ = executor_.native_handle();
    } else {
      executor_id_ = ::pthread_self();
    }
    Status connected = Status(Code::kIo, "not connected");
    auto endpoint = detail::parse_endpoint(options_.socket_path);
    if (!endpoint) {
      connected = endpoint.status();
      close_handles();
    } else {
      detail::connect(
          &loop_, *endpoint,
          [&](Result<std::unique_ptr<detail::Stream>> s) { on_connected(std::move(s), connected); },
          {options_.secret_file, options_.fingerprint, options_.tls});
    }
    if (options_.run_on_calling_thread) {
      std::thread loop_thread([this] {
        uv_run(&loop_, UV_RUN_DEFAULT);
        stop_executor();
      });
      executor_main();
      loop_thread.join();
    } else {
      uv_run(&loop_, UV_RUN_DEFAULT);
      stop_executor();
    }
    uv_loop_close(&loop_);
    if (!refused_.is_ok()) return refused_;
    return ended_well_ ? Status::ok() : connected;
  }

 private:
  void on_connected(Result<std::unique_ptr<detail::Stream>> s, Status& connected) {
    if (!s) {
      connected = s.status();
      return close_handles();
    }
    conn_ = detail::Connection::adopt(std::move(s).value(), kDefaultFrameLimit, UINT64_MAX);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sender_ = conn_->sender();
    }
    connected = conn_->start(
        detail::Connection::Callbacks{[this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
                                      [this](detail::Connection&, detail::CloseReason reason,
                                             const Status& why) { on_close(reason, why); }});
    if (!connected) return;
    detail::Hello hello{"worker", ::getpid(), 0, 0, {}};
    hello.token = start_token();
    hello.functions = registry().list();
    auto bytes = detail::encode_hello(hello);
    if (!bytes) {
      connected = bytes.status();
      conn_->close(detail::CloseReason::kLocal, connected);
      return;
    }
    conn_->send(FrameType::kHello, 0, 0, std::make_shared<const Bytes>(std::move(bytes).value()));
  }

  struct Job {
    std::uint64_t id = 0;
    bool setup = false;
    std::shared_ptr<const Bytes> payload;
    std::shared_ptr<const Bytes> result;
  };

  // The token a managed worker was started with (kWorkerTokenEnv), else 0.
  static std::uint64_t start_token() {
    const char* t = std::getenv(detail::kWorkerTokenEnv);
    if (t == nullptr) return 0;
    char* end = nullptr;
    const unsigned long long v = std::strtoull(t, &end, 10);
    return end != t && *end == '\0' ? v : 0;
  }

  Status install_cancel_handler() {
    if (g_cancel_fd < 0) {
      g_cancel_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
      if (g_cancel_fd < 0) return Status(Code::kIo, "cannot create an eventfd for cancellation");
    }
    struct sigaction sa {};
    sa.sa_sigaction = on_cancel_signal;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    if (::sigaction(kCancelSignal, &sa, nullptr) != 0)
      return Status(Code::kIo, "cannot install the cancel handler");
    return Status::ok();
  }

  // --- the executor thread ---------------------------------------------------

  void executor_main() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      cv_.wait(lock, [this] { return quit_ || job_.has_value(); });
      if (quit_) return;
      Job job = std::move(*job_);
      job_.reset();
      lock.unlock();
      if (!job.setup && g_cancelled.load() == job.id) {
        job.result = error_result(Outcome::kCancelled, "cancelled");  // cancelled before it started
      } else {
        if (g_cancel_fd_written.exchange(false)) {
          std::uint64_t stale = 0;
          (void)!::read(g_cancel_fd, &stale, sizeof stale);  // a wake-up meant for an earlier task
        }
        // Set-up calls are never cancelled: they run under id 0's mark.
        g_running.store(job.setup ? 0 : job.id);
        job.result = run_job(job.payload, job.setup);
        g_running.store(0);
      }
      // Free before the dispatcher can hear of it (it then sends the next
      // task); the result goes out from this thread, through the
      // connection's one write path.
      lock.lock();
      busy_ = false;
      std::shared_ptr<detail::Sender> sender = sender_;
      lock.unlock();
      if (sender)
        (void)sender->send(FrameType::kDone, job.setup ? kFlagSetup : 0, job.id, std::move(job.result));
      lock.lock();
    }
  }

  void stop_executor() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    if (executor_.joinable()) executor_.join();
  }

  // --- the loop ----------------------------------------------------------------

  void close_handles() {
    auto close = [](auto* h) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    };
    close(&heartbeat_);
  }

  void start_heartbeats(std::uint32_t every_ms) {
    if (every_ms == 0) return;
    uv_timer_start(
        &heartbeat_,
        [](uv_timer_t* t) {
          auto* self = static_cast<WorkerLoop*>(t->loop->data);
          if (self->conn_ != nullptr) self->conn_->send(FrameType::kHeartbeat, 0, 0, nullptr);
          self->forget_idle_mappings();
        },
        every_ms, every_ms);
  }

  // map() keeps regions mapped for the next task that names them; a worker
  // idle for a whole heartbeat interval lets them go, so that regions
  // removed meanwhile do not stay in memory because it once read them.
  void forget_idle_mappings() {
    std::uint64_t started;
    {
      std::lock_guard<std::mutex> lock(mu_);
      if (busy_) return;
      started = jobs_started_;
    }
    if (started == jobs_at_last_beat_) shm::drop_map_cache();
    jobs_at_last_beat_ = started;
  }

  Status load_plugin(const std::string& path) {
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return invalid_argument("cannot load plugin " + path + ": " + ::dlerror());
    auto* entry = reinterpret_cast<void (*)(Registry&)>(::dlsym(h, kPluginEntry));
    if (entry == nullptr)
      return invalid_argument("plugin " + path + " has no " + kPluginEntry +
                              "(kura::ipc::Registry&) function");
    entry(registry());
    return Status::ok();
  }

  void on_frame(Frame&& f) {
    switch (f.header.type) {
      case FrameType::kWelcome: {
        auto w = detail::decode_welcome(f.payload);
        if (!w) return conn_->close(detail::CloseReason::kProtocol, w.status());
        if (w->protocol != kProtocolVersion) {
          refused_ = Status(Code::kInvalidArgument, detail::version_mismatch("the dispatcher", w->protocol));
          return conn_->close(detail::CloseReason::kLocal, refused_);
        }
        conn_->set_read_limit(w->frame_limit);
        frame_limit_ = w->frame_limit;
        start_heartbeats(w->heartbeat_ms);
        return;
      }
      case FrameType::kRefused: {
        auto text = detail::decode_refused(f.payload);
        refused_ = Status(Code::kInvalidArgument,
                          "the dispatcher refused this worker: " + (text ? *text : text.status().message()));
        return conn_->close(detail::CloseReason::kLocal, refused_);
      }
      case FrameType::kTask: {
        {
          std::lock_guard<std::mutex> lock(mu_);
          if (busy_)
            return conn_->close(detail::CloseReason::kProtocol,
                                corrupt("the dispatcher sent a task while another ran"));
          busy_ = true;
          ++jobs_started_;
          job_ = Job{f.header.id, (f.header.flags & kFlagSetup) != 0,
                     std::make_shared<const Bytes>(std::move(f.payload)), nullptr};
        }
        cv_.notify_one();
        return;
      }
      case FrameType::kCancel: {
        // Tasks arrive before their cancel, in order, on this one connection:
        // the mark is enough for a task not started yet, and one that has
        // finished is not affected.
        if ((f.header.flags & kFlagSetup) != 0) return;
        const std::uint64_t id = f.header.id;
        mark_cancelled(id);
        std::lock_guard<std::mutex> lock(mu_);
        if (busy_ && g_running.load() == id) {
          sigval v{};
          v.sival_ptr = reinterpret_cast<void*>(static_cast<std::uintptr_t>(id));
          ::pthread_sigqueue(executor_id_, options_.cancel_signal, v);
        }
        return;
      }
      default:
        return conn_->close(detail::CloseReason::kProtocol, corrupt("the dispatcher sent a frame of type " +
                                                                    std::to_string(int(f.header.type))));
    }
  }

  void on_close(detail::CloseReason reason, const Status& why) {
    conn_ = nullptr;
    ended_well_ = reason == detail::CloseReason::kPeerClosed;
    if (!ended_well_ && refused_.is_ok())
      options_.log("connection to the dispatcher closed: " + why.message());
    bool running;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running = busy_;
    }
    if (running) {
      options_.log("the dispatcher went away while a function ran; exiting");
      std::fflush(stderr);
      ::_exit(0);
    }
    close_handles();
  }

  // An error's message can be anything a function says (fail() returns its
  // argument): cut to half the frame limit, so that the frame stays under
  // the dispatcher's limit, which would otherwise close this connection.
  std::shared_ptr<const Bytes> error_result(Outcome o, const std::string& message) const {
    const std::size_t room = frame_limit_ > 8192 ? frame_limit_ / 2 : 2048;
    std::string_view text = message;
    std::string cut;
    if (text.size() > room) {
      std::size_t n = room;
      while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // a whole UTF-8 character
      cut = std::string(text.substr(0, n)) + "... (" + std::to_string(text.size() - n) + " bytes more)";
      text = cut;
    }
    auto p = detail::encode_result(o, text, "", nullptr, timed_ ? &timing_ : nullptr);
    if (!p) p = detail::encode_result(Outcome::kError, "out of memory", "", nullptr);
    return p ? std::make_shared<const Bytes>(std::move(p).value()) : nullptr;
  }

  // Runs one task and returns the result image for the dispatcher.
  std::shared_ptr<const Bytes> run_job(const std::shared_ptr<const Bytes>& payload, bool setup) noexcept {
    try {
      timed_ = false;
      auto s = detail::decode_submit(payload);
      if (!s) return error_result(Outcome::kError, "cannot read the task: " + s.status().message());
      // A traced task reports when it ran (Timing): nothing is measured for
      // any other.
      timed_ = !s->traceparent.empty();
      if (timed_) timing_ = {};
      Function fn = registry().find(s->fn);
      if (!fn)
        return error_result(Outcome::kError, "no function \"" + s->fn +
                                                 "\" in this worker (it has: " + registry().names() + ")");
      std::vector<NodeView> args;
      std::vector<std::string> names;
      args.reserve(s->args.size());
      names.reserve(s->args.size());
      for (std::size_t i = 0; i < s->args.size(); ++i) {
        const auto& a = s->args[i];
        names.push_back(a.name);
        if (a.value) {
          args.push_back(*a.value);
          continue;
        }
        auto m = shm::map(a.name);
        if (!m)
          return error_result(Outcome::kError,
                              "argument " + std::to_string(i + 1) + ": " + m.status().to_string());
        args.push_back(m->node());
      }
      std::optional<shm::Lease> lease;
      TaskContext::Internals in{&lease};
      TaskContext ctx =
          TaskContext::Internals::make(std::move(args), std::move(names), s->owner, s->inline_result, &in);
      Result<Output> out = Status(Code::kIo, "not run");
      if (timed_) timing_.started_ns = detail::wall_ns();
      try {
        out = fn(ctx);
      } catch (const std::bad_alloc&) {
        out = Status::out_of_memory();
      } catch (const std::exception& e) {
        out = Status(Code::kIo, std::string("the function threw: ") + e.what());
      } catch (...) {
        out = Status(Code::kIo, "the function threw an exception of unknown type");
      }
      if (timed_) timing_.returned_ns = timing_.written_ns = detail::wall_ns();
      if (ctx.cancelled()) {
        // Nobody takes the result: a region the function published for the
        // client is removed here (the Shared of another owner never unlinks).
        if (out && out->is_region()) (void)shm::remove(out->region().disown());
        return error_result(Outcome::kCancelled, "cancelled");
      }
      if (!out) return error_result(Outcome::kError, out.status().message());
      if (out->is_region()) {
        // Only a region written for the client is its result. Another one
        // (the worker's own, from shm::share) is refused and left to its
        // handle, which removes it if it is this process's.
        auto n = parse_name(out->region().name());
        if (!n || n->owner != s->owner)
          return error_result(Outcome::kError, "the function returned the region " + out->region().name() +
                                                   " of another owner than the client's (write results "
                                                   "with TaskContext::result_region)");
        return make_result(out->region().disown(), nullptr);
      }
      const Value& v = out->value();
      if (setup) return make_result("", nullptr);  // a set-up call's value is not kept
      auto layout = Layout::plan(v);
      if (!layout)
        return error_result(Outcome::kError, "the result cannot be laid out: " + layout.status().message());
      const std::uint64_t room = frame_limit_ > 4096 ? frame_limit_ - 4096 : 0;
      const std::uint64_t limit =
          s->inline_result ? room : std::min<std::uint64_t>(options_.inline_limit, room);
      if (layout->size() <= limit) return make_result("", &v);
      auto held = TaskContext::Internals::lease_of(ctx);
      if (!held)
        return error_result(Outcome::kError, "cannot hold the client's lease: " + held.status().message());
      auto shared = shm::share(**held, v);
      if (!shared)
        return error_result(Outcome::kError, "cannot write the result: " + shared.status().to_string());
      return make_result(shared->disown(), nullptr);
    } catch (...) {
      return error_result(Outcome::kError, "out of memory");
    }
  }

  std::shared_ptr<const Bytes> make_result(const std::string& name, const Value* v) {
    if (timed_) timing_.written_ns = detail::wall_ns();
    auto p = detail::encode_result(Outcome::kOk, "", name, v, timed_ ? &timing_ : nullptr);
    if (!p) return error_result(Outcome::kError, "cannot encode the result: " + p.status().message());
    return std::make_shared<const Bytes>(std::move(p).value());
  }

  WorkerOptions options_;
  uv_loop_t loop_{};
  uv_timer_t heartbeat_{};
  detail::Connection* conn_ = nullptr;
  std::uint32_t frame_limit_ = kDefaultFrameLimit;
  bool ended_well_ = false;
  Status refused_ = Status::ok();

  // Between the loop and the executor.
  std::thread executor_;
  pthread_t executor_id_{};
  std::mutex mu_;
  std::condition_variable cv_;
  std::optional<Job> job_;               // the next job for the executor
  std::uint64_t jobs_started_ = 0;       // under mu_
  std::uint64_t jobs_at_last_beat_ = 0;  // the loop's
  // The executor's: whether the job it runs is traced, and its times.
  bool timed_ = false;
  detail::Timing timing_;
  bool busy_ = false;  // a job was handed over and its result not yet taken
  bool quit_ = false;
  std::shared_ptr<detail::Sender> sender_;  // the connection's write path, for results
};

}  // namespace

Status Worker::run(const WorkerOptions& options) noexcept {
  try {
    WorkerLoop loop(options);
    return loop.run();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::system_error& e) {
    return Status(Code::kIo, std::string("cannot start the worker: ") + e.what());
  }
}

std::vector<std::string> Worker::command(const std::string& exe) {
  return {exe, "worker", "--connect", "{socket}"};
}

std::optional<int> Worker::main(int argc, char** argv) noexcept {
  if (argc < 4 || std::strcmp(argv[1], "worker") != 0) return std::nullopt;
  WorkerOptions o;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--connect") == 0) {
      o.socket_path = argv[i + 1];
    } else if (std::strcmp(argv[i], "--plugin") == 0) {
      o.plugins.push_back(argv[i + 1]);
    } else {
      return std::nullopt;
    }
  }
  if (o.socket_path.empty()) return std::nullopt;
  Status s = run(o);
  if (!s) {
    std::fprintf(stderr, "kura worker: %s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}

}  // namespace kura::ipc
