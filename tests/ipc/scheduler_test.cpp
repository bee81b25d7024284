// The dispatcher's scheduler and deadlines (ipc/scheduler.hpp) as pure code:
// order, routing by function, the exact cap, removal from every state, and a
// randomized run against a reference model built from plain vectors.
#include "scheduler.hpp"

#include <algorithm>
#include <catch2/catch.hpp>
#include <map>
#include <random>

using namespace kura::ipc::detail;
using Admit = Scheduler::Admit;
using Where = Scheduler::Where;
using Started = std::vector<std::pair<TaskKey, WorkerKey>>;

namespace {

struct Pumped {
  std::vector<TaskKey> admitted;
  Started started;
};

Pumped pump(Scheduler& s) {
  Pumped p;
  s.pump(p.admitted, p.started);
  return p;
}

// Frees worker `w` after its task (or set-up call) and pumps.
Pumped finish(Scheduler& s, WorkerKey w) {
  s.task_finished(s.running_on(w));
  s.worker_free(w);
  return pump(s);
}

// Removes worker `w` (one slot) and returns the task it ran, or 0.
TaskKey lost(Scheduler& s, WorkerKey w) {
  const std::vector<TaskKey> ran = s.remove_worker(w);
  REQUIRE(ran.size() <= 1);
  return ran.empty() ? 0 : ran.front();
}

}  // namespace

TEST_CASE("scheduler: intern gives one stable id per name", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId a = s.intern("mean");
  const FnId b = s.intern("sum");
  CHECK(a != b);
  CHECK(s.intern(std::string("mean")) == a);
  for (int i = 0; i < 1000; ++i) s.intern("f" + std::to_string(i));  // grows the tables
  CHECK(s.fn_name(a) == "mean");
  CHECK(s.fn_name(b) == "sum");
  CHECK(s.intern("sum") == b);
}

TEST_CASE("scheduler: one worker runs tasks in submit order", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  for (TaskKey t = 1; t <= 5; ++t) CHECK(s.submit(t, f, 10, false) == Admit::kQueued);
  CHECK(pump(s).started.empty());  // no worker yet
  s.add_worker(100, {f});
  CHECK(pump(s).started.empty());  // new workers start busy (set-up calls)
  CHECK_FALSE(s.is_idle(100));
  s.worker_free(100);
  auto p = pump(s);
  REQUIRE(p.started == Started{{1, 100}});
  CHECK(s.where(1) == Where::kRunning);
  CHECK(s.running_on(100) == 1);
  CHECK(s.queued_count() == 4);
  CHECK(s.queued_bytes() == 40);
  CHECK(s.running_count() == 1);
  for (TaskKey t = 2; t <= 5; ++t) CHECK(finish(s, 100).started == Started{{t, 100}});
  CHECK(finish(s, 100).started.empty());
  CHECK(s.is_idle(100));
  CHECK(s.queued_count() == 0);
  CHECK(s.running_count() == 0);
  CHECK(s.queued_bytes() == 0);
  CHECK(s.peak_bytes() == 50);
}

TEST_CASE("scheduler: two workers take tasks in the order they became idle", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(7, {f});
  s.add_worker(3, {f});
  s.worker_free(3);
  s.worker_free(7);
  CHECK(s.idle_count() == 2);
  for (TaskKey t = 1; t <= 4; ++t) s.submit(t, f, 1, false);
  CHECK(pump(s).started == Started{{1, 3}, {2, 7}});
  CHECK(s.idle_count() == 0);
  CHECK(finish(s, 7).started == Started{{3, 7}});
  CHECK(finish(s, 3).started == Started{{4, 3}});
  // Both free: 7 became idle first and gets the next task.
  s.task_finished(s.running_on(7));
  s.worker_free(7);
  s.task_finished(s.running_on(3));
  s.worker_free(3);
  s.submit(5, f, 1, false);
  CHECK(pump(s).started == Started{{5, 7}});
}

