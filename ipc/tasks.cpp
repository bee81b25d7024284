// The dispatcher's tasks: submit, cancel, timeouts, results, and what
// happens to a task when its worker or its client goes (dispatcher_internal.hpp).
#include <algorithm>

#include "dispatcher_internal.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

using detail::Connection;
using detail::Scheduler;
using detail::TaskKey;

void Dispatcher::Core::on_submit(std::uint64_t peer, Client& c, Frame&& f) {
  const std::uint64_t client_task = f.header.id;
  const bool try_only = (f.header.flags & kFlagTry) != 0;
  auto payload = std::make_shared<const Bytes>(std::move(f.payload));
  auto s = detail::decode_submit(payload);
  if (!s) return drop(c.conn, s.status().message());
  if (s->owner != c.owner) return drop(c.conn, "submit: a task for another owner than the client's");
  if (client_task == 0 || c.tasks.count(client_task) != 0) return drop(c.conn, "submit: task id 0 or reused");
  // A name is interned only for a task that may wait for it: names that no
  // worker has cost the dispatcher nothing.
  const std::optional<detail::FnId> known = scheduler.find(s->fn);
  if (!s->wait_for_worker && cumulative > 0 && !(known && announced.count(*known) != 0)) {
    ++completed;
    return send_result_to(
        c.conn, client_task, Outcome::kError,
        "unknown function \"" + s->fn + "\": no worker has it (submit with wait_for_worker to wait for one)");
  }
  if (!known && scheduler.functions() >= detail::kMaxKnownFunctions) {
    ++completed;
    return send_result_to(c.conn, client_task, Outcome::kError,
                          "unknown function \"" + s->fn + "\": the dispatcher knows " +
                              std::to_string(detail::kMaxKnownFunctions) +
                              " function names already, the most it keeps");
  }
  const detail::FnId fn = known ? *known : scheduler.intern(s->fn);
  const std::uint64_t size = payload->size();
  const TaskKey key = next_task++;
  switch (scheduler.submit(key, fn, size, try_only)) {
    case Scheduler::Admit::kTooLarge:
      ++completed;
      return send_result_to(c.conn, client_task, Outcome::kError,
                            "the task's payload of " + human_bytes(size) +
                                " is larger than the queue's cap of " + human_bytes(options.memory) +
                                " (pass large values by name)");
    case Scheduler::Admit::kFull: return c.conn->send(FrameType::kFull, 0, client_task, nullptr);
    case Scheduler::Admit::kQueued:
    case Scheduler::Admit::kWaiting: break;
  }
  Task& t = tasks[key];
  t.client = peer;
  t.client_task = client_task;
  t.payload = std::move(payload);
  t.owner = s->owner;
  t.fn = fn;
  t.retries_left = s->retries;
  t.try_submit = try_only;
  t.wait = s->wait_for_worker;
  if (tracer && !s->traceparent.empty())
    t.trace = detail::start_trace(s->traceparent, s->fn, client_task, size);
  c.tasks[client_task] = key;
  if (s->timeout_ms > 0) {
    t.timeout_ms = s->timeout_ms;
    timeouts.set(key, now_ms() + s->timeout_ms);
    arm_timeouts();
  }
  if (scheduler.where(key) == Scheduler::Where::kQueued) {
    t.acked = true;
    // Only a client that waits for it is told (see Welcome::queue_cap).
    if (try_only || options.memory > 0) c.conn->send(FrameType::kQueued, 0, client_task, nullptr);
  } else if (++c.parked > detail::kMaxParkedSubmits) {
    // A client keeps at most that many submits waiting for room (it waits
    // itself before sending more): more is a client that does not follow
    // the protocol, and would make the dispatcher hold its payloads.
    return drop(c.conn, "submit: more than " + std::to_string(detail::kMaxParkedSubmits) +
                            " submits waiting for room at once");
  }
  pump();
}

