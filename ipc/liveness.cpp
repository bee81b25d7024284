// Liveness and bounds of peers: a sweep drops connections that did not say
// hello in time and workers whose heartbeats stopped; the connection cap;
// removing what a dead client or a lost worker left behind.
#include <sys/resource.h>

#include <algorithm>

#include "dispatcher_internal.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

namespace {

// Descriptors the dispatcher keeps for itself (loop, listener, timers,
// region files) below the descriptor limit.
constexpr std::uint64_t kReservedDescriptors = 32;

std::string hex_of(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

}  // namespace

// A quarter of the shortest deadline the sweep enforces, at least 50 ms.
std::uint64_t Dispatcher::Core::sweep_every() const {
  const std::uint64_t shortest =
      std::min({options.heartbeat_timeout_ms, options.hello_timeout_ms, options.cancel_grace_ms});
  return std::max<std::uint64_t>(50, shortest / 4);
}

void Dispatcher::Core::start_liveness() {
  max_connections = options.max_connections;
  if (max_connections == 0) {
    rlimit r{};
    const std::uint64_t limit =
        ::getrlimit(RLIMIT_NOFILE, &r) == 0 && r.rlim_cur != RLIM_INFINITY ? r.rlim_cur : 4096;
    max_connections = limit > kReservedDescriptors + 8 ? limit - kReservedDescriptors : 8;
  }
  const std::uint64_t every = sweep_every();
  last_sweep_ms = now_ms();
  uv_timer_start(
      &sweep_timer,
      [](uv_timer_t* t) {
        auto* core = static_cast<Core*>(t->loop->data);
        core->guarded([core] { core->on_sweep(); });
      },
      every, every);
  uv_timer_start(
      &ping_timer,
      [](uv_timer_t* t) {
        auto* core = static_cast<Core*>(t->loop->data);
        core->guarded([core] { core->ping_workers(); });
      },
      options.heartbeat_ms, options.heartbeat_ms);
}

// A worker over TCP cannot tell a quiet dispatcher from a cut network (no
// reset ever comes): it asks for these and drops a dispatcher silent past
// heartbeat_timeout_ms.
void Dispatcher::Core::ping_workers() {
  for (auto& [id, w] : workers)
    if ((w.features & detail::kFeaturePing) != 0) w.conn->send(FrameType::kHeartbeat, 0, 0, nullptr);
}

// A worker that reconnects takes a connection that closes without kGoodbye
// for a drop; after kGoodbye it exits.
// (on_close is called from the loop later, so the map stays as it is here.)
void Dispatcher::Core::close_workers_for_stop() {
  const Status why(Code::kIo, "the dispatcher is stopping");
  for (auto& [id, w] : workers) {
    if ((w.features & detail::kFeatureGoodbye) != 0) w.conn->send(FrameType::kGoodbye, 0, 0, nullptr);
    w.conn->close_when_written(detail::CloseReason::kLocal, why);
  }
}

// True when one more connection may be kept; past the cap it is refused
// (and said so in the log once per burst). New connections that have not
// said hello may take at most a quarter of the cap: past that the oldest of
// them makes room, so that idle connections cannot lock real peers out.
bool Dispatcher::Core::admit_connection() {
  const std::uint64_t open_now = newcomers.size() + clients.size() + workers.size();
  if (open_now >= max_connections) {
    if (refused_connections++ == 0)
      log("refusing connections: " + std::to_string(open_now) + " are open, the most allowed (" +
          std::to_string(max_connections) + ")");
    return false;
  }
  if (refused_connections > 0) {
    log("accepting connections again (" + std::to_string(refused_connections) + " refused)");
    refused_connections = 0;
  }
  const std::uint64_t newcomer_cap = std::max<std::uint64_t>(4, max_connections / 4);
  if (newcomers.size() >= newcomer_cap) {
    // Peer ids count up in the order of accepting (since_ms ties within a
    // millisecond): the smallest is the oldest.
    std::uint64_t oldest = 0;
    for (const auto& [id, n] : newcomers)
      if (!n.conn->closed() && (oldest == 0 || id < oldest)) oldest = id;
    if (oldest != 0)
      newcomers.at(oldest).conn->close(
          detail::CloseReason::kLocal,
          Status(Code::kIo, "too many connections wait to say hello: the oldest goes"));
  }
  return true;
}

void Dispatcher::Core::on_sweep() {
  if (stopping) return;
  const std::uint64_t now = now_ms();
  const std::uint64_t every = sweep_every();
  // The loop itself was held up (the machine stalled, the process was
  // stopped): what peers sent meanwhile is still unread, so silence says
  // nothing about them. Start their clocks again.
  const bool stalled = now - last_sweep_ms > every + options.heartbeat_timeout_ms / 2;
  last_sweep_ms = now;
  if (stalled) {
    for (auto& [id, w] : workers) {
      w.last_heard_ms = now;
      for (Worker::Sent& s : w.sent)
        if (s.stop_sent_ms != 0) s.stop_sent_ms = now;
    }
    for (auto& [id, n] : newcomers) n.since_ms = now;
    return;
  }
  shed_backlog();
  std::vector<detail::Connection*> late;
  for (auto& [id, n] : newcomers)
    if (now - n.since_ms > options.hello_timeout_ms) late.push_back(n.conn);
  for (detail::Connection* c : late)
    c->close(detail::CloseReason::kTimeout,
             Status(Code::kIo, "no hello within " + std::to_string(options.hello_timeout_ms) + " ms"));
  for (auto& [id, w] : workers) {
    if (w.conn->closed()) continue;
    // The oldest stop it was sent and has not answered.
    std::uint64_t stop_sent_ms = 0;
    for (const Worker::Sent& s : w.sent)
      if (s.stop_sent_ms != 0 && (stop_sent_ms == 0 || s.stop_sent_ms < stop_sent_ms))
        stop_sent_ms = s.stop_sent_ms;
    if (now - w.last_heard_ms > options.heartbeat_timeout_ms) {
      log(who_worker(id, w) + " sent nothing for " + std::to_string(now - w.last_heard_ms) +
          " ms (its heartbeat deadline is " + std::to_string(options.heartbeat_timeout_ms) + " ms): dropped");
    } else if (stop_sent_ms != 0 && now - stop_sent_ms > options.cancel_grace_ms) {
      log(who_worker(id, w) + " still runs a task it was told to stop " + std::to_string(now - stop_sent_ms) +
          " ms ago (the grace is " + std::to_string(options.cancel_grace_ms) + " ms): dropped");
    } else {
      continue;
    }
    ++workers_dropped;
    kill_managed(w.token);
    w.conn->close(detail::CloseReason::kTimeout, Status(Code::kIo, "dropped by the liveness sweep"));
  }
}

void Dispatcher::Core::note_region_result(Client& c, const std::shared_ptr<const Bytes>& payload,
                                          const std::string& region) {
  c.region_results.emplace_back(payload, region);
  if (c.region_results.size() < 2 * c.region_results_trimmed + 64) return;
  // Results written by now are the client's: forget them (amortised O(1)).
  std::erase_if(c.region_results, [](const auto& r) { return r.first.expired(); });
  c.region_results_trimmed = c.region_results.size();
}

// While the results waiting for clients that do not read add up to more
// than max_client_backlog, the client with the most waiting goes: its tasks
// are cancelled (on_close) and the regions of results it was not sent are
// removed (a result whose payload only the connection's queue still holds
// was not written; one written in part cannot be read).
void Dispatcher::Core::shed_backlog() {
  for (;;) {
    std::uint64_t total = 0, most = 0;
    Client* slowest = nullptr;
    for (auto& [id, c] : clients) {
      if (c.conn->closed()) continue;
      const std::uint64_t b = c.conn->write_queue_bytes();
      total += b;
      if (b > most) {
        most = b;
        slowest = &c;
      }
    }
    if (total <= options.max_client_backlog || slowest == nullptr) return;
    std::vector<std::string> unsent;
    for (const auto& [payload, region] : slowest->region_results)
      if (!payload.expired()) unsent.push_back(region);
    slowest->region_results.clear();
    log(who_client(*slowest) + " does not read its results: " + human_bytes(most) + " wait for it, and " +
        human_bytes(total) + " for all clients, over the dispatcher's bound of " +
        human_bytes(options.max_client_backlog) + ": disconnected");
    slowest->conn->close(detail::CloseReason::kBacklog,
                         Status(Code::kIo, "results waiting for all clients over max_client_backlog"));
    for (const std::string& r : unsent) (void)shm::remove(r);
  }
}

// Removes what `owner` left: everything once the owner is dead, and,
// while it lives, temporaries whose writer died (shm::prune decides). A
// process killed by a signal closes its sockets a moment before the kernel
// drops its locks, so this looks again a few times.
void Dispatcher::Core::prune_owner(std::uint64_t owner, unsigned attempt) {
  static constexpr std::uint64_t kRecheckMs[] = {50, 250, 1000};
  const bool alive = shm::owner_alive(owner);
  auto pruned = shm::prune(owner);
  if (pruned && !pruned->removed.empty())
    log("removed " + std::to_string(pruned->removed.size()) +
        (alive ? " temporaries whose writer died (owner " : " files of a client that died (owner ") +
        hex_of(owner) + ")");
  if (!alive || attempt >= std::size(kRecheckMs) || stopping) return;
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
        core->guarded([core, owner = owner, next = next] { core->prune_owner(owner, next); });
      },
      kRecheckMs[attempt], 0);
}

void Dispatcher::Core::close_recheck(uv_timer_t* t) {
  recheck_timers.erase(t);
  delete static_cast<std::pair<std::uint64_t, unsigned>*>(t->data);
  uv_close(reinterpret_cast<uv_handle_t*>(t),
           [](uv_handle_t* h) { delete reinterpret_cast<uv_timer_t*>(h); });
}

}  // namespace kura::ipc
