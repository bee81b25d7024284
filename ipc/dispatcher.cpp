#include "kura/ipc/dispatcher.hpp"

#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <future>
#include <new>

#include "dispatcher_internal.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

using detail::Connection;

namespace {

std::string default_log_prefix(const std::string& line) {
  return "kura dispatcher: " + line + "\n";
}

const char* frame_name(FrameType t) {
  switch (t) {
    case FrameType::kHello: return "hello";
    case FrameType::kWelcome: return "welcome";
    case FrameType::kSubmit: return "submit";
    case FrameType::kQueued: return "queued";
    case FrameType::kFull: return "full";
    case FrameType::kCancel: return "cancel";
    case FrameType::kResult: return "result";
    case FrameType::kTask: return "task";
    case FrameType::kDone: return "done";
    case FrameType::kRevoke: return "revoke";
    case FrameType::kStatusQuery: return "status query";
    case FrameType::kStatus: return "status";
    case FrameType::kEverywhere: return "everywhere";
    case FrameType::kHeartbeat: return "heartbeat";
    case FrameType::kRefused: return "refused";
    case FrameType::kPull: return "pull";
    case FrameType::kObject: return "object";
    case FrameType::kChunk: return "chunk";
    case FrameType::kAck: return "ack";
    case FrameType::kPush: return "push";
    case FrameType::kStored: return "stored";
    case FrameType::kGoodbye: return "goodbye";
  }
  return "unknown";
}

}  // namespace

Result<std::string> default_socket_path() noexcept {
  auto endpoint = detail::default_endpoint();
  if (!endpoint) return endpoint.status();
  return std::move(endpoint->path);
}

Dispatcher::Core::Core(DispatcherOptions o) : options(std::move(o)), scheduler(options.memory) {
  if (!options.log)
    options.log = [](const std::string& line) { std::fputs(default_log_prefix(line).c_str(), stderr); };
}

std::uint64_t Dispatcher::Core::now_ms() {
  return uv_now(&loop);
}

std::string Dispatcher::Core::who_client(const Client& c) const {
  return "client pid " + std::to_string(c.pid);
}

std::string Dispatcher::Core::who_worker(std::uint64_t id, const Worker& w) const {
  if (w.conn->peer().transport == "tcp")
    return "worker " + std::to_string(id) + " (" + w.conn->peer().address + ")";
  return "worker " + std::to_string(id) + " (pid " + std::to_string(w.pid) + ")";
}

// --- start and stop --------------------------------------------------------------

