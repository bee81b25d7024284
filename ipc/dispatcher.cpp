#include "kura/ipc/dispatcher.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <climits>
#include <cstdio>
#include <deque>
#include <future>
#include <mutex>
#include <new>
#include <set>
#include <unordered_map>

#include "kura/core/name.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

using detail::Connection;

namespace {

// Submits of one client that may wait for room before the dispatcher stops
// reading its socket (backpressure through the socket from there on).
constexpr std::size_t kMaxParkedPerClient = 64;
// A managed worker that dies before it was ever ready (connected, its set-up
// calls run) is restarted after a delay that doubles up to this (a broken
// worker command, or a set-up call that kills workers, must not spin).
constexpr std::uint64_t kMaxRestartDelayMs = 5000;
// How long stopping waits for managed workers before killing them.
constexpr std::uint64_t kStopGraceMs = 5000;

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  return buf;
}

std::string hex_of(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

std::string default_log_prefix(const std::string& line) {
  return "kura dispatcher: " + line + "\n";
}

}  // namespace

Result<std::string> default_socket_path() noexcept {
  auto endpoint = detail::default_endpoint();
  if (!endpoint) return endpoint.status();
  return std::move(endpoint->path);
}

struct Dispatcher::Core {
  enum class Role { kNew, kClient, kWorker };
  enum class TaskState { kWaiting, kQueued, kRunning };

  struct Peer {
    Connection* conn = nullptr;
    Role role = Role::kNew;
    std::int64_t pid = 0;
    std::uint64_t owner = 0;                                 // clients
    std::unordered_map<std::uint64_t, std::uint64_t> tasks;  // clients: their task id -> ours
    std::size_t parked = 0;                                  // clients: submits waiting for room
    std::uint64_t running = 0;                               // workers: the task it runs (maybe discarded)
    std::uint64_t running_owner = 0;                         // workers: the owner it runs that task for
    bool running_setup = false;
    bool ready = false;              // workers: its set-up calls ran, it took tasks
    std::deque<std::size_t> setups;  // workers: set-up calls still to run, by index
    std::uint64_t done = 0;
  };

  struct Task {
    std::uint64_t client = 0;  // peer id
    std::uint64_t client_task = 0;
    std::shared_ptr<const Bytes> payload;
    std::uint64_t owner = 0;
    TaskState state = TaskState::kWaiting;
    std::uint64_t worker = 0;
    std::uint32_t retries_left = 0;
    bool acked = false;  // admitted to the queue once (and told so, when it waits for that)
    bool try_submit = false;
    std::uint64_t timeout_ms = 0;
    uv_timer_t* timer = nullptr;
  };

  struct Setup {
    std::shared_ptr<const Bytes> payload;
    std::uint64_t owner = 0;   // the owner of the client that asked for it
    std::uint64_t client = 0;  // who to answer while it runs on the workers of its time
    std::uint64_t client_task = 0;
    std::set<std::uint64_t> pending;
    std::string error;
    bool answered = false;
  };

  struct ManagedWorker {
    uv_process_t process;
    Core* core;
    bool connected = false;  // it connected and ran its set-up calls: ready for tasks
  };

  DispatcherOptions options;
  uv_loop_t loop{};
  uv_async_t stop_async{};
  uv_signal_t sigint{}, sigterm{};
  uv_timer_t restart_timer{}, kill_timer{};
  bool handle_signals = false;
  bool stopping = false;
  std::unique_ptr<detail::Listener> listener;
  std::mutex stop_mu;  // guards `open` against a stop() from another thread
  bool open = false;

  std::unordered_map<std::uint64_t, Peer> peers;
  std::unordered_map<std::uint64_t, Task> tasks;
  std::deque<std::uint64_t> waiting;  // tasks waiting for room, in order
  std::deque<std::uint64_t> queue;    // tasks queued, in order
  std::deque<std::uint64_t> idle;     // workers free, in the order they became free
  std::vector<Setup> setups;
  std::set<ManagedWorker*> managed;
  unsigned restarts_pending = 0;
  std::uint64_t restart_delay_ms = 0;

  std::uint64_t next_peer = 1;
  std::uint64_t next_task = 1;
  std::uint64_t cumulative = 0;
  std::uint64_t completed = 0;
  std::uint64_t queued_bytes = 0;
  std::uint64_t queued_peak = 0;
  std::uint64_t closed_bytes_in = 0;  // socket bytes of connections that are gone
  std::uint64_t closed_bytes_out = 0;
  bool pumping = false;