TEST_CASE("scheduler: routing by function", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId x = s.intern("x");
  const FnId y = s.intern("y");
  s.add_worker(10, {x});
  s.add_worker(20, {y});
  s.worker_free(10);
  s.worker_free(20);
  CHECK(s.has_function(x));
  CHECK(s.has_function(y));

  SECTION("a worker without the function never gets it") {
    s.submit(1, y, 1, false);
    s.submit(2, y, 1, false);
    CHECK(pump(s).started == Started{{1, 20}});
    CHECK(s.is_idle(10));
    CHECK(s.where(2) == Where::kQueued);
    CHECK(finish(s, 20).started == Started{{2, 20}});
  }

  SECTION("a task of x waits for a free x worker while a later task of y goes to a y worker") {
    s.submit(1, x, 1, false);
    CHECK(pump(s).started == Started{{1, 10}});
    s.submit(2, x, 1, false);
    s.submit(3, y, 1, false);
    CHECK(pump(s).started == Started{{3, 20}});
    CHECK(s.where(2) == Where::kQueued);
    CHECK(finish(s, 10).started == Started{{2, 10}});
  }

  SECTION("a worker with several functions takes the oldest task among them") {
    s.add_worker(30, {y, x, y});  // duplicates ignored
    s.worker_busy(10);
    s.worker_busy(20);
    s.submit(1, y, 1, false);
    s.submit(2, x, 1, false);
    s.submit(3, y, 1, false);
    s.submit(4, x, 1, false);
    s.worker_free(30);
    CHECK(pump(s).started == Started{{1, 30}});
    CHECK(finish(s, 30).started == Started{{2, 30}});
    CHECK(finish(s, 30).started == Started{{3, 30}});
    CHECK(finish(s, 30).started == Started{{4, 30}});
    s.remove_worker(30);
    CHECK(s.has_function(x));  // 10 has it, busy or not
  }

  SECTION("the worker idle longest that can take something goes first") {
    s.add_worker(30, {x, y});
    s.worker_free(30);  // idle order: 10 (x), 20 (y), 30 (x, y)
    s.submit(1, y, 1, false);
    s.submit(2, y, 1, false);
    s.submit(3, x, 1, false);
    CHECK(pump(s).started == Started{{3, 10}, {1, 20}, {2, 30}});
  }
}

TEST_CASE("scheduler: unroutable tasks wait for a worker with their function", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId x = s.intern("x");
  const FnId y = s.intern("y");
  CHECK_FALSE(s.has_function(x));
  s.submit(1, x, 1, false);
  s.submit(2, x, 1, false);
  s.submit(3, y, 1, false);
  CHECK(s.unroutable_count() == 3);
  s.add_worker(10, {y});
  CHECK(s.unroutable_count() == 2);
  CHECK(s.has_function(y));
  s.add_worker(11, {x});
  s.add_worker(12, {x});
  CHECK(s.unroutable_count() == 0);
  s.remove_worker(11);
  CHECK(s.unroutable_count() == 0);  // 12 still has x
  s.remove_worker(12);
  CHECK(s.unroutable_count() == 2);
  CHECK(s.remove(1) == Where::kQueued);
  CHECK(s.unroutable_count() == 1);
  s.submit(4, x, 1, false);
  CHECK(s.unroutable_count() == 2);
  s.worker_free(10);
  CHECK(pump(s).started == Started{{3, 10}});
  CHECK(s.unroutable_count() == 2);
  CHECK_FALSE(s.has_function(x));
}

TEST_CASE("scheduler: the cap on queued bytes is exact and admission is FIFO", "[ipc][scheduler]") {
  Scheduler s(100);
  const FnId f = s.intern("f");
  CHECK(s.cap() == 100);

  SECTION("filled exactly, then a task waits; try_only is refused without storing") {
    CHECK(s.submit(1, f, 60, false) == Admit::kQueued);
    CHECK(s.submit(2, f, 40, false) == Admit::kQueued);
    CHECK(s.queued_bytes() == 100);
    CHECK(s.peak_bytes() == 100);
    CHECK(s.submit(3, f, 1, true) == Admit::kFull);
    CHECK(s.where(3) == Where::kNone);
    CHECK(s.submit(3, f, 1, false) == Admit::kWaiting);
    CHECK(s.waiting_count() == 1);
    CHECK(s.queued_bytes() == 100);
  }

  SECTION("too large never fits and is not stored") {
    CHECK(s.submit(1, f, 101, false) == Admit::kTooLarge);
    CHECK(s.submit(1, f, 101, true) == Admit::kTooLarge);
    CHECK(s.where(1) == Where::kNone);
    CHECK(s.requeue_front(1, f, 101) == Admit::kTooLarge);
    CHECK(s.submit(1, f, 100, false) == Admit::kQueued);
  }

  SECTION("a later small task never overtakes an earlier waiting one") {
    s.add_worker(10, {f});
    CHECK(s.submit(1, f, 90, false) == Admit::kQueued);
    CHECK(s.submit(2, f, 50, false) == Admit::kWaiting);
    CHECK(s.submit(3, f, 5, false) == Admit::kWaiting);  // would fit, but 2 waits before it
    CHECK(s.submit(4, f, 5, true) == Admit::kFull);      // a try behind waiting tasks
    CHECK(pump(s).admitted.empty());
    s.worker_free(10);
    auto p = pump(s);  // 1 starts: its 90 bytes are freed, 2 and 3 fit
    CHECK(p.started == Started{{1, 10}});
    CHECK(p.admitted == std::vector<TaskKey>{2, 3});
    CHECK(s.queued_bytes() == 55);
    CHECK(s.waiting_count() == 0);
  }

  SECTION("waiting tasks are admitted in order, as many as fit") {
    s.submit(1, f, 100, false);
    s.submit(2, f, 30, false);
    s.submit(3, f, 30, false);
    s.submit(4, f, 50, false);
    s.submit(5, f, 1, false);
    CHECK(s.remove(1) == Where::kQueued);
    CHECK(s.queued_bytes() == 0);
    auto p = pump(s);
    CHECK(p.admitted == std::vector<TaskKey>{2, 3});  // 4 does not fit, 5 stays behind it
    CHECK(s.queued_bytes() == 60);
    CHECK(s.where(5) == Where::kWaiting);
    CHECK(s.remove(2) == Where::kQueued);
    CHECK(pump(s).admitted == std::vector<TaskKey>{4, 5});
    CHECK(s.queued_bytes() == 81);
    CHECK(s.peak_bytes() == 100);
  }
}