Status Dispatcher::Core::open_loop(bool signals) {
  detail::ignore_sigpipe();
  if (options.socket_path.empty()) {
    KURA_ASSIGN_OR_RETURN(options.socket_path, default_socket_path());
  }
  if (options.frame_limit < 4096) return invalid_argument("frame_limit below 4096 bytes");
  regions_home = detail::region_home();
  if (options.heartbeat_ms == 0 || options.heartbeat_timeout_ms <= options.heartbeat_ms)
    return invalid_argument("heartbeat_timeout_ms must be longer than heartbeat_ms, which must not be 0");
  if (options.hello_timeout_ms == 0) return invalid_argument("hello_timeout_ms is 0");
  if (options.cancel_grace_ms == 0) return invalid_argument("cancel_grace_ms is 0");
  if (options.max_client_backlog == 0) return invalid_argument("max_client_backlog is 0");
  if (options.worker_window > kMaxWorkerWindow)
    return invalid_argument("worker_window over " + std::to_string(kMaxWorkerWindow));
  KURA_RETURN_IF_ERROR(pool_command());
  if (!options.trace_path.empty()) {
    KURA_ASSIGN_OR_RETURN(tracer, detail::Tracer::open(options.trace_path));
  }
  if (int rc = uv_loop_init(&loop); rc != 0)
    return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
  loop.data = this;
  uv_async_init(&loop, &stop_async, [](uv_async_t* a) {
    auto* core = static_cast<Core*>(a->loop->data);
    core->guarded([core] { core->begin_stop(); });
  });
  uv_timer_init(&loop, &restart_timer);
  uv_timer_init(&loop, &kill_timer);
  uv_timer_init(&loop, &timeout_timer);
  uv_timer_init(&loop, &sweep_timer);
  uv_timer_init(&loop, &refuse_timer);
  uv_timer_init(&loop, &ping_timer);
  handle_signals = signals;
  if (signals) {
    uv_signal_init(&loop, &sigint);
    uv_signal_init(&loop, &sigterm);
    auto on_signal = [](uv_signal_t* s, int signum) {
      auto* core = static_cast<Core*>(s->loop->data);
      core->guarded([core, signum] {
        core->log(std::string("stopping on ") + (signum == SIGINT ? "SIGINT" : "SIGTERM"));
        core->begin_stop();
      });
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
  Status listening = endpoint.is_ok() ? Status::ok() : endpoint.status();
  if (endpoint) {
    auto l = detail::listen(
        &loop, *endpoint,
        [this](std::unique_ptr<detail::Stream> s) { guarded([&] { on_accept(std::move(s)); }); },
        [this](const std::string& line) { log(line); });
    if (l) {
      listener = std::move(l).value();
    } else {
      listening = l.status();
    }
  }
  if (listening && !options.tcp_listen.empty()) listening = listen_tcp();
  if (!listening) {
    if (listener) listener->close();
    close_all_handles();
    uv_run(&loop, UV_RUN_DEFAULT);
    uv_loop_close(&loop);
    return listening;
  }
  start_liveness();
  for (unsigned i = 0; i < options.workers; ++i) spawn_worker();
  std::lock_guard<std::mutex> lock(stop_mu);
  open = true;
  return Status::ok();
}

Status Dispatcher::Core::listen_tcp() {
  KURA_ASSIGN_OR_RETURN(detail::Endpoint at, detail::parse_endpoint(options.tcp_listen));
  if (at.kind != detail::Endpoint::Kind::kTcp)
    return invalid_argument("tcp_listen \"" + options.tcp_listen + "\" is not a tcp://HOST:PORT endpoint");
  KURA_ASSIGN_OR_RETURN(
      tcp_listener,
      detail::listen(
          &loop, at, [this](std::unique_ptr<detail::Stream> s) { guarded([&] { on_accept(std::move(s)); }); },
          [this](const std::string& line) { log(line); }, options.secret_file));
  tcp_address = tcp_listener->address();
  log("listening on " + tcp_address);
  return Status::ok();
}

void Dispatcher::Core::run_loop() {
  uv_run(&loop, UV_RUN_DEFAULT);
  {
    std::lock_guard<std::mutex> lock(stop_mu);
    open = false;
  }
  uv_loop_close(&loop);
}

void Dispatcher::Core::request_stop() {
  std::lock_guard<std::mutex> lock(stop_mu);
  if (open) uv_async_send(&stop_async);
}

void Dispatcher::Core::close_all_handles() {
  auto close = [](auto* h) {
    if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(h)))
      uv_close(reinterpret_cast<uv_handle_t*>(h), nullptr);
  };
  close(&stop_async);
  close(&restart_timer);
  close(&kill_timer);
  close(&timeout_timer);
  close(&sweep_timer);
  close(&refuse_timer);
  close(&ping_timer);
  if (handle_signals) {
    close(&sigint);
    close(&sigterm);
  }
}

void Dispatcher::Core::begin_stop() {
  if (stopping) return;
  stopping = true;
  if (listener) listener->close();
  if (tcp_listener) tcp_listener->close();
  std::vector<Connection*> conns;
  for (auto& [id, n] : newcomers) conns.push_back(n.conn);
  for (auto& [id, c] : clients) conns.push_back(c.conn);
  for (Connection* c : conns)
    c->close(detail::CloseReason::kLocal, Status(Code::kIo, "the dispatcher is stopping"));
  close_workers_for_stop();
  while (!recheck_timers.empty()) close_recheck(*recheck_timers.begin());
  uv_timer_stop(&restart_timer);
  uv_timer_stop(&timeout_timer);
  uv_timer_stop(&sweep_timer);
  uv_timer_stop(&ping_timer);
  // Managed workers see their connection close and exit; those that do not
  // are killed after a grace period.
  if (managed.empty()) {
    close_all_handles();
  } else {
    uv_timer_start(
        &kill_timer,
        [](uv_timer_t* t) {
          auto* core = static_cast<Core*>(t->loop->data);
          for (ManagedWorker* m : core->managed) uv_process_kill(&m->process, SIGKILL);
        },
        kStopGraceMs, 0);
  }
}