  explicit Core(DispatcherOptions o) : options(std::move(o)) {
    if (!options.log)
      options.log = [](const std::string& line) { std::fputs(default_log_prefix(line).c_str(), stderr); };
  }

  void log(const std::string& line) { options.log(line); }

  // --- start and stop --------------------------------------------------------

  Status open_loop(bool signals) {
    detail::ignore_sigpipe();
    if (options.socket_path.empty()) {
      KURA_ASSIGN_OR_RETURN(options.socket_path, default_socket_path());
    }
    if (options.frame_limit < 4096) return invalid_argument("frame_limit below 4096 bytes");
    if (options.workers > 0 && options.worker_command.empty()) {
      std::string exe = self_exe();
      if (exe.empty()) return Status(Code::kIo, "cannot find this executable to start workers with");
      options.worker_command = {exe, "worker", "--connect", "{socket}"};
    }
    if (int rc = uv_loop_init(&loop); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    loop.data = this;
    uv_async_init(&loop, &stop_async, [](uv_async_t* a) { static_cast<Core*>(a->loop->data)->begin_stop(); });
    uv_timer_init(&loop, &restart_timer);
    uv_timer_init(&loop, &kill_timer);
    handle_signals = signals;
    if (signals) {
      uv_signal_init(&loop, &sigint);
      uv_signal_init(&loop, &sigterm);
      auto on_signal = [](uv_signal_t* s, int signum) {
        auto* core = static_cast<Core*>(s->loop->data);
        core->log(std::string("stopping on ") + (signum == SIGINT ? "SIGINT" : "SIGTERM"));
        core->begin_stop();
      };
      uv_signal_start(&sigint, on_signal, SIGINT);
      uv_signal_start(&sigterm, on_signal, SIGTERM);
    }
    if (options.prune_at_start) {
      auto pruned = shm::prune();
      if (!pruned) {
        log("prune at start failed: " + pruned.status().to_string());
      } else if (!pruned->removed.empty()) {
        log("pruned " + std::to_string(pruned->removed.size()) + " orphaned files");
      }
    }
    auto endpoint = detail::parse_endpoint(options.socket_path);
    if (!endpoint) {
      close_all_handles();
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return endpoint.status();
    }
    auto l = detail::listen(
        &loop, *endpoint, [this](std::unique_ptr<detail::Stream> s) { on_accept(std::move(s)); },
        [this](const std::string& line) { log(line); });
    if (!l) {
      close_all_handles();
      uv_run(&loop, UV_RUN_DEFAULT);
      uv_loop_close(&loop);
      return l.status();
    }
    listener = std::move(l).value();
    for (unsigned i = 0; i < options.workers; ++i) spawn_worker();
    std::lock_guard<std::mutex> lock(stop_mu);
    open = true;
    return Status::ok();
  }

  void run_loop() {
    uv_run(&loop, UV_RUN_DEFAULT);
    {
      std::lock_guard<std::mutex> lock(stop_mu);
      open = false;
    }
    uv_loop_close(&loop);
  }

  // Thread-safe.
  void request_stop() {
    std::lock_guard<std::mutex> lock(stop_mu);
    if (open) uv_async_send(&stop_async);
  }

  void close_all_handles() {
    auto close = [](auto* h) {
      if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
        uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
    };
    close(&stop_async);
    close(&restart_timer);
    close(&kill_timer);
    if (handle_signals) {
      close(&sigint);
      close(&sigterm);
    }
  }

  void begin_stop() {
    if (stopping) return;
    stopping = true;
    if (listener) listener->close();
    std::vector<Connection*> conns;
    for (auto& [id, p] : peers) conns.push_back(p.conn);
    for (Connection* c : conns)
      c->close(detail::CloseReason::kLocal, Status(Code::kIo, "the dispatcher is stopping"));
    for (auto& [id, t] : tasks) close_timer(t);
    while (!recheck_timers.empty()) close_recheck(*recheck_timers.begin());
    // Managed workers see their connection close and exit; those that do not
    // are killed after a grace period.
    uv_timer_stop(&restart_timer);
    if (managed.empty()) {
      close_all_handles();
    } else {
      uv_timer_start(
          &kill_timer,
          [](uv_timer_t* t) {
            auto* core = static_cast<Core*>(t->loop->data);
            for (ManagedWorker* w : core->managed) uv_process_kill(&w->process, SIGKILL);
          },
          kStopGraceMs, 0);
    }
  }

  // --- managed workers ---------------------------------------------------------

  void spawn_worker() {
    std::vector<std::string> argv = options.worker_command;
    for (std::string& a : argv) {
      for (auto p = a.find("{socket}"); p != std::string::npos;
           p = a.find("{socket}", p + options.socket_path.size()))
        a.replace(p, 8, options.socket_path);
    }
    std::vector<char*> args;
    for (std::string& a : argv) args.push_back(a.data());
    args.push_back(nullptr);
    auto* w = new ManagedWorker;
    w->core = this;
    w->process.data = w;
    uv_stdio_container_t stdio[3];
    stdio[0].flags = UV_IGNORE;
    stdio[1].flags = UV_IGNORE;
    stdio[2].flags = UV_INHERIT_FD;
    stdio[2].data.fd = 2;
    uv_process_options_t po{};
    po.file = args[0];
    po.args = args.data();
    po.stdio_count = 3;
    po.stdio = stdio;
    // A session of its own: a Ctrl-C at the terminal reaches the dispatcher,
    // which stops, and its workers then see it go away and exit.
    po.flags = UV_PROCESS_DETACHED;
    po.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
      auto* w = static_cast<ManagedWorker*>(p->data);
      w->core->on_worker_exit(w, status, signal);
    };
    if (int rc = uv_spawn(&loop, &w->process, &po); rc != 0) {
      log("cannot start a worker (" + argv[0] + "): " + uv_strerror(rc));
      uv_close(reinterpret_cast<uv_handle_t*>(&w->process),
               [](uv_handle_t* h) { delete static_cast<ManagedWorker*>(h->data); });
      schedule_restart(true);
      return;
    }
    managed.insert(w);
    log("started worker pid " + std::to_string(w->process.pid));
  }

