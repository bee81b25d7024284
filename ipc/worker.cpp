// The worker's loop (worker_internal.hpp): its connection to the
// dispatcher, heartbeats, cancel frames, and the executor thread that runs
// functions.
#include <dlfcn.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <new>
#include <thread>

#include "event_count.hpp"
#include "reconnect_internal.hpp"
#include "transfer_internal.hpp"
#include "transport_internal.hpp"
#include "worker_internal.hpp"

namespace kura::ipc {

namespace {

// One worker process's connection and loop. Functions run one at a time on
// an executor thread (or on the calling thread, with the loop on a thread of
// its own: WorkerOptions::run_on_calling_thread), so the loop stays free to
// answer the dispatcher while they run: it sends heartbeats, acts on cancels, and sees the
// dispatcher go away (the process then exits at once: a worker never
// outlives its dispatcher, and nobody wants the result).
//
// A worker that reconnects (WorkerOptions::reconnect_ms) takes a connection
// that closes without kGoodbye or kRefused for a drop: it cancels the
// function it runs (the dispatcher has resolved or retried that task
// already), waits for it to return, and connects again with back-off
// (reconnect_internal.hpp) until the window ends; then it exits.
class WorkerLoop {
 public:
  explicit WorkerLoop(const WorkerOptions& o)
      : options_(o), runner_(o.inline_limit), remote_(o.object_cache_bytes) {
    if (!options_.log)
      options_.log = [](const std::string& line) { std::fprintf(stderr, "kura worker: %s\n", line.c_str()); };
  }

