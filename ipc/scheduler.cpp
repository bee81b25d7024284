#include "scheduler.hpp"

#include <algorithm>

#include "kura/core/status.hpp"

namespace kura::ipc::detail {

// --- TaskList ------------------------------------------------------------------

void Scheduler::TaskList::push_back(Task* t) noexcept {
  t->prev = tail;
  t->next = nullptr;
  (tail != nullptr ? tail->next : head) = t;
  tail = t;
  ++size;
}

void Scheduler::TaskList::push_front(Task* t) noexcept {
  t->prev = nullptr;
  t->next = head;
  (head != nullptr ? head->prev : tail) = t;
  head = t;
  ++size;
}

void Scheduler::TaskList::erase(Task* t) noexcept {
  (t->prev != nullptr ? t->prev->next : head) = t->next;
  (t->next != nullptr ? t->next->prev : tail) = t->prev;
  t->prev = t->next = nullptr;
  --size;
}

// --- functions -----------------------------------------------------------------

FnId Scheduler::intern(std::string_view fn) {
  if (auto it = ids_.find(fn); it != ids_.end()) return it->second;
  const auto id = static_cast<FnId>(fns_.size());
  const std::string& name = names_.emplace_back(fn);
  try {
    fns_.emplace_back().name = name;
    ids_.emplace(name, id);
  } catch (...) {
    if (fns_.size() > id) fns_.pop_back();
    names_.pop_back();
    throw;
  }
  return id;
}

std::string_view Scheduler::fn_name(FnId id) const {
  KURA_CHECK(id < fns_.size());
  return fns_[id].name;
}

bool Scheduler::has_function(FnId fn) const noexcept {
  return fn < fns_.size() && fns_[fn].workers > 0;
}

// Keeps ready_ holding (idle_seq of the longest-idle worker, id) for
// function `id` exactly when it has both queued tasks and idle workers.
void Scheduler::refresh_ready(FnId id) {
  Fn& f = fns_[id];
  std::optional<std::uint64_t> want;
  if (f.queue.size > 0 && !f.idle.empty()) want = f.idle.front()->idle_seq;
  if (want == f.ready_key) return;
  if (want) ready_.emplace(*want, id);
  if (f.ready_key) ready_.erase({*f.ready_key, id});
  f.ready_key = want;
}

// --- tasks ---------------------------------------------------------------------

Scheduler::Task& Scheduler::store(TaskKey t, FnId fn, std::uint64_t bytes) {
  KURA_CHECK(t != 0);
  KURA_CHECK(fn < fns_.size());
  auto [it, inserted] = tasks_.try_emplace(t);
  KURA_CHECK(inserted);
  Task& task = it->second;
  task.key = t;
  task.fn = fn;
  task.bytes = bytes;
  return task;
}

void Scheduler::enqueue(Task& t) {
  Fn& f = fns_[t.fn];
  if (t.front) {
    t.seq = next_front_seq_--;
    f.queue.push_front(&t);
  } else {
    f.queue.push_back(&t);
  }
  t.where = Where::kQueued;
  queued_bytes_ += t.bytes;
  peak_bytes_ = std::max(peak_bytes_, queued_bytes_);
  ++queued_count_;
  if (f.workers == 0) ++unroutable_;
  if (f.queue.size == 1) refresh_ready(t.fn);
}

void Scheduler::dequeue(Task& t) noexcept {
  Fn& f = fns_[t.fn];
  f.queue.erase(&t);
  queued_bytes_ -= t.bytes;
  --queued_count_;
  if (f.workers == 0) --unroutable_;
  // Erasing an entry of ready_ never allocates.
  if (f.queue.size == 0 && f.ready_key) {
    ready_.erase({*f.ready_key, t.fn});
    f.ready_key.reset();
  }
}

Scheduler::Admit Scheduler::submit(TaskKey t, FnId fn, std::uint64_t bytes, bool try_only) {
  KURA_CHECK(tasks_.count(t) == 0);
  if (cap_ != 0 && bytes > cap_) return Admit::kTooLarge;
  const bool now = waiting_.size == 0 && fits(bytes);
  if (!now && try_only) return Admit::kFull;
  Task& task = store(t, fn, bytes);
  task.seq = next_seq_++;
  if (now) {
    enqueue(task);
    return Admit::kQueued;
  }
  task.where = Where::kWaiting;
  waiting_.push_back(&task);
  return Admit::kWaiting;
}

Scheduler::Admit Scheduler::requeue_front(TaskKey t, FnId fn, std::uint64_t bytes) {
  KURA_CHECK(tasks_.count(t) == 0);
  if (cap_ != 0 && bytes > cap_) return Admit::kTooLarge;
  Task& task = store(t, fn, bytes);
  task.front = true;
  if (fits(bytes)) {
    enqueue(task);
    return Admit::kQueued;
  }
  task.where = Where::kWaiting;
  waiting_.push_front(&task);
  return Admit::kWaiting;
}

Scheduler::Where Scheduler::remove(TaskKey t) {
  auto it = tasks_.find(t);
  if (it == tasks_.end()) return Where::kNone;
  Task& task = it->second;
  const Where was = task.where;
  switch (was) {
    case Where::kWaiting: waiting_.erase(&task); break;
    case Where::kQueued: dequeue(task); break;
    case Where::kRunning: {
      auto w = workers_.find(task.worker);
      if (w != workers_.end() && w->second.running == t) w->second.running = 0;
      --running_count_;
      break;
    }
    case Where::kNone: break;
  }
  tasks_.erase(it);
  return was;
}

Scheduler::Where Scheduler::where(TaskKey t) const noexcept {
  auto it = tasks_.find(t);
  return it == tasks_.end() ? Where::kNone : it->second.where;
}

void Scheduler::task_finished(TaskKey t) {
  const Where w = where(t);
  KURA_CHECK(w == Where::kNone || w == Where::kRunning);
  remove(t);
}

// --- workers -------------------------------------------------------------------

void Scheduler::make_idle(Worker& w) {
  w.places.reserve(w.fns.size());
  for (FnId id : w.fns) {
    Fn& f = fns_[id];
    w.places.push_back(f.idle.insert(f.idle.end(), &w));
  }
  w.idle = true;
  w.idle_seq = next_idle_seq_++;
  ++idle_count_;
  // A function whose only idle worker is `w` now may be ready.
  for (FnId id : w.fns)
    if (fns_[id].idle.size() == 1) refresh_ready(id);
}

void Scheduler::make_busy(Worker& w) {
  for (std::size_t i = 0; i < w.fns.size(); ++i) {
    Fn& f = fns_[w.fns[i]];
    const bool first = w.places[i] == f.idle.begin();
    f.idle.erase(w.places[i]);
    if (first) refresh_ready(w.fns[i]);
  }
  w.places.clear();
  w.idle = false;
  --idle_count_;
}

void Scheduler::add_worker(WorkerKey w, std::vector<FnId> fns) {
  KURA_CHECK(w != 0);
  std::sort(fns.begin(), fns.end());
  fns.erase(std::unique(fns.begin(), fns.end()), fns.end());
  for (FnId id : fns) KURA_CHECK(id < fns_.size());
  auto [it, inserted] = workers_.try_emplace(w);
  KURA_CHECK(inserted);
  it->second.key = w;
  it->second.fns = std::move(fns);
  for (FnId id : it->second.fns) {
    Fn& f = fns_[id];
    if (f.workers++ == 0) unroutable_ -= f.queue.size;
  }
}

TaskKey Scheduler::remove_worker(WorkerKey w) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return 0;
  Worker& worker = it->second;
  if (worker.idle) make_busy(worker);
  for (FnId id : worker.fns) {
    Fn& f = fns_[id];
    if (--f.workers == 0) unroutable_ += f.queue.size;
  }
  const TaskKey t = worker.running;
  if (t != 0) {
    KURA_CHECK(where(t) == Where::kRunning);
    remove(t);
  }
  workers_.erase(it);
  return t;
}