TEST_CASE("scheduler: queued bytes never exceed the cap in a random sequence", "[ipc][scheduler]") {
  std::mt19937_64 rng(12345);
  Scheduler s(1000);
  const FnId f = s.intern("f");
  for (WorkerKey w = 1; w <= 3; ++w) {
    s.add_worker(w, {f});
    s.worker_free(w);
  }
  std::vector<TaskKey> live;
  TaskKey next = 1;
  for (int step = 0; step < 20000; ++step) {
    const auto r = rng() % 10;
    if (r < 6) {
      const TaskKey t = next++;
      if (s.submit(t, f, 1 + rng() % 400, rng() % 4 == 0) != Admit::kFull) live.push_back(t);
    } else if (r < 8 && !live.empty()) {
      const std::size_t i = rng() % live.size();
      s.remove(live[i]);
      live[i] = live.back();
      live.pop_back();
    } else {
      const WorkerKey w = 1 + rng() % 3;
      s.task_finished(s.running_on(w));
      s.worker_free(w);
    }
    pump(s);
    REQUIRE(s.queued_bytes() <= 1000);
    REQUIRE(s.peak_bytes() <= 1000);
  }
  CHECK(s.peak_bytes() > 900);
}

TEST_CASE("scheduler: a requeued task goes ahead of every queued task", "[ipc][scheduler]") {
  Scheduler s(100);
  const FnId f = s.intern("f");
  s.add_worker(10, {f});
  s.worker_free(10);
  s.submit(1, f, 10, false);
  s.submit(2, f, 10, false);
  CHECK(pump(s).started == Started{{1, 10}});
  s.submit(3, f, 10, false);

  SECTION("it fits: at the head of the queue") {
    // The worker died while running 1: the dispatcher gives it another try.
    CHECK(lost(s, 10) == 1);
    CHECK(s.where(1) == Where::kNone);
    CHECK(s.running_count() == 0);
    CHECK(s.requeue_front(1, f, 10) == Admit::kQueued);
    CHECK(s.queued_bytes() == 30);
    s.add_worker(11, {f});
    s.worker_free(11);
    CHECK(pump(s).started == Started{{1, 11}});
    CHECK(finish(s, 11).started == Started{{2, 11}});
  }

  SECTION("it does not fit: at the head of the waiting line, then still first") {
    s.submit(4, f, 75, false);  // 20 + 75 queued
    s.submit(5, f, 5, false);   // fits, 100 queued
    s.submit(6, f, 1, false);   // waits
    CHECK(lost(s, 10) == 1);
    CHECK(s.requeue_front(1, f, 10) == Admit::kWaiting);
    CHECK(s.waiting_count() == 2);
    s.add_worker(11, {f});
    s.worker_free(11);
    auto p = pump(s);  // 2 starts, 10 bytes free: 1 is admitted (6 stays behind: 1 byte short)
    CHECK(p.started == Started{{2, 11}});
    CHECK(p.admitted == std::vector<TaskKey>{1});
    CHECK(s.where(6) == Where::kWaiting);
    p = finish(s, 11);
    CHECK(p.started == Started{{1, 11}});
    CHECK(p.admitted == std::vector<TaskKey>{6});
    CHECK(finish(s, 11).started == Started{{3, 11}});
  }

  SECTION("the last requeued goes first, across functions") {
    const FnId g = s.intern("g");
    s.submit(4, g, 10, false);
    s.task_finished(1);
    s.requeue_front(1, f, 10);
    s.requeue_front(9, g, 10);
    s.add_worker(11, {f, g});
    s.worker_free(11);
    CHECK(pump(s).started == Started{{9, 11}});
    CHECK(finish(s, 11).started == Started{{1, 11}});
    CHECK(finish(s, 11).started == Started{{2, 11}});
    CHECK(finish(s, 11).started == Started{{3, 11}});
    CHECK(finish(s, 11).started == Started{{4, 11}});
  }
}

