#include "scheduler.hpp"

#include <algorithm>
#include <bit>
#include <utility>

#include "kura/core/status.hpp"

namespace kura::ipc::detail {

// --- task storage --------------------------------------------------------------

void Scheduler::push_back(TaskList& l, std::uint32_t i) noexcept {
  Task& t = slab_[i];
  t.prev = l.tail;
  t.next = kNil;
  (l.tail != kNil ? slab_[l.tail].next : l.head) = i;
  l.tail = i;
  ++l.size;
}

void Scheduler::push_front(TaskList& l, std::uint32_t i) noexcept {
  Task& t = slab_[i];
  t.prev = kNil;
  t.next = l.head;
  (l.head != kNil ? slab_[l.head].prev : l.tail) = i;
  l.head = i;
  ++l.size;
}

void Scheduler::unlink(TaskList& l, std::uint32_t i) noexcept {
  Task& t = slab_[i];
  (t.prev != kNil ? slab_[t.prev].next : l.head) = t.next;
  (t.next != kNil ? slab_[t.next].prev : l.tail) = t.prev;
  t.prev = t.next = kNil;
  --l.size;
}

std::size_t Scheduler::KeyIndex::slot_of(TaskKey key) const noexcept {
  if (slots_.empty() || key == 0) return slots_.size();
  const std::size_t mask = slots_.size() - 1;
  std::size_t i = home(key);
  for (std::uint32_t d = 0;; ++d, i = (i + 1) & mask) {
    if (slots_[i].key == key) return i;
    // An empty slot, or one closer to its home than `key` would be: had
    // `key` been inserted, it would have taken that slot.
    if (slots_[i].key == 0 || slots_[i].dist < d) return slots_.size();
  }
}

std::uint32_t Scheduler::KeyIndex::find(TaskKey key) const noexcept {
  const std::size_t i = slot_of(key);
  return i == slots_.size() ? kNil : slots_[i].place;
}

void Scheduler::KeyIndex::put(Slot s) noexcept {
  const std::size_t mask = slots_.size() - 1;
  s.dist = 0;
  for (std::size_t i = home(s.key);; i = (i + 1) & mask, ++s.dist) {
    if (slots_[i].key == 0) {
      slots_[i] = s;
      return;
    }
    if (slots_[i].dist < s.dist) std::swap(slots_[i], s);  // the richer entry moves on
  }
}

void Scheduler::KeyIndex::grow() {
  const std::size_t n = slots_.empty() ? 16 : 2 * slots_.size();
  std::vector<Slot> old = std::exchange(slots_, std::vector<Slot>(n));
  bits_ = static_cast<unsigned>(std::countr_zero(n));
  for (const Slot& s : old)
    if (s.key != 0) put(s);
}

void Scheduler::KeyIndex::insert(TaskKey key, std::uint32_t place) {
  if (2 * (size_ + 1) > slots_.size()) grow();
  put(Slot{key, place, 0});
  ++size_;
}

void Scheduler::KeyIndex::erase(TaskKey key) noexcept {
  std::size_t i = slot_of(key);
  if (i == slots_.size()) return;
  // Backward shift: the entries after the hole that are not at their home
  // move one slot back, up to an empty slot or one at its home.
  const std::size_t mask = slots_.size() - 1;
  for (std::size_t j = (i + 1) & mask; slots_[j].key != 0 && slots_[j].dist > 0; j = (j + 1) & mask) {
    slots_[i] = slots_[j];
    --slots_[i].dist;
    i = j;
  }
  slots_[i] = Slot{};
  --size_;
}

void Scheduler::KeyIndex::release() noexcept {
  slots_ = {};
  bits_ = 0;
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

std::optional<FnId> Scheduler::find(std::string_view fn) const noexcept {
  auto it = ids_.find(fn);
  if (it == ids_.end()) return std::nullopt;
  return it->second;
}

std::string_view Scheduler::fn_name(FnId id) const {
  KURA_CHECK(id < fns_.size());
  return fns_[id].name;
}

bool Scheduler::has_function(FnId fn) const noexcept {
  return fn < fns_.size() && fns_[fn].workers > 0;
}

bool Scheduler::has_idle_worker(FnId fn) const noexcept {
  return fn < fns_.size() && !fns_[fn].idle.empty();
}

// Keeps ready_ holding (rank of the worker to take its next task, id) for
// function `id` exactly when it has both queued tasks and a worker with a
// free slot.
void Scheduler::refresh_ready(FnId id) {
  Fn& f = fns_[id];
  std::optional<std::uint64_t> want;
  if (f.queue.size > 0) {
    if (!f.idle.empty()) {
      want = rank(*f.idle.front());
    } else if (!f.room.empty()) {
      want = rank(*f.room.front());
    }
  }
  if (want == f.ready_key) return;
  if (want) ready_.emplace(*want, id);
  if (f.ready_key) ready_.erase({*f.ready_key, id});
  f.ready_key = want;
}

// --- tasks ---------------------------------------------------------------------

std::uint32_t Scheduler::store(TaskKey t, FnId fn, std::uint64_t bytes) {
  KURA_CHECK(t != 0);
  KURA_CHECK(fn < fns_.size());
  std::uint32_t i = free_;
  if (i != kNil) {
    free_ = slab_[i].next;
  } else {
    KURA_CHECK(slab_.size() < kNil);
    i = static_cast<std::uint32_t>(slab_.size());
    slab_.emplace_back();
  }
  index_.insert(t, i);
  Task& task = slab_[i];
  task = Task{};
  task.key = t;
  task.fn = fn;
  task.bytes = bytes;
  return i;
}

// Frees the place of a task that is in no list any more. The last task gone
// gives back the memory of a large slab and index (a burst is over).
void Scheduler::forget(std::uint32_t i) noexcept {
  index_.erase(slab_[i].key);
  slab_[i].where = Where::kNone;
  slab_[i].next = free_;
  free_ = i;
  constexpr std::size_t kKeep = 4096;  // places kept when empty, to spare reallocating them
  if (index_.size() == 0 && slab_.size() > kKeep) {
    slab_ = {};
    free_ = kNil;
    index_.release();
  }
}

void Scheduler::enqueue(std::uint32_t i) {
  Task& t = slab_[i];
  Fn& f = fns_[t.fn];
  if (t.front) {
    t.seq = next_front_seq_--;
    push_front(f.queue, i);
  } else {
    push_back(f.queue, i);
  }
  t.where = Where::kQueued;
  queued_bytes_ += t.bytes;
  peak_bytes_ = std::max(peak_bytes_, queued_bytes_);
  ++queued_count_;
  if (f.workers == 0) ++unroutable_;
  if (f.queue.size == 1) refresh_ready(t.fn);
}

void Scheduler::dequeue(std::uint32_t i) noexcept {
  Task& t = slab_[i];
  Fn& f = fns_[t.fn];
  unlink(f.queue, i);
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
  KURA_CHECK(index_.find(t) == kNil);
  if (cap_ != 0 && bytes > cap_) return Admit::kTooLarge;
  const bool now = waiting_.size == 0 && fits(bytes);
  if (!now && try_only) return Admit::kFull;
  const std::uint32_t i = store(t, fn, bytes);
  slab_[i].seq = next_seq_++;
  if (now) {
    enqueue(i);
    return Admit::kQueued;
  }
  slab_[i].where = Where::kWaiting;
  push_back(waiting_, i);
  return Admit::kWaiting;
}

Scheduler::Admit Scheduler::requeue_front(TaskKey t, FnId fn, std::uint64_t bytes) {
  KURA_CHECK(index_.find(t) == kNil);
  if (cap_ != 0 && bytes > cap_) return Admit::kTooLarge;
  const std::uint32_t i = store(t, fn, bytes);
  slab_[i].front = true;
  if (fits(bytes)) {
    enqueue(i);
    return Admit::kQueued;
  }
  slab_[i].where = Where::kWaiting;
  push_front(waiting_, i);
  return Admit::kWaiting;
}

Scheduler::Where Scheduler::remove(TaskKey t) {
  const std::uint32_t i = index_.find(t);
  if (i == kNil) return Where::kNone;
  const Where was = slab_[i].where;
  switch (was) {
    case Where::kWaiting: unlink(waiting_, i); break;
    case Where::kQueued: dequeue(i); break;
    case Where::kRunning: {
      auto w = workers_.find(slab_[i].worker);
      if (w != workers_.end()) std::erase(w->second.running, t);
      --running_count_;
      break;
    }
    case Where::kNone: break;
  }
  forget(i);
  return was;
}

Scheduler::Where Scheduler::where(TaskKey t) const noexcept {
  const std::uint32_t i = index_.find(t);
  return i == kNil ? Where::kNone : slab_[i].where;
}

void Scheduler::task_finished(TaskKey t) {
  const Where w = where(t);
  KURA_CHECK(w == Where::kNone || w == Where::kRunning);
  remove(t);
}

// --- workers -------------------------------------------------------------------

void Scheduler::unlist(Worker& w) {
  if (!w.listed) return;
  if (!w.in_room) --idle_count_;
  for (std::size_t i = 0; i < w.fns.size(); ++i) {
    Fn& f = fns_[w.fns[i]];
    IdleList& l = w.in_room ? f.room : f.idle;
    const bool first = w.places[i] == l.begin();
    l.erase(w.places[i]);
    if (first) refresh_ready(w.fns[i]);
  }
  w.places.clear();
  w.listed = false;
}

void Scheduler::relist(Worker& w) {
  unlist(w);
  if (!w.free()) return;
  w.places.reserve(w.fns.size());
  w.in_room = w.taken > 0;
  w.idle_seq = next_idle_seq_++;
  for (FnId id : w.fns) {
    Fn& f = fns_[id];
    IdleList& l = w.in_room ? f.room : f.idle;
    w.places.push_back(l.insert(l.end(), &w));
  }
  w.listed = true;
  if (!w.in_room) ++idle_count_;
  // A function whose first worker is `w` now may be ready, or ranked anew.
  for (std::size_t i = 0; i < w.fns.size(); ++i) {
    Fn& f = fns_[w.fns[i]];
    if (w.places[i] == (w.in_room ? f.room : f.idle).begin()) refresh_ready(w.fns[i]);
  }
}

void Scheduler::add_worker(WorkerKey w, std::vector<FnId> fns, std::uint32_t slots) {
  KURA_CHECK(w != 0);
  KURA_CHECK(slots >= 1);
  std::sort(fns.begin(), fns.end());
  fns.erase(std::unique(fns.begin(), fns.end()), fns.end());
  for (FnId id : fns) KURA_CHECK(id < fns_.size());
  auto [it, inserted] = workers_.try_emplace(w);
  KURA_CHECK(inserted);
  it->second.key = w;
  it->second.fns = std::move(fns);
  it->second.slots = slots;
  it->second.running.reserve(slots);
  for (FnId id : it->second.fns) {
    Fn& f = fns_[id];
    if (f.workers++ == 0) unroutable_ -= f.queue.size;
  }
}

std::vector<TaskKey> Scheduler::remove_worker(WorkerKey w) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return {};
  Worker& worker = it->second;
  unlist(worker);
  for (FnId id : worker.fns) {
    Fn& f = fns_[id];
    if (--f.workers == 0) unroutable_ += f.queue.size;
  }
  std::vector<TaskKey> ran = std::move(worker.running);
  for (TaskKey t : ran) {
    KURA_CHECK(where(t) == Where::kRunning);
    const std::uint32_t i = index_.find(t);
    --running_count_;
    forget(i);
  }
  workers_.erase(it);
  return ran;
}

void Scheduler::worker_free(WorkerKey w) {
  auto it = workers_.find(w);
  if (it == workers_.end()) return;
  Worker& worker = it->second;
  if (worker.idle() && worker.listed) return;
  while (!worker.running.empty()) remove(worker.running.back());
  worker.taken = 0;
  worker.held = false;
  relist(worker);
}

void Scheduler::task_done(WorkerKey w, TaskKey t) {
  auto it = workers_.find(w);
  if (it == workers_.end() || it->second.taken == 0) return;
  Worker& worker = it->second;
  const std::uint32_t i = index_.find(t);
  if (i != kNil && slab_[i].where == Where::kRunning && slab_[i].worker == w) remove(t);
  --worker.taken;
  relist(worker);
}

void Scheduler::worker_busy(WorkerKey w) {
  auto it = workers_.find(w);
  if (it == workers_.end() || it->second.held) return;
  it->second.held = true;
  relist(it->second);
}

TaskKey Scheduler::running_on(WorkerKey w) const noexcept {
  auto it = workers_.find(w);
  return it == workers_.end() || it->second.running.empty() ? 0 : it->second.running.front();
}

bool Scheduler::is_idle(WorkerKey w) const noexcept {
  auto it = workers_.find(w);
  return it != workers_.end() && it->second.idle();
}

std::uint32_t Scheduler::taken_slots(WorkerKey w) const noexcept {
  auto it = workers_.find(w);
  return it == workers_.end() ? 0 : it->second.taken;
}

// --- pump ----------------------------------------------------------------------

// Starts on idle worker `w` the oldest queued task among its functions.
// REQUIRES: there is one.
void Scheduler::start(Worker& w, std::vector<std::pair<TaskKey, WorkerKey>>& started) {
  std::uint32_t oldest = kNil;
  for (FnId id : w.fns) {
    const std::uint32_t head = fns_[id].queue.head;
    if (head != kNil && (oldest == kNil || slab_[head].seq < slab_[oldest].seq)) oldest = head;
  }
  KURA_CHECK(oldest != kNil);
  Task& t = slab_[oldest];
  w.running.push_back(t.key);  // first: the one step that may throw
  started.emplace_back(t.key, w.key);
  dequeue(oldest);
  t.where = Where::kRunning;
  t.worker = w.key;
  ++running_count_;
  ++w.taken;
  relist(w);
}

void Scheduler::pump(std::vector<TaskKey>& admitted, std::vector<std::pair<TaskKey, WorkerKey>>& started) {
  for (;;) {
    while (waiting_.head != kNil && fits(slab_[waiting_.head].bytes)) {
      const std::uint32_t i = waiting_.head;
      admitted.push_back(slab_[i].key);
      unlink(waiting_, i);
      enqueue(i);
    }
    if (ready_.empty()) return;
    // The first-ranked worker with a free slot that has the function of
    // some queued task.
    Fn& f = fns_[ready_.begin()->second];
    start(f.idle.empty() ? *f.room.front() : *f.idle.front(), started);
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