void Scheduler::worker_free(WorkerKey w) {
  auto it = workers_.find(w);
  if (it == workers_.end() || it->second.idle) return;
  if (it->second.running != 0) remove(it->second.running);
  make_idle(it->second);
}

void Scheduler::worker_busy(WorkerKey w) {
  auto it = workers_.find(w);
  if (it != workers_.end() && it->second.idle) make_busy(it->second);
}

TaskKey Scheduler::running_on(WorkerKey w) const noexcept {
  auto it = workers_.find(w);
  return it == workers_.end() ? 0 : it->second.running;
}

bool Scheduler::is_idle(WorkerKey w) const noexcept {
  auto it = workers_.find(w);
  return it != workers_.end() && it->second.idle;
}

// --- pump ----------------------------------------------------------------------

// Starts on idle worker `w` the oldest queued task among its functions.
// REQUIRES: there is one.
void Scheduler::start(Worker& w, std::vector<std::pair<TaskKey, WorkerKey>>& started) {
  Task* oldest = nullptr;
  for (FnId id : w.fns) {
    Task* head = fns_[id].queue.head;
    if (head != nullptr && (oldest == nullptr || head->seq < oldest->seq)) oldest = head;
  }
  KURA_CHECK(oldest != nullptr);
  started.emplace_back(oldest->key, w.key);
  dequeue(*oldest);
  oldest->where = Where::kRunning;
  oldest->worker = w.key;
  ++running_count_;
  w.running = oldest->key;
  make_busy(w);
}