TEST_CASE("scheduler: remove from each state", "[ipc][scheduler]") {
  Scheduler s(100);
  const FnId f = s.intern("f");
  s.add_worker(10, {f});
  s.worker_free(10);
  s.submit(1, f, 50, false);
  CHECK(pump(s).started == Started{{1, 10}});
  s.submit(2, f, 60, false);
  s.submit(3, f, 40, false);  // 60 + 40: full
  s.submit(4, f, 30, false);  // waits
  CHECK(s.where(1) == Where::kRunning);
  CHECK(s.where(2) == Where::kQueued);
  CHECK(s.where(3) == Where::kQueued);
  CHECK(s.where(4) == Where::kWaiting);
  CHECK(s.queued_bytes() == 100);

  CHECK(s.remove(4) == Where::kWaiting);
  CHECK(s.waiting_count() == 0);
  CHECK(s.queued_bytes() == 100);
  CHECK(s.remove(4) == Where::kNone);
  CHECK(s.remove(12345) == Where::kNone);

  s.submit(5, f, 70, false);  // waits
  CHECK(s.remove(2) == Where::kQueued);
  CHECK(s.queued_bytes() == 40);
  CHECK(pump(s).admitted.empty());  // 40 + 70 still too much
  CHECK(s.remove(3) == Where::kQueued);
  CHECK(s.queued_bytes() == 0);
  CHECK(pump(s).admitted == std::vector<TaskKey>{5});
  CHECK(s.queued_bytes() == 70);

  // A running task is forgotten; its worker stays busy until it reports.
  CHECK(s.remove(1) == Where::kRunning);
  CHECK(s.running_count() == 0);
  CHECK(s.running_on(10) == 0);
  CHECK_FALSE(s.is_idle(10));
  CHECK(pump(s).started.empty());
  s.task_finished(1);  // its result comes anyway: nothing to forget
  s.worker_free(10);
  CHECK(pump(s).started == Started{{5, 10}});
  CHECK(s.queued_bytes() == 0);
}

TEST_CASE("scheduler: remove_worker returns its task, idle or busy", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f});
  s.add_worker(11, {f});
  s.worker_free(10);
  s.worker_free(11);
  CHECK(s.worker_count() == 2);
  s.submit(1, f, 1, false);
  CHECK(pump(s).started == Started{{1, 10}});
  CHECK(lost(s, 11) == 0);  // idle
  CHECK(s.idle_count() == 0);
  CHECK(lost(s, 10) == 1);
  CHECK(s.where(1) == Where::kNone);
  CHECK(s.running_count() == 0);
  CHECK(s.worker_count() == 0);
  CHECK(lost(s, 10) == 0);  // unknown
  CHECK_FALSE(s.has_function(f));
  s.submit(2, f, 1, false);
  CHECK(pump(s).started.empty());
}

TEST_CASE("scheduler: set-up calls keep a worker busy", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f});
  s.submit(1, f, 1, false);
  CHECK(pump(s).started.empty());  // running its set-up calls
  s.worker_free(10);               // they are done
  CHECK(pump(s).started == Started{{1, 10}});
  s.worker_busy(10);  // busy already: nothing changes
  CHECK(s.running_on(10) == 1);
  // worker_free after a task forgets the task if the dispatcher did not.
  s.worker_free(10);
  CHECK(s.where(1) == Where::kNone);
  CHECK(s.is_idle(10));
  // A set-up call for everyone: the idle worker gets it outside the scheduler.
  s.worker_busy(10);
  CHECK_FALSE(s.is_idle(10));
  s.submit(2, f, 1, false);
  CHECK(pump(s).started.empty());
  s.worker_free(10);
  CHECK(pump(s).started == Started{{2, 10}});
  s.worker_free(99);  // unknown: nothing
  s.worker_busy(99);
  CHECK(s.running_on(99) == 0);
}

