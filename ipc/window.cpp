// Tasks sent to wait on a worker behind the one it runs
// (DispatcherOptions::worker_window): the worker starts the next without a
// round trip to the dispatcher. A task waiting there while a worker that
// has its function is idle, and nothing is queued, is asked back (kRevoke)
// and goes to the front of the queue, so that it does not wait behind a
// long task: the window costs no task its start on a free worker.
#include "dispatcher_internal.hpp"

namespace kura::ipc {

void Dispatcher::Core::sent_push(Worker& w, detail::TaskKey key, std::uint64_t owner) {
  if (!w.sent.empty()) ++waiting_on_workers;
  w.sent.push_back(Worker::Sent{key, owner, 0, detail::wall_ns(), false});
}

bool Dispatcher::Core::sent_erase(Worker& w, std::vector<Worker::Sent>::iterator it) {
  const bool first = it == w.sent.begin();
  // `revoking` counts those behind the first only.
  if (it->revoking && !first) {
    KURA_CHECK(revoking > 0);
    --revoking;
  }
  w.sent.erase(it);
  if (w.sent.empty()) {
    w.reported.clear();
  } else {
    KURA_CHECK(waiting_on_workers > 0);
    --waiting_on_workers;
    // Asked back and the first now: it waits behind no task, and an idle
    // worker is not kept for it.
    if (first && w.sent.front().revoking) {
      KURA_CHECK(revoking > 0);
      --revoking;
    }
    // A region reported before the first task it holds was sent (the
    // oldest) cannot be mistaken for one of theirs any more.
    const std::uint64_t oldest = w.sent.front().since_ns;
    std::erase_if(w.reported, [&](const auto& r) { return r.second < oldest; });
  }
  return first;
}

void Dispatcher::Core::sent_clear(Worker& w) {
  for (std::size_t i = 1; i < w.sent.size(); ++i) {
    if (!w.sent[i].revoking) continue;
    KURA_CHECK(revoking > 0);
    --revoking;
  }
  if (!w.sent.empty()) {
    KURA_CHECK(waiting_on_workers >= w.sent.size() - 1);
    waiting_on_workers -= w.sent.size() - 1;
  }
  w.sent.clear();
  w.reported.clear();
}

void Dispatcher::Core::revoke_for_idle() {
  if (waiting_on_workers <= revoking || scheduler.queued_count() != 0) return;
  std::size_t idle = scheduler.idle_count();
  if (idle <= revoking) return;
  idle -= revoking;
  // The newest first: the least likely to have started by the time the
  // worker reads the frame.
  for (auto& [id, w] : workers) {
    if (w.conn->closed()) continue;
    for (std::size_t i = w.sent.size(); i-- > 1 && idle > 0;) {
      Worker::Sent& s = w.sent[i];
      if (s.revoking) continue;
      auto t = tasks.find(s.key);
      if (t == tasks.end() || !scheduler.has_idle_worker(t->second.fn)) continue;
      s.revoking = true;
      ++revoking;
      --idle;
      w.conn->send(FrameType::kRevoke, 0, s.key, nullptr);
    }
    if (idle == 0) return;
  }
}

void Dispatcher::Core::on_revoked(std::uint64_t id, Worker& w, std::uint64_t key) {
  auto sent = std::find_if(w.sent.begin(), w.sent.end(), [&](const Worker::Sent& s) { return s.key == key; });
  if (sent == w.sent.end() || !sent->revoking)
    return drop(w.conn, "done: gave back a task it was not asked for");
  (void)sent_erase(w, sent);
  scheduler.task_done(id, key);
  if (auto t = tasks.find(key); t != tasks.end()) {
    // It never started: no try is used up.
    t->second.worker = 0;
    (void)scheduler.requeue_front(key, t->second.fn, t->second.payload->size());
  }
  if (w.sent.empty()) return worker_ready(id, w);
  pump();
}

}  // namespace kura::ipc