// --- connections ---------------------------------------------------------------------

void Dispatcher::Core::on_accept(std::unique_ptr<detail::Stream> stream) {
  if (stopping || !admit_connection()) return;  // the stream closes as it goes
  const std::int64_t pid = stream->peer().pid;
  // Until it says who it is, a connection may send only a small hello.
  const std::uint64_t write_limit = std::max<std::uint64_t>(64u << 20, 4ull * options.frame_limit);
  Connection* c = Connection::adopt(std::move(stream), kHelloLimit, write_limit);
  const std::uint64_t id = next_peer++;
  c->id = id;
  c->set_partial_frame_timeout(options.partial_frame_timeout_ms);
  newcomers[id] = Newcomer{c, pid, now_ms()};
  Status s =
      c->start(Connection::Callbacks{[this](Connection& conn, Frame&& f) { on_frame(conn.id, std::move(f)); },
                                     [this](Connection& conn, detail::CloseReason reason, const Status& why) {
                                       on_close(conn.id, reason, why);
                                     }});
  if (!s) c->close(detail::CloseReason::kIo, s);
}

void Dispatcher::Core::drop(Connection* conn, const std::string& why) {
  conn->close(detail::CloseReason::kLocal, corrupt(why));
}

// Tells the peer why it is refused, then closes its connection once that is
// written (the frames of a loop turn are written at its end).
void Dispatcher::Core::refuse(Connection* conn, const std::string& why) {
  log("refused " + why);
  auto text = detail::encode_refused(why);
  if (text) conn->send(FrameType::kRefused, 0, 0, std::make_shared<const Bytes>(std::move(text).value()));
  conn->pause_reading();
  to_refuse.push_back(conn);
  uv_timer_start(
      &refuse_timer,
      [](uv_timer_t* t) {
        auto* core = static_cast<Core*>(t->loop->data);
        core->guarded([core] {
          std::vector<Connection*> conns;
          conns.swap(core->to_refuse);
          for (Connection* c : conns)
            c->close(detail::CloseReason::kLocal, Status(Code::kInvalidArgument, "refused"));
        });
      },
      0, 0);
}

void Dispatcher::Core::on_frame(std::uint64_t peer, Frame&& f) {
  if (auto n = newcomers.find(peer); n != newcomers.end()) {
    if (f.header.type != FrameType::kHello) return drop(n->second.conn, "the first frame is not a hello");
    return on_hello(peer, n->second, f);
  }
  if (auto c = clients.find(peer); c != clients.end()) {
    Client& cl = c->second;
    switch (f.header.type) {
      case FrameType::kSubmit: return on_submit(peer, cl, std::move(f));
      case FrameType::kCancel: return on_cancel(cl, f.header.id);
      case FrameType::kStatusQuery: return send_status(cl, f.header.id);
      case FrameType::kEverywhere: return on_everywhere(peer, cl, std::move(f));
      default: return drop(cl.conn, std::string("a client sent a ") + frame_name(f.header.type) + " frame");
    }
  }
  if (auto w = workers.find(peer); w != workers.end()) {
    Worker& wk = w->second;
    wk.last_heard_ms = now_ms();
    switch (f.header.type) {
      case FrameType::kHeartbeat: return;
      case FrameType::kDone: return on_done(peer, wk, std::move(f));
      case FrameType::kPull: return on_pull(wk, std::move(f));
      case FrameType::kAck: return on_worker_ack(wk, f);
      case FrameType::kPush: return on_push(wk, std::move(f));
      case FrameType::kChunk: return on_worker_chunk(wk, std::move(f));
      default: return drop(wk.conn, std::string("a worker sent a ") + frame_name(f.header.type) + " frame");
    }
  }
}