void Scheduler::pump(std::vector<TaskKey>& admitted, std::vector<std::pair<TaskKey, WorkerKey>>& started) {
  for (;;) {
    while (waiting_.head != nullptr && fits(waiting_.head->bytes)) {
      Task* t = waiting_.head;
      admitted.push_back(t->key);
      waiting_.erase(t);
      enqueue(*t);
    }
    if (ready_.empty()) return;
    // The longest-idle worker that has the function of some queued task.
    start(*fns_[ready_.begin()->second].idle.front(), started);
  }
}

// --- Deadlines -----------------------------------------------------------------

void Deadlines::place(std::size_t i, Entry e) noexcept {
  *e.pos = i;
  heap_[i] = e;
}

void Deadlines::sift_up(std::size_t i) noexcept {
  const Entry e = heap_[i];
  while (i > 0) {
    const std::size_t parent = (i - 1) / 2;
    if (!before(e, heap_[parent])) break;
    place(i, heap_[parent]);
    i = parent;
  }
  place(i, e);
}

void Deadlines::sift_down(std::size_t i) noexcept {
  const Entry e = heap_[i];
  const std::size_t n = heap_.size();
  for (;;) {
    std::size_t child = 2 * i + 1;
    if (child >= n) break;
    if (child + 1 < n && before(heap_[child + 1], heap_[child])) ++child;
    if (!before(heap_[child], e)) break;
    place(i, heap_[child]);
    i = child;
  }
  place(i, e);
}

void Deadlines::erase_at(std::size_t i) noexcept {
  const std::uint64_t key = heap_[i].key;
  const Entry last = heap_.back();
  heap_.pop_back();
  if (i < heap_.size()) {
    place(i, last);
    if (i > 0 && before(last, heap_[(i - 1) / 2])) {
      sift_up(i);
    } else {
      sift_down(i);
    }
  }
  index_.erase(key);
}

void Deadlines::set(std::uint64_t key, std::uint64_t at_ms) {
  auto [it, inserted] = index_.try_emplace(key, heap_.size());
  if (!inserted) {
    const std::size_t i = it->second;
    const bool earlier = at_ms < heap_[i].at;
    heap_[i].at = at_ms;
    heap_[i].seq = next_seq_++;
    if (earlier) {
      sift_up(i);
    } else {
      sift_down(i);
    }
    return;
  }
  try {
    heap_.push_back(Entry{at_ms, next_seq_++, key, &it->second});
  } catch (...) {
    index_.erase(it);
    throw;
  }
  sift_up(heap_.size() - 1);
}

void Deadlines::clear(std::uint64_t key) noexcept {
  auto it = index_.find(key);
  if (it != index_.end()) erase_at(it->second);
}

std::optional<std::uint64_t> Deadlines::next() const noexcept {
  if (heap_.empty()) return std::nullopt;
  return heap_.front().at;
}

std::vector<std::uint64_t> Deadlines::pop_due(std::uint64_t now_ms, std::size_t max) {
  std::vector<std::uint64_t> due;
  while (!heap_.empty() && due.size() < max && heap_.front().at <= now_ms) {
    due.push_back(heap_.front().key);
    erase_at(0);
  }
  return due;
}

}  // namespace kura::ipc::detail