TEST_CASE("scheduler: a million queued tasks are removed and every counter is zero", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId fns[] = {s.intern("a"), s.intern("b"), s.intern("c")};
  constexpr TaskKey kTasks = 1000000;
  for (TaskKey t = 1; t <= kTasks; ++t) REQUIRE(s.submit(t, fns[t % 3], 100, false) == Admit::kQueued);
  CHECK(s.queued_count() == kTasks);
  CHECK(s.unroutable_count() == kTasks);
  CHECK(s.queued_bytes() == 100 * kTasks);
  // In an order unlike the queue's: every other one, then the rest.
  for (TaskKey t = 2; t <= kTasks; t += 2) REQUIRE(s.remove(t) == Where::kQueued);
  for (TaskKey t = 1; t <= kTasks; t += 2) REQUIRE(s.remove(t) == Where::kQueued);
  CHECK(s.queued_count() == 0);
  CHECK(s.waiting_count() == 0);
  CHECK(s.running_count() == 0);
  CHECK(s.queued_bytes() == 0);
  CHECK(s.unroutable_count() == 0);
  CHECK(s.peak_bytes() == 100 * kTasks);
  // The structures are intact: a new task still runs.
  s.add_worker(1, {fns[0]});
  s.worker_free(1);
  s.submit(kTasks + 1, fns[0], 1, false);
  CHECK(pump(s).started == Started{{kTasks + 1, 1}});
}

// --- the randomized model test -------------------------------------------------

namespace {

// The scheduler's semantics with O(n) vectors and nothing clever.
struct Model {
  struct Task {
    TaskKey key;
    FnId fn;
    std::uint64_t bytes;
    bool front;
  };
  struct Worker {
    WorkerKey key;
    std::vector<FnId> fns;
    bool idle = false;
    TaskKey running = 0;
  };
  explicit Model(std::uint64_t c) : cap(c) {}

  std::uint64_t cap;
  std::vector<Task> waiting;  // in admission order
  std::vector<Task> queue;    // oldest first: requeued ones at the front
  std::map<TaskKey, WorkerKey> running;
  std::vector<Worker> workers;  // in the order they were added
  std::vector<WorkerKey> idle;  // in the order they became idle
  std::uint64_t bytes = 0, peak = 0;

