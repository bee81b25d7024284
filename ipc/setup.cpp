// everywhere(): set-up calls that run on every worker connected now and on
// every worker that connects later, before it runs anything else. They are
// kept while the client that made them is connected, and bounded in count
// and bytes (DispatcherOptions::max_setup_calls, max_setup_bytes).
#include "dispatcher_internal.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

void Dispatcher::Core::on_everywhere(std::uint64_t peer, Client& c, Frame&& f) {
  auto payload = std::make_shared<const Bytes>(std::move(f.payload));
  auto s = detail::decode_submit(payload);
  if (!s) return drop(c.conn, s.status().message());
  if (s->owner != c.owner) return drop(c.conn, "everywhere: a call for another owner than the client's");
  if (setups.size() >= options.max_setup_calls || setup_bytes + payload->size() > options.max_setup_bytes)
    return send_result_to(c.conn, f.header.id, Outcome::kError,
                          "the dispatcher keeps " + std::to_string(setups.size()) + " set-up calls of " +
                              human_bytes(setup_bytes) + " already, the most it keeps is " +
                              std::to_string(options.max_setup_calls) + " calls of " +
                              human_bytes(options.max_setup_bytes) + " in all");
  const std::uint64_t sid = next_setup++;
  Setup& setup = setups[sid];
  setup_bytes += payload->size();
  setup.payload = std::move(payload);
  setup.owner = s->owner;
  setup.client = peer;
  setup.client_task = f.header.id;
  setup_order.push_back(sid);
  std::vector<std::uint64_t> now_idle;
  for (auto& [id, w] : workers) {
    w.setups.push_back(sid);
    setup.pending.insert(id);
    if (w.sent.empty() && w.setup_running == 0) now_idle.push_back(id);
  }
  // A worker with tasks takes no more until it ran the call (after them).
  for (auto& [id, w] : workers)
    if (!w.sent.empty()) scheduler.worker_busy(id);
  for (std::uint64_t id : now_idle) {
    scheduler.worker_busy(id);
    worker_ready(id, workers.at(id));
  }
  answer_setup(sid);
}

// Sends worker `id` its next set-up call, or makes it free for tasks.
void Dispatcher::Core::worker_ready(std::uint64_t id, Worker& w) {
  w.setup_running = 0;
  while (!w.setups.empty()) {
    const std::uint64_t sid = w.setups.front();
    auto s = setups.find(sid);
    if (s == setups.end()) {  // its client left: it is not run any more
      w.setups.pop_front();
      continue;
    }
    w.setup_running = sid;
    w.setup_owner = s->second.owner;
    w.conn->send(FrameType::kTask, kFlagSetup, sid, s->second.payload);
    return;
  }
  w.setup_owner = 0;
  if (!w.ready) {
    w.ready = true;
    if (ManagedWorker* m = managed_by_token(w.token)) m->ready = true;
  }
  scheduler.worker_free(id);
  pump();
}

void Dispatcher::Core::on_setup_done(std::uint64_t id, Worker& w, const detail::ResultMsg& msg,
                                     std::uint64_t sid) {
  if (w.setup_running == 0 || w.setups.empty() || sid != w.setup_running || w.setups.front() != sid)
    return drop(w.conn, "done: a set-up call it was not given");
  const std::uint64_t owner = w.setup_owner;
  if (!msg.name.empty() && !of_owner(msg.name, owner))
    return drop(w.conn, "done: a set-up call's result region of another owner");
  w.setups.pop_front();
  if (!msg.name.empty()) (void)shm::remove(msg.name);  // set-up results are not kept
  if (auto s = setups.find(sid); s != setups.end()) {
    if (msg.outcome != Outcome::kOk) {
      log("set-up call " + std::to_string(sid) + " failed on " + who_worker(id, w) + ": " + msg.message);
      if (s->second.error.empty()) s->second.error = msg.message;
    }
    if (s->second.pending.erase(id) != 0) answer_setup(sid);
  }
  if (owner != 0 && clients_of_owner(owner) == 0) prune_owner(owner, 0);
  worker_ready(id, w);
}

void Dispatcher::Core::answer_setup(std::uint64_t sid) {
  auto it = setups.find(sid);
  if (it == setups.end()) return;
  Setup& s = it->second;
  if (s.answered || !s.pending.empty()) return;
  s.answered = true;
  auto c = clients.find(s.client);
  if (c == clients.end()) return;
  if (s.error.empty()) {
    send_result_to(c->second.conn, s.client_task, Outcome::kOk, "");
  } else {
    send_result_to(c->second.conn, s.client_task, Outcome::kError, s.error);
  }
}

void Dispatcher::Core::setups_of_lost_worker(std::uint64_t id, const Worker& w) {
  for (std::uint64_t sid : w.setups) {
    auto s = setups.find(sid);
    if (s == setups.end() || s->second.pending.erase(id) == 0) continue;
    if (s->second.error.empty()) s->second.error = who_worker(id, w) + " was lost";
    answer_setup(sid);
  }
}

// A client's set-up calls go with it: they ran for its owner, whose lease
// is gone or going. Workers forget them too (a call one of them runs now
// stays at the front of its list until it reports), so that a worker busy
// for long does not gather the ids of calls that are gone.
void Dispatcher::Core::setups_of_gone_client(std::uint64_t client) {
  std::unordered_set<std::uint64_t> gone;
  for (auto it = setup_order.begin(); it != setup_order.end();) {
    auto s = setups.find(*it);
    if (s->second.client != client) {
      ++it;
      continue;
    }
    gone.insert(*it);
    setup_bytes -= s->second.payload->size();
    setups.erase(s);
    it = setup_order.erase(it);
  }
  if (gone.empty()) return;
  for (auto& [id, w] : workers) {
    std::uint64_t running = w.setup_running;
    std::erase_if(w.setups, [&](std::uint64_t sid) {
      if (sid == running) {
        running = 0;  // the first of it (the front) stays
        return false;
      }
      return gone.count(sid) != 0;
    });
  }
}

}  // namespace kura::ipc