void Dispatcher::Core::pump() {
  std::vector<TaskKey> admitted;
  std::vector<std::pair<TaskKey, detail::WorkerKey>> started;
  for (bool again = true; again;) {
    again = false;
    admitted.clear();
    started.clear();
    scheduler.pump(admitted, started);
    for (TaskKey key : admitted) {
      auto it = tasks.find(key);
      if (it == tasks.end()) continue;
      Task& t = it->second;
      auto c = clients.find(t.client);
      if (c == clients.end() || t.acked) continue;
      t.acked = true;
      if (c->second.parked > 0) --c->second.parked;
      if (t.try_submit || options.memory > 0)
        c->second.conn->send(FrameType::kQueued, 0, t.client_task, nullptr);
    }
    std::vector<TaskKey> back;
    for (auto [key, worker] : started) {
      Task& t = tasks.at(key);
      Worker& w = workers.at(worker);
      if (w.conn->closed()) {
        // Going away (its on_close is on the way): it takes nothing more,
        // and the task goes back to the front (what it was sent before
        // stays in w.sent for worker_lost).
        (void)scheduler.remove_worker(worker);
        back.push_back(key);
        again = true;
        continue;
      }
      t.worker = worker;
      if (t.trace) {
        t.trace->started_ns = detail::wall_ns();
        t.trace->worker = worker;
        t.trace->worker_pid = w.pid;
        ++t.trace->attempts;
      }
      sent_push(w, key, t.owner);
      w.conn->send(FrameType::kTask, 0, key, t.payload);
    }
    // The last first: they keep their order at the front.
    for (auto it = back.rbegin(); it != back.rend(); ++it) {
      const Task& t = tasks.at(*it);
      (void)scheduler.requeue_front(*it, t.fn, t.payload->size());
    }
  }
  revoke_for_idle();
}

void Dispatcher::Core::send_result_to(Connection* conn, std::uint64_t client_task, Outcome outcome,
                                      const std::string& message) {
  auto payload = detail::encode_result(outcome, message, "", nullptr);
  if (payload)
    conn->send(FrameType::kResult, 0, client_task, std::make_shared<const Bytes>(std::move(payload).value()));
}

// Ends task `key` with `payload` (a result image, naming `region` when the
// value came as one) sent to its client. A client whose connection is
// closing cannot take the region: it is removed here.
void Dispatcher::Core::resolve(TaskKey key, std::shared_ptr<const Bytes> payload, const std::string& region) {
  auto it = tasks.find(key);
  if (it == tasks.end()) return;
  Task& t = it->second;
  auto c = clients.find(t.client);
  if (c != clients.end() && !c->second.conn->closed()) {
    Client& cl = c->second;
    cl.tasks.erase(t.client_task);
    if (!region.empty()) note_region_result(cl, payload, region);
    cl.conn->send(FrameType::kResult, 0, t.client_task, std::move(payload));
    if (cl.conn->write_queue_bytes() > kBacklogCheck) shed_backlog();
  } else if (!region.empty()) {
    (void)shm::remove(region);
  }
  if (t.timeout_ms > 0) timeouts.clear(key);
  if (t.trace) end_trace(t);
  tasks.erase(it);
  ++completed;
}

void Dispatcher::Core::resolve_with(TaskKey key, Outcome outcome, const std::string& message) {
  if (auto it = tasks.find(key); it != tasks.end() && it->second.trace) {
    it->second.trace->outcome = outcome;
    it->second.trace->message = message;
  }
  auto payload = detail::encode_result(outcome, message, "", nullptr);
  if (!payload) {
    log("cannot encode a result: " + payload.status().to_string());
    return;
  }
  resolve(key, std::make_shared<const Bytes>(std::move(payload).value()), "");
}

void Dispatcher::Core::end_trace(Task& t) {
  t.trace->ended_ns = detail::wall_ns();
  if (!tracer->write(*t.trace) && !trace_failed) {
    trace_failed = true;
    log("cannot write to the trace file " + options.trace_path + ": spans are being lost");
  }
}

// A running task's worker is told to stop: it stays busy until it reports
// (its result is then discarded), for at most cancel_grace_ms (on_sweep).
void Dispatcher::Core::stop_running(TaskKey key, Task& t) {
  if (auto w = workers.find(t.worker); w != workers.end()) {
    w->second.conn->send(FrameType::kCancel, 0, key, nullptr);
    for (Worker::Sent& s : w->second.sent)
      if (s.key == key) s.stop_sent_ms = now_ms();
  }
}

// Takes task `key` out of wherever it is and resolves it as `outcome`.
void Dispatcher::Core::cancel_task(TaskKey key, Outcome outcome, const std::string& message) {
  auto it = tasks.find(key);
  if (it == tasks.end()) return;
  Task& t = it->second;
  const Scheduler::Where was = scheduler.remove(key);
  if (was == Scheduler::Where::kRunning) stop_running(key, t);
  if (was == Scheduler::Where::kWaiting && !t.acked) {
    if (auto c = clients.find(t.client); c != clients.end() && c->second.parked > 0) --c->second.parked;
  }
  resolve_with(key, outcome, message);
  pump();
}