  bool fits(std::uint64_t b) const { return cap == 0 || bytes + b <= cap; }
  Worker* worker(WorkerKey w) {
    for (auto& x : workers)
      if (x.key == w) return &x;
    return nullptr;
  }
  bool has(const Worker& w, FnId fn) const {
    return std::find(w.fns.begin(), w.fns.end(), fn) != w.fns.end();
  }
  void enqueue(const Task& t) {
    if (t.front) {
      queue.insert(queue.begin(), t);
    } else {
      queue.push_back(t);
    }
    bytes += t.bytes;
    peak = std::max(peak, bytes);
  }
  Where where(TaskKey t) const {
    for (auto& x : waiting)
      if (x.key == t) return Where::kWaiting;
    for (auto& x : queue)
      if (x.key == t) return Where::kQueued;
    return running.count(t) != 0 ? Where::kRunning : Where::kNone;
  }
  Admit submit(TaskKey t, FnId fn, std::uint64_t b, bool try_only) {
    if (cap != 0 && b > cap) return Admit::kTooLarge;
    const bool now = waiting.empty() && fits(b);
    if (!now && try_only) return Admit::kFull;
    if (now) {
      enqueue({t, fn, b, false});
      return Admit::kQueued;
    }
    waiting.push_back({t, fn, b, false});
    return Admit::kWaiting;
  }
  Admit requeue_front(TaskKey t, FnId fn, std::uint64_t b) {
    if (cap != 0 && b > cap) return Admit::kTooLarge;
    if (fits(b)) {
      enqueue({t, fn, b, true});
      return Admit::kQueued;
    }
    waiting.insert(waiting.begin(), Task{t, fn, b, true});
    return Admit::kWaiting;
  }
  void forget_running(TaskKey t) {
    auto it = running.find(t);
    if (it == running.end()) return;
    if (Worker* w = worker(it->second); w != nullptr && w->running == t) w->running = 0;
    running.erase(it);
  }
  Where remove(TaskKey t) {
    const Where was = where(t);
    for (std::size_t i = 0; i < waiting.size(); ++i)
      if (waiting[i].key == t) waiting.erase(waiting.begin() + i);
    for (std::size_t i = 0; i < queue.size(); ++i)
      if (queue[i].key == t) {
        bytes -= queue[i].bytes;
        queue.erase(queue.begin() + i);
      }
    forget_running(t);
    return was;
  }
  void set_busy(WorkerKey w) {
    idle.erase(std::remove(idle.begin(), idle.end(), w), idle.end());
    worker(w)->idle = false;
  }
  TaskKey remove_worker(WorkerKey w) {
    Worker* x = worker(w);
    if (x == nullptr) return 0;
    set_busy(w);
    const TaskKey t = x->running;
    running.erase(t);
    workers.erase(workers.begin() + (x - workers.data()));
    return t;
  }
  void worker_free(WorkerKey w) {
    Worker* x = worker(w);
    if (x == nullptr || x->idle) return;
    forget_running(x->running);
    x->idle = true;
    idle.push_back(w);
  }
  void pump(std::vector<TaskKey>& admitted, Started& started) {
    for (;;) {
      while (!waiting.empty() && fits(waiting.front().bytes)) {
        admitted.push_back(waiting.front().key);
        enqueue(waiting.front());
        waiting.erase(waiting.begin());
      }
      bool moved = false;
      for (WorkerKey wk : idle) {
        Worker& w = *worker(wk);
        for (std::size_t i = 0; i < queue.size() && !moved; ++i) {
          if (!has(w, queue[i].fn)) continue;
          started.emplace_back(queue[i].key, wk);
          running[queue[i].key] = wk;
          w.running = queue[i].key;
          bytes -= queue[i].bytes;
          queue.erase(queue.begin() + i);
          moved = true;
        }
        if (moved) {
          set_busy(wk);
          break;
        }
      }
      if (!moved) return;
    }
  }
  std::size_t unroutable() const {
    std::size_t n = 0;
    for (auto& t : queue) {
      bool routable = false;
      for (auto& w : workers) routable = routable || has(w, t.fn);
      n += routable ? 0 : 1;
    }
    return n;
  }
};

// How the model test makes task keys: counted up as the dispatcher does, or
// keys that collide in the scheduler's index (multiples of a power of two,
// or random 64-bit values), so that its probing and deletion are exercised.
enum class Keys { kCounted, kStrided, kRandom };

void run_model(std::uint64_t cap, std::uint64_t seed, Keys keying) {
  std::mt19937_64 rng(seed);
  auto pick = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  Scheduler s(cap);
  Model m(cap);
  std::vector<FnId> fns;
  for (const char* name : {"a", "b", "c", "d"}) fns.push_back(s.intern(name));
  std::vector<TaskKey> keys;  // every key used, some long gone
  std::vector<WorkerKey> worker_keys;
  TaskKey next_task = 1;
  auto new_key = [&] {
    const TaskKey n = next_task++;
    switch (keying) {
      case Keys::kCounted: return n;
      case Keys::kStrided: return n << 20;
      case Keys::kRandom: return (rng() << 1) | 1;
    }
    return n;
  };
  WorkerKey next_worker = 1;
  auto bytes = [&] { return cap == 0 ? 1 + rng() % 100 : 1 + rng() % (cap / 3 + cap / 10); };

  for (int step = 0; step < 6000; ++step) {
    INFO("seed " << seed << " step " << step);
    const std::size_t op = pick(100);
    if (op < 35) {
      const TaskKey t = new_key();
      const FnId fn = fns[pick(fns.size())];
      const std::uint64_t b = bytes();
      const bool try_only = pick(4) == 0;
      REQUIRE(s.submit(t, fn, b, try_only) == m.submit(t, fn, b, try_only));
      keys.push_back(t);
    } else if (op < 45 && !keys.empty()) {
      const TaskKey t = keys[pick(keys.size())];
      REQUIRE(s.remove(t) == m.remove(t));
    } else if (op < 52) {
      std::vector<FnId> mine;
      for (FnId fn : fns)
        if (pick(2) == 0) mine.push_back(fn);
      const WorkerKey w = next_worker++;
      s.add_worker(w, mine);
      m.workers.push_back({w, mine});
      worker_keys.push_back(w);
    } else if (op < 57 && !worker_keys.empty()) {
      // A worker dies; its task is requeued at the front or resolved.
      const WorkerKey w = worker_keys[pick(worker_keys.size())];
      const TaskKey t = lost(s, w);
      REQUIRE(t == m.remove_worker(w));
      if (t != 0 && pick(2) == 0) {
        const FnId fn = fns[pick(fns.size())];
        const std::uint64_t b = bytes();
        REQUIRE(s.requeue_front(t, fn, b) == m.requeue_front(t, fn, b));
      }
    } else if (op < 80 && !worker_keys.empty()) {
      const WorkerKey w = worker_keys[pick(worker_keys.size())];
      if (pick(3) == 0) {
        const TaskKey t = s.running_on(w);
        s.task_finished(t);
        m.forget_running(t);
      }
      s.worker_free(w);
      m.worker_free(w);
    } else if (op < 84 && !worker_keys.empty()) {
      const WorkerKey w = worker_keys[pick(worker_keys.size())];
      s.worker_busy(w);
      if (Model::Worker* x = m.worker(w); x != nullptr && x->idle) m.set_busy(w);
    }
    if (pick(3) != 0) {
      Pumped got = pump(s);
      Pumped want;
      m.pump(want.admitted, want.started);
      REQUIRE(got.admitted == want.admitted);
      REQUIRE(got.started == want.started);
    }
    REQUIRE(s.queued_bytes() == m.bytes);
    REQUIRE(s.peak_bytes() == m.peak);
    REQUIRE(s.waiting_count() == m.waiting.size());
    REQUIRE(s.queued_count() == m.queue.size());
    REQUIRE(s.running_count() == m.running.size());
    REQUIRE(s.unroutable_count() == m.unroutable());
    REQUIRE(s.worker_count() == m.workers.size());
    REQUIRE(s.idle_count() == m.idle.size());
    if (cap != 0) REQUIRE(s.queued_bytes() <= cap);
    if (step % 50 == 0) {
      for (TaskKey t : keys) REQUIRE(s.where(t) == m.where(t));
      for (WorkerKey w : worker_keys) {
        Model::Worker* x = m.worker(w);
        REQUIRE(s.running_on(w) == (x != nullptr ? x->running : 0));
        REQUIRE(s.is_idle(w) == (x != nullptr && x->idle));
      }
      for (FnId fn : fns) {
        bool any = false;
        for (auto& w : m.workers) any = any || m.has(w, fn);
        REQUIRE(s.has_function(fn) == any);
      }
    }
  }
}

}  // namespace