void Dispatcher::Core::on_hello(std::uint64_t peer, Newcomer& n, const Frame& f) {
  Connection* conn = n.conn;
  const std::int64_t pid = n.pid;
  auto h = detail::decode_hello(f.payload);
  if (!h) return drop(conn, h.status().message());
  if (h->protocol != kProtocolVersion)
    return refuse(
        conn, detail::version_mismatch("a " + h->role + " (pid " + std::to_string(pid) + ")", h->protocol));
  if (h->role == "worker") {
    std::size_t unseen = 0;
    for (const std::string& name : h->functions)
      if (!scheduler.find(name)) ++unseen;
    if (scheduler.functions() + unseen > detail::kMaxKnownFunctions)
      return refuse(conn, "a worker (pid " + std::to_string(pid) + ") whose " + std::to_string(unseen) +
                              " new function names would take the dispatcher past the " +
                              std::to_string(detail::kMaxKnownFunctions) + " it keeps");
  }
  const bool remote = conn->peer().transport == "tcp";
  if (remote && h->role == "client")
    return refuse(conn, "a client connecting over TCP from " + conn->peer().address +
                            ": clients connect on the dispatcher's Unix socket");
  newcomers.erase(peer);
  detail::Welcome welcome;
  welcome.frame_limit = options.frame_limit;
  welcome.pid = ::getpid();
  welcome.queue_cap = options.memory;
  if (h->role == "client") {
    if (h->owner == shm::kKeptOwner || !shm::owner_alive(h->owner))
      return drop(conn, "hello: the client's owner " + std::to_string(h->owner) + " has no live lease");
    Client& c = clients[peer];
    c.conn = conn;
    c.pid = pid;
    c.owner = h->owner;
  } else {
    Worker& w = workers[peer];
    w.conn = conn;
    w.pid = pid;
    // A start token is believed only from the process it was given to (or
    // one it started: a wrapper script), and once: a token read from a worker's environment by another
    // process makes that process an outside worker, not the managed one.
    // A worker over TCP has no pid this host can check: never a managed one.
    if (ManagedWorker* m = remote ? nullptr : managed_by_token(h->token);
        m != nullptr && m->peer == 0 && descends_from(pid, m->process.pid)) {
      w.token = h->token;
      m->peer = peer;
    } else if (h->token != 0) {
      log("a worker (pid " + std::to_string(pid) +
          ") sent a start token that is not its own: taken as a worker "
          "the dispatcher did not start");
    }
    w.functions = std::move(h->functions);
    w.features = h->features;
    w.last_heard_ms = now_ms();
    std::vector<detail::FnId> fns;
    fns.reserve(w.functions.size());
    for (const std::string& name : w.functions) {
      fns.push_back(scheduler.intern(name));
      announced.insert(fns.back());
    }
    const std::uint32_t slots =
        (h->features & detail::kFeatureQueue) != 0 ? std::max<std::uint32_t>(1, options.worker_window) : 1;
    scheduler.add_worker(peer, std::move(fns), slots);
    if (cumulative++ == 0) end_unknown_functions();
    for (std::uint64_t s : setup_order) {
      w.setups.push_back(s);
      setups[s].pending.insert(peer);
    }
    welcome.heartbeat_ms = options.heartbeat_ms;
    welcome.regions = regions_home;
    welcome.heartbeat_timeout_ms = options.heartbeat_timeout_ms;
  }
  conn->set_read_limit(options.frame_limit);
  auto bytes = detail::encode_welcome(welcome);
  if (!bytes) return drop(conn, "cannot encode welcome: " + bytes.status().message());
  conn->send(FrameType::kWelcome, 0, 0, std::make_shared<const Bytes>(std::move(bytes).value()));
  if (auto w = workers.find(peer); w != workers.end()) worker_ready(peer, w->second);
}