// A client left: its task ends without an answer.
void Dispatcher::Core::forget_task(TaskKey key) {
  auto it = tasks.find(key);
  if (it == tasks.end()) return;
  if (scheduler.remove(key) == Scheduler::Where::kRunning) stop_running(key, it->second);
  if (it->second.timeout_ms > 0) timeouts.clear(key);
  if (detail::TaskTrace* tr = it->second.trace.get()) {
    tr->outcome = Outcome::kDisconnected;
    tr->message = "its client went away";
    end_trace(it->second);
  }
  tasks.erase(it);
}

void Dispatcher::Core::on_cancel(Client& c, std::uint64_t client_task) {
  auto it = c.tasks.find(client_task);
  if (it == c.tasks.end()) return;  // finished already: nothing changes
  cancel_task(it->second, Outcome::kCancelled, "cancelled");
}

void Dispatcher::Core::client_gone(Client& c) {
  for (auto& [client_task, key] : c.tasks) forget_task(key);
  c.tasks.clear();
  // If it died, its regions are orphans now.
  if (!stopping) prune_owner(c.owner, 0);
}

void Dispatcher::Core::on_done(std::uint64_t id, Worker& w, Frame&& f) {
  if ((f.header.flags & kFlagRevoked) != 0) return on_revoked(id, w, f.header.id);
  auto payload = std::make_shared<const Bytes>(std::move(f.payload));
  auto msg = detail::decode_result(payload);
  if (!msg) return drop(w.conn, msg.status().message());
  if ((f.header.flags & kFlagSetup) != 0) return on_setup_done(id, w, *msg, f.header.id);
  // Reports come in the order tasks were sent, except that a task cancelled
  // before it started is answered at once.
  auto sent =
      std::find_if(w.sent.begin(), w.sent.end(), [&](const Worker::Sent& s) { return s.key == f.header.id; });
  if (w.setup_running != 0 || f.header.id == 0 || sent == w.sent.end())
    return drop(w.conn, "done: a task it was not given");
  const std::uint64_t owner = sent->owner;
  // A result region is the task's owner's, written for it: a worker may
  // name no other (the dispatcher removes it when nobody takes it).
  if (!msg->name.empty() && !of_owner(msg->name, owner))
    return drop(w.conn, "done: a result region of another owner");
  const TaskKey key = f.header.id;
  // The first ran; another was cancelled before it started.
  if (!msg->name.empty() && w.sent.size() > 1) w.reported.emplace_back(msg->name, detail::wall_ns());
  const bool ran = sent_erase(w, sent);
  if (ran) {
    end_transfers(w, msg->name);
    ++w.done;
    if (ManagedWorker* m = managed_by_token(w.token)) ++m->tasks_done;
  }
  auto t = tasks.find(key);
  if (t == tasks.end()) {
    // Cancelled or timed out while it ran: nobody takes the result.
    if (!msg->name.empty()) (void)shm::remove(msg->name);
  } else {
    if (detail::TaskTrace* tr = t->second.trace.get()) {
      tr->outcome = msg->outcome;
      tr->message = msg->message;
      tr->timing = msg->timing;
      tr->result_kind = !msg->name.empty() ? "region" : msg->value ? "inline" : "none";
      tr->result_bytes = payload->size();
    }
    scheduler.task_finished(key);
    resolve(key, std::move(payload), msg->name);
  }
  // A client that died meanwhile could not be pruned while this worker held
  // its lease: its files go now.
  if (owner != 0 && clients_of_owner(owner) == 0) prune_owner(owner, 0);
  scheduler.task_done(id, key);
  if (w.sent.empty()) return worker_ready(id, w);
  pump();
}

bool Dispatcher::Core::of_owner(const std::string& region, std::uint64_t owner) {
  auto n = parse_name(region);
  return n && n->owner == owner && owner != shm::kKeptOwner;
}