  void on_worker_exit(ManagedWorker* w, int64_t status, int signal) {
    const bool quick = !w->connected;
    if (!stopping)
      log("worker pid " + std::to_string(w->process.pid) + " exited" +
          (signal ? " on signal " + std::to_string(signal) : " with status " + std::to_string(status)) +
          "; starting a replacement");
    managed.erase(w);
    uv_close(reinterpret_cast<uv_handle_t*>(&w->process),
             [](uv_handle_t* h) { delete static_cast<ManagedWorker*>(h->data); });
    if (stopping) {
      if (managed.empty()) {
        uv_timer_stop(&kill_timer);
        close_all_handles();
      }
      return;
    }
    schedule_restart(quick);
  }

  // Starts a replacement now, or, when workers keep dying before they
  // connect, after a delay that doubles each time.
  void schedule_restart(bool quick) {
    if (stopping) return;
    ++restarts_pending;
    if (!quick) {
      restart_delay_ms = 0;
    } else {
      restart_delay_ms = std::min(kMaxRestartDelayMs, restart_delay_ms == 0 ? 100 : 2 * restart_delay_ms);
    }
    uv_timer_start(
        &restart_timer,
        [](uv_timer_t* t) {
          auto* core = static_cast<Core*>(t->loop->data);
          unsigned n = core->restarts_pending;
          core->restarts_pending = 0;
          for (unsigned i = 0; i < n && !core->stopping; ++i) core->spawn_worker();
        },
        restart_delay_ms, 0);
  }

  // --- connections ---------------------------------------------------------------

  void on_accept(std::unique_ptr<detail::Stream> stream) {
    if (stopping) return;  // the stream closes as it goes
    const std::int64_t pid = stream->peer().pid;
    const std::uint64_t write_limit = std::max<std::uint64_t>(64u << 20, 4ull * options.frame_limit);
    Connection* c = Connection::adopt(std::move(stream), options.frame_limit, write_limit);
    const std::uint64_t id = next_peer++;
    c->id = id;
    Peer& p = peers[id];
    p.conn = c;
    p.pid = pid;
    Status s = c->start(
        Connection::Callbacks{[this](Connection& conn, Frame&& f) { on_frame(conn.id, std::move(f)); },
                              [this](Connection& conn, detail::CloseReason reason, const Status& why) {
                                on_close(conn.id, reason, why);
                              }});
    if (!s) c->close(detail::CloseReason::kIo, s);
  }

  std::string who(const Peer& p) const {
    const char* role = p.role == Role::kClient ? "client" : p.role == Role::kWorker ? "worker" : "peer";
    return std::string(role) + " pid " + std::to_string(p.pid);
  }