void Dispatcher::Core::on_close(std::uint64_t peer, detail::CloseReason reason, const Status& why) {
  auto note = [&](Connection* conn) {
    closed_bytes_in += conn->bytes_in();
    closed_bytes_out += conn->bytes_out();
  };
  to_refuse.erase(
      std::remove_if(to_refuse.begin(), to_refuse.end(), [&](Connection* c) { return c->id == peer; }),
      to_refuse.end());
  if (auto n = newcomers.find(peer); n != newcomers.end()) {
    note(n->second.conn);
    if (!stopping)
      log("closed a connection (pid " + std::to_string(n->second.pid) + ") before hello: " + why.message());
    newcomers.erase(n);
    return;
  }
  if (auto c = clients.find(peer); c != clients.end()) {
    Client cl = std::move(c->second);
    clients.erase(c);
    note(cl.conn);
    // A client that hangs up is business as usual; anything else is worth a line.
    if (!stopping && reason != detail::CloseReason::kPeerClosed)
      log("closed connection of " + who_client(cl) + ": " + why.message());
    client_gone(cl);
    setups_of_gone_client(peer);
    pump();
    return;
  }
  if (auto w = workers.find(peer); w != workers.end()) {
    Worker wk = std::move(w->second);
    workers.erase(w);
    note(wk.conn);
    if (!stopping) log("closed connection of " + who_worker(peer, wk) + ": " + why.message());
    worker_lost(peer, wk, why.message());
    pump();
  }
}

// --- status ----------------------------------------------------------------------------

void Dispatcher::Core::send_status(Client& c, std::uint64_t query) {
  DispatcherStatus s;
  s.connections = newcomers.size() + clients.size() + workers.size();
  s.cumulative = cumulative;
  s.awaiting = scheduler.waiting_count() + scheduler.queued_count();
  s.completed = completed;
  s.queued_bytes = scheduler.queued_bytes();
  s.queued_peak = scheduler.peak_bytes();
  s.queued_cap = options.memory;
  s.unroutable = scheduler.unroutable_count();
  s.workers_dropped = workers_dropped;
  s.workers_started = workers_started;
  s.pulls = pulls;
  s.pulled_bytes = pulled_bytes;
  s.pushed_bytes = pushed_bytes;
  s.bytes_in = closed_bytes_in;
  s.bytes_out = closed_bytes_out;
  auto count = [&](Connection* conn) {
    s.bytes_in += conn->bytes_in();
    s.bytes_out += conn->bytes_out();
  };
  for (auto& [id, n] : newcomers) count(n.conn);
  for (auto& [id, cl] : clients) count(cl.conn);
  for (auto& [id, w] : workers) {
    count(w.conn);
    const bool running_task = w.running() != 0 && tasks.count(w.running()) != 0;
    if (running_task) ++s.executing;
    for (std::size_t i = 1; i < w.sent.size(); ++i) s.waiting_on_workers += tasks.count(w.sent[i].key);
    const char* state = w.setup_running != 0 ? "setup" : w.running() != 0 ? "busy" : "idle";
    s.workers.push_back(WorkerStatus{id, w.pid, state, w.done, w.functions});
  }
  std::sort(s.workers.begin(), s.workers.end(),
            [](const WorkerStatus& a, const WorkerStatus& b) { return a.id < b.id; });
  auto payload = detail::encode_status(s);
  if (!payload) return drop(c.conn, "cannot encode status: " + payload.status().message());
  c.conn->send(FrameType::kStatus, 0, query, std::make_shared<const Bytes>(std::move(payload).value()));
}

// --- the public face -----------------------------------------------------------------

Result<std::unique_ptr<Dispatcher>> Dispatcher::start(DispatcherOptions options) noexcept {
  try {
    std::unique_ptr<Dispatcher> d(new Dispatcher);
    d->core_ = std::make_shared<Core>(std::move(options));
    std::promise<Status> opened;
    auto ready = opened.get_future();
    std::shared_ptr<Core> core = d->core_;
    d->thread_ = std::thread([core, &opened] {
      Status s;
      try {
        s = core->open_loop(/*signals=*/false);
      } catch (const std::bad_alloc&) {
        s = Status::out_of_memory();
      }
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
    d->tcp_address_ = d->core_->tcp_address;
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
    if (on_listening && !core.tcp_address.empty()) on_listening(core.tcp_address);
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