// A worker is gone (it closed, died, or was dropped): the task it ran is
// retried at the front of the queue while it has retries left, else it
// ends as worker-lost; what it may have left half-written for the task's
// client is removed.
void Dispatcher::Core::worker_lost(std::uint64_t id, Worker& w, const std::string& why) {
  (void)scheduler.remove_worker(id);
  if (ManagedWorker* m = managed_by_token(w.token)) m->peer = 0;
  end_transfers(w, "");
  setups_of_lost_worker(id, w);
  if (w.setup_owner != 0 && !stopping) prune_owner(w.setup_owner, 0);
  if (!w.sent.empty() && !stopping) {
    const Worker::Sent& first = w.sent.front();
    if (tasks.count(first.key) != 0) remove_unsent_result(w);
    // Each owner once: a prune reads the whole region directory.
    std::vector<std::uint64_t> owners;
    for (const Worker::Sent& s : w.sent)
      if (s.owner != 0 && s.owner != w.setup_owner &&
          std::find(owners.begin(), owners.end(), s.owner) == owners.end())
        owners.push_back(s.owner);
    for (std::uint64_t owner : owners) prune_owner(owner, 0);
  }
  // The last sent first: those retried keep their order at the front.
  const std::vector<Worker::Sent> sent = w.sent;
  sent_clear(w);
  for (auto s = sent.rbegin(); s != sent.rend(); ++s) {
    auto it = tasks.find(s->key);
    if (it == tasks.end()) continue;
    if (stopping) {
      resolve_with(s->key, Outcome::kWorkerLost, "the dispatcher stopped");
      continue;
    }
    Task& t = it->second;
    if (t.retries_left > 0) {
      --t.retries_left;
      t.worker = 0;
      (void)scheduler.requeue_front(s->key, t.fn, t.payload->size());
      continue;
    }
    resolve_with(
        s->key, Outcome::kWorkerLost,
        "the " + who_worker(id, w) + " was lost while " +
            (s == sent.rend() - 1 ? "running the task: " : "the task waited behind another on it: ") + why);
  }
}

// A worker lost while it ran a task may have published the task's result
// and died before its name reached the dispatcher: a region of the task's
// owner that this worker's process wrote since the task was sent, and that
// no report of it named. Nobody will ever hear of it, and its owner lives:
// it is removed here.
void Dispatcher::Core::remove_unsent_result(const Worker& w) {
  const Worker::Sent& first = w.sent.front();
  if (w.pid <= 0 || first.since_ns == 0) return;
  auto regions = shm::list();
  if (!regions) return;
  for (const shm::RegionInfo& r : *regions) {
    if (r.owner != first.owner) continue;
    if (std::any_of(w.reported.begin(), w.reported.end(), [&](const auto& n) { return n.first == r.name; }))
      continue;
    auto m = shm::map(r.name);
    if (!m) continue;
    const RegionHeader& h = m->region().header();
    if (static_cast<std::int64_t>(h.creator_pid) == w.pid && h.created_ns >= first.since_ns) {
      log("removed " + r.name + ", a result its worker (pid " + std::to_string(w.pid) +
          ") wrote but never reported");
      (void)shm::remove(r.name);
    }
  }
  // The dispatcher reads no region otherwise: keep none of them mapped.
  shm::drop_map_cache();
}

// The first worker has connected: a task that did not ask to wait for its
// function, submitted while no worker was there, now ends as it would have
// had the worker been there (an unknown function).
void Dispatcher::Core::end_unknown_functions() {
  std::vector<TaskKey> unknown;
  for (const auto& [key, t] : tasks)
    if (!t.wait && t.worker == 0 && announced.count(t.fn) == 0) unknown.push_back(key);
  for (TaskKey key : unknown) {
    auto it = tasks.find(key);
    if (it == tasks.end()) continue;
    const std::string fn(scheduler.fn_name(it->second.fn));
    cancel_task(
        key, Outcome::kError,
        "unknown function \"" + fn + "\": no worker has it (submit with wait_for_worker to wait for one)");
  }
}

std::size_t Dispatcher::Core::clients_of_owner(std::uint64_t owner) const {
  std::size_t n = 0;
  for (const auto& [id, c] : clients)
    if (c.owner == owner) ++n;
  return n;
}

// --- timeouts ------------------------------------------------------------------------

// One timer for every task's timeout, armed for the earliest.
void Dispatcher::Core::arm_timeouts() {
  auto next = timeouts.next();
  if (!next) {
    uv_timer_stop(&timeout_timer);
    return;
  }
  if (uv_is_active(reinterpret_cast<uv_handle_t*>(&timeout_timer)) && timeouts_armed_at <= *next) return;
  timeouts_armed_at = *next;
  const std::uint64_t now = now_ms();
  uv_timer_start(
      &timeout_timer,
      [](uv_timer_t* t) {
        auto* core = static_cast<Core*>(t->loop->data);
        core->guarded([core] { core->on_timeouts(); });
      },
      *next > now ? *next - now : 0, 0);
}

void Dispatcher::Core::on_timeouts() {
  uv_update_time(&loop);
  for (TaskKey key : timeouts.pop_due(now_ms(), kTimeoutSlice)) {
    auto it = tasks.find(key);
    if (it == tasks.end()) continue;
    const std::uint64_t ms = it->second.timeout_ms;
    it->second.timeout_ms = 0;  // its deadline is gone already
    cancel_task(key, Outcome::kTimeout, "timed out after " + std::to_string(ms) + " ms");
  }
  arm_timeouts();
}

}  // namespace kura::ipc