  void drop(Peer& p, const std::string& why) { p.conn->close(detail::CloseReason::kLocal, corrupt(why)); }

  void on_frame(std::uint64_t peer_id, Frame&& f) {
    auto it = peers.find(peer_id);
    if (it == peers.end()) return;
    Peer& p = it->second;
    switch (p.role) {
      case Role::kNew:
        if (f.header.type != FrameType::kHello) return drop(p, "the first frame is not a hello");
        return on_hello(peer_id, p, f);
      case Role::kClient:
        switch (f.header.type) {
          case FrameType::kSubmit: return on_submit(peer_id, p, std::move(f));
          case FrameType::kCancel: return on_cancel(p, f.header.id);
          case FrameType::kStatusQuery: return send_status(p, f.header.id);
          case FrameType::kEverywhere: return on_everywhere(peer_id, p, std::move(f));
          default: return drop(p, "a client sent a frame of type " + std::to_string(int(f.header.type)));
        }
      case Role::kWorker:
        if (f.header.type != FrameType::kDone)
          return drop(p, "a worker sent a frame of type " + std::to_string(int(f.header.type)));
        return on_done(peer_id, p, std::move(f));
    }
  }

  void on_hello(std::uint64_t peer_id, Peer& p, const Frame& f) {
    auto h = detail::decode_hello(f.payload);
    if (!h) return drop(p, h.status().message());
    if (h->role == "client") {
      if (h->owner == shm::kKeptOwner || !shm::owner_alive(h->owner))
        return drop(p, "hello: the client's owner " + hex_of(h->owner) + " has no live lease");
      p.role = Role::kClient;
      p.owner = h->owner;
    } else {
      p.role = Role::kWorker;
      ++cumulative;
      for (std::size_t i = 0; i < setups.size(); ++i) p.setups.push_back(i);
    }
    auto welcome = detail::encode_welcome(detail::Welcome{options.frame_limit, ::getpid(), options.memory});
    if (!welcome) return drop(p, "cannot encode welcome: " + welcome.status().message());
    p.conn->send(FrameType::kWelcome, 0, 0, std::make_shared<const Bytes>(std::move(welcome).value()));
    if (p.role == Role::kWorker && !p.conn->closed()) worker_ready(peer_id, p);
  }

  void on_close(std::uint64_t peer_id, detail::CloseReason reason, const Status& why) {
    auto it = peers.find(peer_id);
    if (it == peers.end()) return;
    Peer p = std::move(it->second);
    peers.erase(it);
    closed_bytes_in += p.conn->bytes_in();
    closed_bytes_out += p.conn->bytes_out();
    // A client that hangs up is business as usual; anything else is worth a line.
    const bool hung_up = reason == detail::CloseReason::kPeerClosed;
    if (!stopping && !(hung_up && p.role == Role::kClient))
      log("closed connection of " + who(p) + ": " + why.message());
    if (p.role == Role::kClient) {
      for (auto& [client_task, id] : p.tasks) forget_task(id);
      // If it died, its regions are orphans now.
      if (!stopping) prune_owner(p.owner, 0);
    } else if (p.role == Role::kWorker) {
      idle.erase(std::remove(idle.begin(), idle.end(), peer_id), idle.end());
      // Whatever it held for a client is let go now.
      if ((p.running != 0 || p.running_setup) && !stopping) released_hold(p.running_owner);
      if (p.running != 0 && !p.running_setup) {
        auto t = tasks.find(p.running);
        if (t != tasks.end()) {
          if (t->second.retries_left > 0 && !stopping) {
            --t->second.retries_left;
            t->second.state = TaskState::kWaiting;
            t->second.worker = 0;
            waiting.push_front(p.running);
          } else {
            resolve_with(p.running, Outcome::kWorkerLost,
                         "the worker (pid " + std::to_string(p.pid) + ") died while running the task");
          }
        }
      }
      for (std::size_t i = 0; i < setups.size(); ++i) {
        if (setups[i].pending.erase(peer_id) != 0) {
          if (setups[i].error.empty()) setups[i].error = "worker pid " + std::to_string(p.pid) + " was lost";
          answer_setup(i);
        }
      }
    }
    pump();
  }