TEST_CASE("scheduler: random operations agree with a reference model", "[ipc][scheduler]") {
  for (std::uint64_t seed = 1; seed <= 4; ++seed) {
    run_model(1000, seed, Keys::kCounted);
    run_model(0, seed + 100, Keys::kCounted);
  }
  run_model(1000, 11, Keys::kStrided);
  run_model(0, 12, Keys::kRandom);
}

TEST_CASE("scheduler: task keys that collide in the index", "[ipc][scheduler]") {
  // Many keys with the same low bits, stored and removed in an interleaved
  // order: each must still be found where it is.
  Scheduler s(0);
  const FnId f = s.intern("f");
  std::vector<TaskKey> keys;
  for (TaskKey i = 1; i <= 3000; ++i) keys.push_back(i << 32);
  for (TaskKey i = 1; i <= 3000; ++i) keys.push_back((i << 32) | 5);
  for (TaskKey t : keys) REQUIRE(s.submit(t, f, 1, false) == Admit::kQueued);
  std::mt19937_64 rng(3);
  std::shuffle(keys.begin(), keys.end(), rng);
  for (std::size_t i = 0; i < keys.size(); ++i) {
    REQUIRE(s.remove(keys[i]) == Where::kQueued);
    REQUIRE(s.where(keys[i]) == Where::kNone);
    if (i % 500 == 0)
      for (std::size_t j = i + 1; j < keys.size(); ++j) REQUIRE(s.where(keys[j]) == Where::kQueued);
  }
  CHECK(s.queued_count() == 0);
}

// --- Deadlines -------------------------------------------------------------------

TEST_CASE("deadlines: earliest first, moved, cleared", "[ipc][scheduler]") {
  Deadlines d;
  CHECK_FALSE(d.next());
  CHECK(d.pop_due(1000, 10).empty());
  d.set(1, 500);
  d.set(2, 100);
  d.set(3, 300);
  d.set(4, 300);  // ties come out in the order they were set
  CHECK(d.size() == 4);
  CHECK(d.next() == 100u);
  CHECK(d.contains(3));
  d.set(2, 700);  // moved later
  CHECK(d.next() == 300u);
  d.set(1, 50);  // moved earlier
  CHECK(d.next() == 50u);
  d.clear(3);
  d.clear(3);   // twice: nothing
  d.clear(99);  // unknown: nothing
  CHECK_FALSE(d.contains(3));
  CHECK(d.size() == 3);
  CHECK(d.pop_due(49, 10).empty());
  CHECK(d.pop_due(300, 10) == std::vector<std::uint64_t>{1, 4});
  CHECK(d.next() == 700u);
  CHECK(d.pop_due(10000, 10) == std::vector<std::uint64_t>{2});
  CHECK(d.size() == 0);
  CHECK_FALSE(d.next());
}

TEST_CASE("deadlines: pop_due in slices of at most max", "[ipc][scheduler]") {
  Deadlines d;
  for (std::uint64_t k = 1; k <= 10; ++k) d.set(k, 100);
  d.set(11, 200);
  CHECK(d.pop_due(150, 4) == std::vector<std::uint64_t>{1, 2, 3, 4});
  CHECK(d.pop_due(150, 4) == std::vector<std::uint64_t>{5, 6, 7, 8});
  CHECK(d.pop_due(150, 4) == std::vector<std::uint64_t>{9, 10});
  CHECK(d.pop_due(150, 4).empty());
  CHECK(d.next() == 200u);
  CHECK(d.pop_due(200, 0).empty());
  CHECK(d.pop_due(200, 1) == std::vector<std::uint64_t>{11});
}