  Status run() {
    detail::ignore_sigpipe();
    for (const std::string& p : options_.plugins) KURA_RETURN_IF_ERROR(load_plugin(p));
    KURA_RETURN_IF_ERROR(detail::install_cancel_handler());
    if (int rc = uv_loop_init(&loop_); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    loop_.data = this;
    uv_timer_init(&loop_, &heartbeat_);
    silence_.emplace(&loop_);
    if (int rc = uv_async_init(&loop_, &returned_, &WorkerLoop::on_returned); rc != 0) {
      close_handles();
      uv_run(&loop_, UV_RUN_DEFAULT);
      uv_loop_close(&loop_);
      return Status(Code::kIo, std::string("uv_async_init: ") + uv_strerror(rc));
    }
    if (!options_.run_on_calling_thread) {
      executor_ = std::thread([this] { executor_main(); });
      executor_id_ = executor_.native_handle();
    } else {
      executor_id_ = ::pthread_self();
    }
    auto endpoint = detail::parse_endpoint(options_.socket_path);
    if (!endpoint) {
      ended_ = endpoint.status();
      close_handles();
    } else {
      endpoint_ = std::move(endpoint).value();
      tcp_ = endpoint_.kind == detail::Endpoint::Kind::kTcp;
      redial_.emplace(
          &loop_, options_.reconnect_ms.value_or(tcp_ ? kDefaultReconnectMs : 0), options_.socket_path,
          options_.log,
          detail::Redial::Callbacks{[this] { connect(); }, [this](const Status& why) { give_up(why); }},
          uv_hrtime() ^ std::uint64_t(::getpid()));
      connect();
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
    return ended_;
  }

 private:
  static constexpr std::uint64_t kDefaultReconnectMs = 60000;

  void connect() {
    detail::connect(&loop_, endpoint_,
                    [this](Result<std::unique_ptr<detail::Stream>> s) { on_connected(std::move(s)); },
                    {options_.secret_file, options_.fingerprint, options_.tls});
  }

  void on_connected(Result<std::unique_ptr<detail::Stream>> s) {
    if (!s) {
      // The first connect fails at once: a wrong address or secret is
      // better told now than after a minute of trying.
      if (!welcomed_once_ || detail::connect_failure_is_final(s.status())) {
        ended_ = s.status();
        return close_handles();
      }
      return redial_->failed(s.status());
    }
    conn_ = detail::Connection::adopt(std::move(s).value(), kDefaultFrameLimit, UINT64_MAX);
    {
      std::lock_guard<std::mutex> lock(mu_);
      sender_ = conn_->sender();
    }
    remote_.attach(conn_->sender());
    Status started = conn_->start(
        detail::Connection::Callbacks{[this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
                                      [this](detail::Connection&, detail::CloseReason reason,
                                             const Status& why) { on_close(reason, why); }});
    if (!started) {
      ended_ = started;
      return conn_->close(detail::CloseReason::kIo, started);
    }
    // Marks of the last connection's tasks mean nothing to this one (a
    // dispatcher that restarted numbers its tasks from 1 again).
    detail::mark_cancelled(0);
    detail::Hello hello{"worker", ::getpid(), 0, 0, {}};
    hello.token = start_token();
    hello.functions = detail::functions().list();
    // Only over TCP can the dispatcher go silent without the socket closing.
    hello.features = detail::kFeatureHeartbeat | detail::kFeatureGoodbye | detail::kFeatureQueue |
                     (tcp_ ? std::uint64_t{detail::kFeaturePing} : std::uint64_t{0});
    auto bytes = detail::encode_hello(hello);
    if (!bytes) {
      ended_ = bytes.status();
      return conn_->close(detail::CloseReason::kLocal, ended_);
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

  // --- the executor thread ---------------------------------------------------

  void executor_main() {
    std::unique_lock<std::mutex> lock(mu_);
    for (;;) {
      woken_.wait_until(lock, std::nullopt, [this] { return quit_ || !jobs_.empty(); });
      if (quit_) return;
      Job job = std::move(jobs_.front());
      jobs_.pop_front();
      executing_ = true;
      running_id_ = job.setup ? 0 : job.id;
      lock.unlock();
      if (!job.setup && detail::cancelled_before_start(job.id)) {
        job.result = runner_.error_result(Outcome::kCancelled, "cancelled");
      } else {
        // Set-up calls are never cancelled: they run under id 0's mark.
        detail::begin_task(job.setup ? 0 : job.id);
        job.result = runner_.run(job.id, job.payload, job.setup);
        detail::end_task();
      }
      // Free before the dispatcher can hear of it (it then sends the next
      // task); the result goes out from this thread, through the
      // connection's one write path.
      lock.lock();
      executing_ = false;
      running_id_ = 0;
      std::shared_ptr<detail::Sender> sender = sender_;
      if (loop_waits_for_return_) uv_async_send(&returned_);
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
    woken_.notify_all();
    if (executor_.joinable()) executor_.join();
  }

  // --- the loop ----------------------------------------------------------------

  void close_handles() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      loop_waits_for_return_ = false;
    }
    auto close = [](auto* h) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    };
    close(&heartbeat_);
    close(&returned_);
    silence_->close();
    if (redial_) redial_->close();
  }

  // --- a connection that dropped -------------------------------------------------

  // True when a connection that closed for `reason` is to be opened again.
  bool reconnects_after(detail::CloseReason reason) const {
    return redial_->window_ms() > 0 && welcomed_once_ && !goodbye_ && refused_.is_ok() &&
           !detail::close_is_final(reason);
  }

  // The connection dropped: cancel what runs (nobody waits for its result
  // now: the dispatcher retried its task or resolved it worker-lost), and
  // connect again once it returned.
  void on_dropped(detail::CloseReason reason, const Status& why) {
    bool waits;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Under the lock: a job that ends after this wakes the loop.
      waits = loop_waits_for_return_ = executing_;
      if (executing_ && running_id_ != 0) {
        detail::mark_cancelled(running_id_);
        interrupt_locked(running_id_);
      }
    }
    redial_->dropped(reason, why, waits);
    if (waits)
      options_.log(
          "the function that runs is cancelled (the dispatcher retries its task or resolves it "
          "worker-lost); reconnecting once it returns");
  }

  // Takes task `id` out of the jobs waiting for the executor; false when it
  // is not one of them (it runs, ended, or was never sent). REQUIRES: mu_
  // held.
  bool take_waiting_locked(std::uint64_t id) {
    auto it = std::find_if(jobs_.begin(), jobs_.end(), [&](const Job& j) { return j.id == id && !j.setup; });
    if (it == jobs_.end()) return false;
    jobs_.erase(it);
    return true;
  }

  // Sends the cancel signal to the thread running task `id`, if it runs
  // now. REQUIRES: mu_ held.
  void interrupt_locked(std::uint64_t id) {
    if (!executing_ || !detail::running(id)) return;
    sigval v{};
    v.sival_ptr = reinterpret_cast<void*>(static_cast<std::uintptr_t>(id));
    ::pthread_sigqueue(executor_id_, options_.cancel_signal, v);
  }

  static void on_returned(uv_async_t* a) {
    auto* self = static_cast<WorkerLoop*>(a->loop->data);
    {
      std::lock_guard<std::mutex> lock(self->mu_);
      if (!self->loop_waits_for_return_ || self->executing_) return;
      self->loop_waits_for_return_ = false;
    }
    self->redial_->function_returned();
  }

  // The reconnect window is over: the process ends (at once if a function
  // still runs on the executor, which cannot be joined).
  void give_up(const Status& why) {
    ended_ = why;
    bool running;
    {
      std::lock_guard<std::mutex> lock(mu_);
      jobs_.clear();
      running = executing_;
    }
    if (running) {
      std::fflush(stderr);
      ::_exit(1);
    }
    close_handles();
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
      if (executing_ || !jobs_.empty()) return;
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
    entry(detail::functions());
    return Status::ok();
  }

  void on_frame(Frame&& f) {
    silence_->heard();
    switch (f.header.type) {
      case FrameType::kWelcome: {
        auto w = detail::decode_welcome(f.payload);
        if (!w) return conn_->close(detail::CloseReason::kProtocol, w.status());
        if (w->protocol != kProtocolVersion) {
          refused_ = Status(Code::kInvalidArgument, detail::version_mismatch("the dispatcher", w->protocol));
          return conn_->close(detail::CloseReason::kLocal, refused_);
        }
        conn_->set_read_limit(w->frame_limit);
        runner_.set_frame_limit(w->frame_limit);
        // A dispatcher whose regions this host cannot see by their names
        // sends their bytes instead (its names mean nothing here).
        if (w->regions != detail::region_home()) {
          if ((w->features & detail::kFeatureObjects) == 0) {
            refused_ = Status(Code::kInvalidArgument,
                              "the dispatcher's regions are not on this host and it cannot send them");
            return conn_->close(detail::CloseReason::kLocal, refused_);
          }
          runner_.set_remote(&remote_);
        }
        start_heartbeats(w->heartbeat_ms);
        if (tcp_ && (w->features & detail::kFeaturePing) != 0 && w->heartbeat_timeout_ms > 0)
          silence_->start(w->heartbeat_timeout_ms, [this](const Status& why) {
            if (conn_ != nullptr) conn_->close(detail::CloseReason::kTimeout, why);
          });
        welcomed_once_ = true;
        redial_->welcomed();
        return;
      }
      case FrameType::kHeartbeat: return;  // the dispatcher's (kFeaturePing): heard
      case FrameType::kGoodbye:
        goodbye_ = true;
        return conn_->close(detail::CloseReason::kLocal, Status(Code::kIo, "the dispatcher is stopping"));
      case FrameType::kRefused: {
        auto text = detail::decode_refused(f.payload);
        refused_ = Status(Code::kInvalidArgument,
                          "the dispatcher refused this worker: " + (text ? *text : text.status().message()));
        return conn_->close(detail::CloseReason::kLocal, refused_);
      }
      case FrameType::kTask: {
        {
          const bool setup = (f.header.flags & kFlagSetup) != 0;
          std::lock_guard<std::mutex> lock(mu_);
          // Tasks wait behind the one that runs (kFeatureQueue); a set-up
          // call comes only when nothing does.
          if (setup && (executing_ || !jobs_.empty()))
            return conn_->close(detail::CloseReason::kProtocol,
                                corrupt("the dispatcher sent a set-up call while a task ran"));
          ++jobs_started_;
          jobs_.push_back(
              Job{f.header.id, setup, std::make_shared<const Bytes>(std::move(f.payload)), nullptr});
        }
        woken_.notify_all();
        return;
      }
      case FrameType::kObject:
      case FrameType::kChunk:
      case FrameType::kAck:
      case FrameType::kStored: {
        if (Status s = remote_.on_frame(std::move(f)); !s)
          return conn_->close(detail::CloseReason::kProtocol, s);
        return;
      }
      case FrameType::kRevoke: {
        // Given back unstarted, so that an idle worker runs it; one that
        // started (or ended) runs on and reports as usual.
        std::lock_guard<std::mutex> lock(mu_);
        if (take_waiting_locked(f.header.id))
          conn_->send(FrameType::kDone, kFlagRevoked, f.header.id, nullptr);
        return;
      }
      case FrameType::kCancel: {
        // Tasks arrive before their cancel, in order, on this one connection:
        // a task waits here, or the executor took it, or it ended (or was
        // given back) and is not affected.
        if ((f.header.flags & kFlagSetup) != 0) return;
        const std::uint64_t id = f.header.id;
        std::lock_guard<std::mutex> lock(mu_);
        // One that waits here is answered at once, never run. Its kDone is
        // queued under the lock: before any frame of a task after it.
        if (take_waiting_locked(id)) {
          // Not runner_.error_result: the executor's task may be writing
          // the runner's timing now, and none of it is this task's.
          auto cancelled = detail::encode_result(Outcome::kCancelled, "cancelled", "", nullptr);
          conn_->send(FrameType::kDone, 0, id,
                      cancelled ? std::make_shared<const Bytes>(std::move(cancelled).value()) : nullptr);
          return;
        }
        // The process has one mark: a cancel of a task that ended must not
        // take it from the one that runs now.
        if (!executing_ || running_id_ != id) return;
        detail::mark_cancelled(id);
        remote_.wake();
        return interrupt_locked(id);
      }
      default:
        return conn_->close(detail::CloseReason::kProtocol, corrupt("the dispatcher sent a frame of type " +
                                                                    std::to_string(int(f.header.type))));
    }
  }

  void on_close(detail::CloseReason reason, const Status& why) {
    conn_ = nullptr;
    uv_timer_stop(&heartbeat_);
    silence_->stop();
    remote_.lost();
    bool running;
    {
      std::lock_guard<std::mutex> lock(mu_);
      running = executing_;
      sender_ = nullptr;
      // Tasks waiting behind the one that runs are the dispatcher's again
      // (it retries them or resolves them worker-lost).
      jobs_.clear();
    }
    if (reconnects_after(reason)) return on_dropped(reason, why);
    const bool ended_well = goodbye_ || reason == detail::CloseReason::kPeerClosed;
    if (!ended_well && refused_.is_ok())
      options_.log("connection to the dispatcher closed: " + why.message());
    if (running) {
      options_.log("the dispatcher went away while a function ran; exiting");
      std::fflush(stderr);
      ::_exit(0);
    }
    close_handles();
  }

  WorkerOptions options_;
  uv_loop_t loop_{};
  uv_timer_t heartbeat_{};
  uv_async_t returned_{};  // the executor finished a job the loop waits for
  detail::Connection* conn_ = nullptr;
  detail::TaskRunner runner_;     // the executor's
  detail::RemoteObjects remote_;  // used when the dispatcher's regions are not on this host
  Status ended_ = Status::ok();   // what run() returns (unless refused_)
  Status refused_ = Status::ok();

  // The connection, and connecting again (the loop's).
  detail::Endpoint endpoint_;
  bool tcp_ = false;
  bool welcomed_once_ = false;  // a dispatcher took this worker once: a drop is retried
  bool goodbye_ = false;        // the dispatcher said it stops
  std::optional<detail::Redial> redial_;
  std::optional<detail::SilenceWatch> silence_;  // a TCP dispatcher's heartbeats

  // Between the loop and the executor.
  std::thread executor_;
  pthread_t executor_id_{};
  std::mutex mu_;
  detail::EventCount woken_;             // the executor sleeps on it for a job (or quit_)
  std::deque<Job> jobs_;                 // jobs for the executor, in the order sent
  std::uint64_t jobs_started_ = 0;       // under mu_
  std::uint64_t jobs_at_last_beat_ = 0;  // the loop's
  bool executing_ = false;               // the executor took a job and its result is not sent
  std::uint64_t running_id_ = 0;         // its task id (0 for a set-up call)
  bool loop_waits_for_return_ = false;   // the executor wakes the loop (returned_) when a job ends
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