  // A worker stopped running something for `owner` (and so holding its
  // lease, if it wrote a result). A client that died meanwhile could not be
  // pruned while the lease was held: its files go now.
  void released_hold(std::uint64_t owner) {
    if (owner == 0) return;
    for (const auto& [id, p] : peers)
      if (p.role == Role::kClient && p.owner == owner) return;  // still connected: not dead
    if (!shm::owner_alive(owner)) prune_owner(owner, 0);
  }

  // Removes the files of a client's owner once it is dead. A client killed
  // by a signal closes its socket a moment before the kernel drops its
  // lease, so an owner that still looks alive is looked at again a few
  // times; one that really lives (it only disconnected) keeps its files.
  void prune_owner(std::uint64_t owner, unsigned attempt) {
    static constexpr std::uint64_t kRecheckMs[] = {50, 250, 1000};
    if (!shm::owner_alive(owner)) {
      auto pruned = shm::prune(owner);
      if (pruned && !pruned->removed.empty())
        log("removed " + std::to_string(pruned->removed.size()) + " files of a client that died (owner " +
            hex_of(owner) + ")");
      return;
    }
    if (attempt >= std::size(kRecheckMs) || stopping) return;
    auto* t = new uv_timer_t;
    uv_timer_init(&loop, t);
    t->data = new std::pair<std::uint64_t, unsigned>(owner, attempt + 1);
    recheck_timers.insert(t);
    uv_timer_start(
        t,
        [](uv_timer_t* t) {
          auto* core = static_cast<Core*>(t->loop->data);
          auto* what = static_cast<std::pair<std::uint64_t, unsigned>*>(t->data);
          const auto [owner, next] = *what;
          core->close_recheck(t);
          core->prune_owner(owner, next);
        },
        kRecheckMs[attempt], 0);
  }
  std::set<uv_timer_t*> recheck_timers;
  void close_recheck(uv_timer_t* t) {
    recheck_timers.erase(t);
    delete static_cast<std::pair<std::uint64_t, unsigned>*>(t->data);
    uv_close(reinterpret_cast<uv_handle_t*>(t),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
  }

  // --- tasks ---------------------------------------------------------------------

  void on_submit(std::uint64_t peer_id, Peer& p, Frame&& f) {
    const std::uint64_t client_task = f.header.id;
    auto payload = std::make_shared<const Bytes>(std::move(f.payload));
    auto s = detail::decode_submit(payload);
    if (!s) return drop(p, s.status().message());
    if (s->owner != p.owner) return drop(p, "submit: a task for another owner than the client's");
    if (client_task == 0 || p.tasks.count(client_task) != 0) return drop(p, "submit: task id 0 or reused");
    const std::uint64_t size = payload->size();
    if (options.memory > 0 && size > options.memory) {
      send_result_to(p, client_task, Outcome::kError,
                     "the task's payload of " + human_bytes(size) + " is larger than the queue's cap of " +
                         human_bytes(options.memory) + " (pass large values by name)");
      ++completed;
      return;
    }
    const bool fits = waiting.empty() && (options.memory == 0 || queued_bytes + size <= options.memory);
    if ((f.header.flags & kFlagTry) != 0 && !fits) {
      p.conn->send(FrameType::kFull, 0, client_task, nullptr);
      return;
    }
    const std::uint64_t id = next_task++;
    Task& t = tasks[id];
    t.client = peer_id;
    t.client_task = client_task;
    t.payload = std::move(payload);
    t.owner = s->owner;
    t.retries_left = s->retries;
    t.try_submit = (f.header.flags & kFlagTry) != 0;
    p.tasks[client_task] = id;
    if (s->timeout_ms > 0) start_timer(id, t, s->timeout_ms);
    if (fits) {
      enqueue(id, t);
    } else {
      waiting.push_back(id);
      if (++p.parked >= kMaxParkedPerClient) p.conn->pause_reading();
    }
    pump();
  }

  void start_timer(std::uint64_t id, Task& t, std::uint64_t ms) {
    t.timeout_ms = ms;
    t.timer = new uv_timer_t;
    uv_timer_init(&loop, t.timer);
    t.timer->data = reinterpret_cast<void*>(static_cast<std::uintptr_t>(id));
    uv_timer_start(
        t.timer,
        [](uv_timer_t* timer) {
          auto* core = static_cast<Core*>(timer->loop->data);
          const auto id = static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(timer->data));
          auto it = core->tasks.find(id);
          if (it == core->tasks.end()) return;
          core->cancel_task(id, Outcome::kTimeout,
                            "timed out after " + std::to_string(it->second.timeout_ms) + " ms");
        },
        ms, 0);
  }