TEST_CASE("deadlines: random sets and clears agree with a sorted model", "[ipc][scheduler]") {
  std::mt19937_64 rng(7);
  Deadlines d;
  std::map<std::uint64_t, std::pair<std::uint64_t, std::uint64_t>> model;  // key -> (at, set order)
  std::uint64_t order = 0, now = 0;
  for (int step = 0; step < 20000; ++step) {
    const std::uint64_t key = 1 + rng() % 500;
    const auto op = rng() % 10;
    if (op < 6) {
      const std::uint64_t at = now + rng() % 1000;
      d.set(key, at);
      model[key] = {at, order++};
    } else if (op < 8) {
      d.clear(key);
      model.erase(key);
    } else {
      now += rng() % 100;
      const std::size_t max = rng() % 8;
      std::vector<std::pair<std::pair<std::uint64_t, std::uint64_t>, std::uint64_t>> due;
      for (auto& [k, v] : model)
        if (v.first <= now) due.push_back({v, k});
      std::sort(due.begin(), due.end());
      std::vector<std::uint64_t> want;
      for (std::size_t i = 0; i < due.size() && i < max; ++i) {
        want.push_back(due[i].second);
        model.erase(due[i].second);
      }
      REQUIRE(d.pop_due(now, max) == want);
    }
    REQUIRE(d.size() == model.size());
    std::optional<std::uint64_t> earliest;
    for (auto& [k, v] : model)
      if (!earliest || v.first < *earliest) earliest = v.first;
    REQUIRE(d.next() == earliest);
  }
}

TEST_CASE("scheduler: a worker with slots takes tasks while it runs one, idle workers first",
          "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f}, 2);
  s.add_worker(11, {f}, 2);
  s.worker_free(10);
  s.worker_free(11);
  for (TaskKey t = 1; t <= 5; ++t) s.submit(t, f, 1, false);
  // Both idle workers take one before either takes a second.
  CHECK(pump(s).started == Started{{1, 10}, {2, 11}, {3, 10}, {4, 11}});
  CHECK(s.queued_count() == 1);
  CHECK(s.running_count() == 4);
  CHECK(s.taken_slots(10) == 2);
  CHECK(s.running_on(10) == 1);
  CHECK(s.idle_count() == 0);
  // A report frees one slot: the queued task goes there.
  s.task_finished(1);
  s.task_done(10, 1);
  CHECK(pump(s).started == Started{{5, 10}});
  CHECK(s.running_on(10) == 3);
  s.task_done(10, 3);
  s.task_done(10, 5);
  CHECK(s.is_idle(10));
  CHECK(s.idle_count() == 1);
  CHECK(s.running_count() == 2);  // 2 and 4 on worker 11
}

TEST_CASE("scheduler: an idle worker goes before one with a free slot, whatever their ages",
          "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f}, 4);
  s.worker_free(10);
  s.submit(1, f, 1, false);
  CHECK(pump(s).started == Started{{1, 10}});
  s.add_worker(11, {f}, 4);
  s.worker_free(11);  // idle after 10 had its slot free
  s.submit(2, f, 1, false);
  s.submit(3, f, 1, false);
  CHECK(pump(s).started == Started{{2, 11}, {3, 10}});
}

TEST_CASE("scheduler: a removed task keeps its slot until reported, a lost worker returns all it ran",
          "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f}, 2);
  s.worker_free(10);
  for (TaskKey t = 1; t <= 3; ++t) s.submit(t, f, 1, false);
  CHECK(pump(s).started == Started{{1, 10}, {2, 10}});
  // Task 2 is cancelled while it waits on the worker: forgotten, the slot
  // stays taken until the worker says it dropped it.
  CHECK(s.remove(2) == Where::kRunning);
  CHECK(s.running_count() == 1);
  CHECK(pump(s).started.empty());
  s.task_done(10, 2);
  CHECK(pump(s).started == Started{{3, 10}});
  CHECK(s.remove_worker(10) == std::vector<TaskKey>{1, 3});
  CHECK(s.running_count() == 0);
  CHECK(s.where(1) == Where::kNone);
  CHECK(s.where(3) == Where::kNone);
}

TEST_CASE("scheduler: a held worker with tasks takes no more until freed", "[ipc][scheduler]") {
  Scheduler s(0);
  const FnId f = s.intern("f");
  s.add_worker(10, {f}, 3);
  s.worker_free(10);
  s.submit(1, f, 1, false);
  CHECK(pump(s).started == Started{{1, 10}});
  s.worker_busy(10);  // a set-up call waits for it
  s.submit(2, f, 1, false);
  CHECK(pump(s).started.empty());
  s.task_done(10, 1);
  CHECK(pump(s).started.empty());
  CHECK_FALSE(s.is_idle(10));
  s.worker_free(10);
  CHECK(pump(s).started == Started{{2, 10}});
}