  void close_timer(Task& t) {
    if (t.timer == nullptr) return;
    uv_timer_stop(t.timer);
    uv_close(reinterpret_cast<uv_handle_t*>(t.timer),
             [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
    t.timer = nullptr;
  }

  void enqueue(std::uint64_t id, Task& t) {
    t.state = TaskState::kQueued;
    queue.push_back(id);
    queued_bytes += t.payload->size();
    queued_peak = std::max(queued_peak, queued_bytes);
    if (!t.acked) {
      t.acked = true;
      // Only a client that waits for it is told (see Welcome::queue_cap).
      auto c = peers.find(t.client);
      if (c != peers.end() && (t.try_submit || options.memory > 0))
        c->second.conn->send(FrameType::kQueued, 0, t.client_task, nullptr);
    }
  }

  // Moves waiting tasks into the queue while they fit, and queued tasks to
  // free workers, until neither can move. Re-entrant calls (a send that
  // fails closes a connection, whose handler calls pump) only ask for
  // another round.
  void pump() {
    if (pumping) {
      pump_again = true;
      return;
    }
    pumping = true;
    do {
      pump_again = false;
      while (!waiting.empty()) {
        const std::uint64_t id = waiting.front();
        Task& t = tasks.at(id);
        if (options.memory > 0 && queued_bytes + t.payload->size() > options.memory) break;
        waiting.pop_front();
        auto c = peers.find(t.client);
        if (c != peers.end() && !t.acked && c->second.parked > 0) {
          if (--c->second.parked < kMaxParkedPerClient) c->second.conn->resume_reading();
        }
        enqueue(id, t);
      }
      while (!queue.empty() && !idle.empty()) {
        const std::uint64_t worker_id = idle.front();
        idle.pop_front();
        Peer& w = peers.at(worker_id);
        if (w.conn->closed()) continue;  // going away: its on_close is on the way
        const std::uint64_t id = queue.front();
        queue.pop_front();
        Task& t = tasks.at(id);
        queued_bytes -= t.payload->size();
        t.state = TaskState::kRunning;
        t.worker = worker_id;
        w.running = id;
        w.running_owner = t.owner;
        w.running_setup = false;
        pump_again = true;  // bytes were freed: waiting tasks may fit now
        w.conn->send(FrameType::kTask, 0, id, t.payload);
      }
    } while (pump_again);
    pumping = false;
  }
  bool pump_again = false;

  // Sends the worker its next set-up call, or makes it free for tasks.
  void worker_ready(std::uint64_t worker_id, Peer& w) {
    w.running = 0;
    w.running_setup = false;
    if (!w.setups.empty()) {
      const std::size_t i = w.setups.front();
      w.running_setup = true;
      w.running_owner = setups[i].owner;
      w.conn->send(FrameType::kTask, kFlagSetup, i + 1, setups[i].payload);
      return;
    }
    if (!w.ready) {
      // Ready for tasks: a managed worker that dies from here on is replaced
      // at once; one that died before (its set-up calls killed it, say) is
      // replaced after a growing delay, like one that never connected.
      w.ready = true;
      for (ManagedWorker* m : managed)
        if (m->process.pid == w.pid) m->connected = true;
    }
    idle.push_back(worker_id);
    pump();
  }

  void on_done(std::uint64_t worker_id, Peer& w, Frame&& f) {
    auto payload = std::make_shared<const Bytes>(std::move(f.payload));
    auto msg = detail::decode_result(payload);
    if (!msg) return drop(w, msg.status().message());
    if ((f.header.flags & kFlagSetup) != 0) {
      if (!w.running_setup || w.setups.empty() || f.header.id != w.setups.front() + 1)
        return drop(w, "done: a set-up call it was not given");
      const std::size_t i = w.setups.front();
      w.setups.pop_front();
      if (msg->outcome != Outcome::kOk) {
        log("set-up call " + std::to_string(i + 1) + " failed on " + who(w) + ": " + msg->message);
        if (setups[i].error.empty()) setups[i].error = msg->message;
      }
      if (!msg->name.empty()) (void)shm::remove(msg->name);  // set-up results are not kept
      if (setups[i].pending.erase(worker_id) != 0) answer_setup(i);
      released_hold(setups[i].owner);
      return worker_ready(worker_id, w);
    }
    if (w.running_setup || f.header.id != w.running || w.running == 0)
      return drop(w, "done: a task it was not given");
    ++w.done;
    auto t = tasks.find(w.running);
    if (t == tasks.end()) {
      // Cancelled or timed out while it ran: nobody takes the result.
      if (!msg->name.empty()) (void)shm::remove(msg->name);
      released_hold(w.running_owner);
    } else {
      if (!msg->name.empty()) {
        auto n = parse_name(msg->name);
        if (!n || n->owner != t->second.owner) return drop(w, "done: a result region of another owner");
      }
      resolve(w.running, std::move(payload));
    }
    worker_ready(worker_id, w);
  }

  // Ends task `id` with `payload` (a result image) sent to its client.
  void resolve(std::uint64_t id, std::shared_ptr<const Bytes> payload) {
    auto it = tasks.find(id);
    if (it == tasks.end()) return;
    Task& t = it->second;
    auto c = peers.find(t.client);
    if (c != peers.end()) {
      c->second.tasks.erase(t.client_task);
      c->second.conn->send(FrameType::kResult, 0, t.client_task, std::move(payload));
    }
    close_timer(t);
    tasks.erase(it);
    ++completed;
  }

  void resolve_with(std::uint64_t id, Outcome outcome, const std::string& message) {
    auto payload = detail::encode_result(outcome, message, "", nullptr);
    if (!payload) {
      log("cannot encode a result: " + payload.status().to_string());
      return;
    }
    resolve(id, std::make_shared<const Bytes>(std::move(payload).value()));
  }

  void send_result_to(Peer& p, std::uint64_t client_task, Outcome outcome, const std::string& message) {
    auto payload = detail::encode_result(outcome, message, "", nullptr);
    if (payload)
      p.conn->send(FrameType::kResult, 0, client_task,
                   std::make_shared<const Bytes>(std::move(payload).value()));
  }

  // Takes task `id` out of wherever it is and resolves it as `outcome`. A
  // running task's worker is told to stop; it stays busy until it reports,
  // and its result is then discarded.
  void cancel_task(std::uint64_t id, Outcome outcome, const std::string& message) {
    auto it = tasks.find(id);
    if (it == tasks.end()) return;
    unlink_task(id, it->second);
    resolve_with(id, outcome, message);
    pump();
  }

  // Removes task `id` from the waiting list, the queue, or its worker.
  void unlink_task(std::uint64_t id, Task& t) {
    switch (t.state) {
      case TaskState::kWaiting: {
        waiting.erase(std::remove(waiting.begin(), waiting.end(), id), waiting.end());
        auto c = peers.find(t.client);
        if (c != peers.end() && !t.acked && c->second.parked > 0) {
          if (--c->second.parked < kMaxParkedPerClient) c->second.conn->resume_reading();
        }
        break;
      }
      case TaskState::kQueued:
        queue.erase(std::remove(queue.begin(), queue.end(), id), queue.end());
        queued_bytes -= t.payload->size();
        break;
      case TaskState::kRunning: {
        auto w = peers.find(t.worker);
        if (w != peers.end()) {
          w->second.conn->send(FrameType::kCancel, 0, id, nullptr);
          // The worker's thread is busy running the function: the signal
          // reaches it there (worker.hpp, kCancelSignal).
          if (w->second.pid > 0) {
            sigval v{};
            v.sival_ptr = reinterpret_cast<void*>(static_cast<std::uintptr_t>(id));
            ::sigqueue(static_cast<pid_t>(w->second.pid), kCancelSignal, v);
          }
        }
        break;
      }
    }
  }

  // A client left: its tasks end without an answer.
  void forget_task(std::uint64_t id) {
    auto it = tasks.find(id);
    if (it == tasks.end()) return;
    unlink_task(id, it->second);
    close_timer(it->second);
    tasks.erase(it);
  }

  void on_cancel(Peer& p, std::uint64_t client_task) {
    auto it = p.tasks.find(client_task);
    if (it == p.tasks.end()) return;  // finished already: nothing changes
    cancel_task(it->second, Outcome::kCancelled, "cancelled");
  }

  // --- everywhere -------------------------------------------------------------------

  void on_everywhere(std::uint64_t peer_id, Peer& p, Frame&& f) {
    auto payload = std::make_shared<const Bytes>(std::move(f.payload));
    auto s = detail::decode_submit(payload);
    if (!s) return drop(p, s.status().message());
    if (s->owner != p.owner) return drop(p, "everywhere: a call for another owner than the client's");
    const std::size_t i = setups.size();
    Setup& setup = setups.emplace_back();
    setup.payload = std::move(payload);
    setup.owner = s->owner;
    setup.client = peer_id;
    setup.client_task = f.header.id;
    std::vector<std::uint64_t> now_idle;
    for (auto& [id, w] : peers) {
      if (w.role != Role::kWorker) continue;
      w.setups.push_back(i);
      setup.pending.insert(id);
      if (w.running == 0 && !w.running_setup) now_idle.push_back(id);
    }
    for (std::uint64_t id : now_idle) {
      idle.erase(std::remove(idle.begin(), idle.end(), id), idle.end());
      worker_ready(id, peers.at(id));
    }
    answer_setup(i);
  }

  void answer_setup(std::size_t i) {
    Setup& s = setups[i];
    if (s.answered || !s.pending.empty()) return;
    s.answered = true;
    auto c = peers.find(s.client);
    if (c == peers.end()) return;
    if (s.error.empty()) {
      send_result_to(c->second, s.client_task, Outcome::kOk, "");
    } else {
      send_result_to(c->second, s.client_task, Outcome::kError, s.error);
    }
  }

  // --- status -------------------------------------------------------------------------

  void send_status(Peer& p, std::uint64_t query) {
    DispatcherStatus s;
    s.connections = peers.size();
    s.cumulative = cumulative;
    s.awaiting = waiting.size() + queue.size();
    s.completed = completed;
    s.queued_bytes = queued_bytes;
    s.queued_peak = queued_peak;
    s.queued_cap = options.memory;
    s.bytes_in = closed_bytes_in;
    s.bytes_out = closed_bytes_out;
    for (auto& [id, peer] : peers) {
      s.bytes_in += peer.conn->bytes_in();
      s.bytes_out += peer.conn->bytes_out();
    }
    for (auto& [id, w] : peers) {
      if (w.role != Role::kWorker) continue;
      const bool busy = w.running != 0 || w.running_setup;
      if (busy && !w.running_setup && tasks.count(w.running) != 0) ++s.executing;
      s.workers.push_back(WorkerStatus{w.pid, w.running_setup ? "setup" : busy ? "busy" : "idle", w.done});
    }
    std::sort(s.workers.begin(), s.workers.end(),
              [](const WorkerStatus& a, const WorkerStatus& b) { return a.pid < b.pid; });
    auto payload = detail::encode_status(s);
    if (!payload) return drop(p, "cannot encode status: " + payload.status().message());
    p.conn->send(FrameType::kStatus, 0, query, std::make_shared<const Bytes>(std::move(payload).value()));
  }
};

Result<std::unique_ptr<Dispatcher>> Dispatcher::start(DispatcherOptions options) noexcept {
  try {
    std::unique_ptr<Dispatcher> d(new Dispatcher);
    d->core_ = std::make_shared<Core>(std::move(options));
    std::promise<Status> opened;
    auto ready = opened.get_future();
    std::shared_ptr<Core> core = d->core_;
    d->thread_ = std::thread([core, &opened] {
      Status s = core->open_loop(/*signals=*/false);
      const bool ok = s.is_ok();
      opened.set_value(std::move(s));
      if (ok) core->run_loop();
    });
    Status s = ready.get();
    if (!s) {
      d->thread_.join();
      return s;
    }
    d->socket_path_ = d->core_->options.socket_path;
    d->pid_ = ::getpid();
    return d;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::system_error& e) {
    return Status(Code::kIo, std::string("cannot start the dispatcher thread: ") + e.what());
  }
}

Status Dispatcher::run(DispatcherOptions options, std::function<void(const std::string&)> on_listening,
                       bool handle_signals) noexcept {
  try {
    Core core(std::move(options));
    KURA_RETURN_IF_ERROR(core.open_loop(handle_signals));
    if (on_listening) on_listening(core.options.socket_path);
    core.run_loop();
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void Dispatcher::stop() noexcept {
  if (pid_ != ::getpid()) {
    // A forked child: the thread and its loop are the parent's. Let go of
    // the handle without joining a thread that does not exist here.
    if (thread_.joinable()) new std::thread(std::move(thread_));  // NOLINT: deliberately never freed
    return;
  }
  if (core_) core_->request_stop();
  if (thread_.joinable()) thread_.join();
}

Dispatcher::~Dispatcher() {
  stop();
}

}  // namespace kura::ipc
