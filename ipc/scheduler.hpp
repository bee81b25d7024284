// Internal to kura_ipc: the dispatcher's scheduling as pure code (no libuv,
// no I/O, no clock reads), so that it can be tested alone and every step of
// it has a known cost. Never installed.
//
// Scheduler: tasks wait for room under a cap on queued payload bytes, queue
// per function, and go to idle workers that have their function, oldest
// first. An operation on one task costs O(1), plus O(log F) where it
// changes whether its function has work for an idle worker (F functions);
// one on a worker costs O(its functions x log F). A client that disconnects
// with 320,000 queued tasks has them removed in well under a second, not the
// 50 s of an O(n) removal each.
//
// Deadlines: the task timeouts and peer deadlines of the dispatcher in one
// indexed heap, served by one timer armed for next().
//
// Neither is thread-safe: the dispatcher's loop thread owns them. Functions
// not marked noexcept may throw std::bad_alloc, after which the object may
// only be destroyed; nothing else throws. Breaking a REQUIRES aborts through
// KURA_CHECK.
#pragma once

#include <cstddef>
#include <cstdint>
#include <deque>
#include <list>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

namespace kura::ipc::detail {

using TaskKey = std::uint64_t;    // the dispatcher's task id, never 0
using WorkerKey = std::uint64_t;  // the dispatcher's peer id, never 0
using FnId = std::uint32_t;       // an interned function name

// Tasks in three states:
//   waiting  submitted, waiting for room under the cap (FIFO, exact cap: a
//            later small task never overtakes an earlier waiting one)
//   queued   its bytes counted in queued_bytes(), in its function's queue
//   running  sent to a worker (its bytes no longer counted)
// and workers with `slots`: how many tasks one holds at a time (sent and
// not yet reported; a worker with more than one runs them in order, the
// others waiting in its own queue). A worker is held (it runs a set-up call
// the dispatcher gave it, or is still starting), idle (not held, nothing
// sent), or neither. pump() moves waiting tasks into the queue while they
// fit and queued tasks to workers with a free slot: an idle worker first,
// the one idle longest, else the worker whose slot freed longest ago; it
// takes the oldest queued task among its functions (oldest by submit order;
// requeued tasks are older than all), one at a time, admitting waiting
// tasks after each start.
class Scheduler {
 public:
  // `cap_bytes`: the cap on queued payload bytes; 0: none.
  explicit Scheduler(std::uint64_t cap_bytes) noexcept : cap_(cap_bytes) {}
  Scheduler(const Scheduler&) = delete;
  Scheduler& operator=(const Scheduler&) = delete;

  // The id of function name `fn`: the same name gives the same id for the
  // life of this object.
  FnId intern(std::string_view fn);
  // The id of `fn` if intern() gave it one, else nullopt (interns nothing).
  std::optional<FnId> find(std::string_view fn) const noexcept;
  // How many distinct names intern() has seen.
  std::size_t functions() const noexcept { return fns_.size(); }
  // The name of an id intern() returned. REQUIRES: `id` came from intern().
  std::string_view fn_name(FnId id) const;

  enum class Admit {
    kQueued,   // in the queue now, its bytes counted
    kWaiting,  // waiting for room, behind every task that waited before it
    kFull,     // a try that does not fit now: not stored
    kTooLarge  // more bytes than the cap: it never fits; not stored
  };
  // A new task of `bytes` payload for function `fn`. With `try_only`, a task
  // that cannot be queued now (it does not fit, or other tasks wait before
  // it) is kFull instead of kWaiting. REQUIRES: `t` is not 0 and not stored;
  // `fn` came from intern().
  Admit submit(TaskKey t, FnId fn, std::uint64_t bytes, bool try_only);
  // A task whose worker died, given another try ahead of every queued task
  // when it fits now (kQueued), else at the head of the waiting line
  // (kWaiting; when admitted later it still goes ahead of every queued
  // task). Its bytes count again. kTooLarge as for submit(). REQUIRES: `t`
  // is not stored (it ran, and the dispatcher called task_finished(),
  // remove() or remove_worker() for it); `fn` came from intern().
  Admit requeue_front(TaskKey t, FnId fn, std::uint64_t bytes);

  enum class Where { kNone, kWaiting, kQueued, kRunning };
  // Removes task `t` wherever it is, in O(1), and returns where it was
  // (kNone: unknown, nothing changes). A queued task's bytes are freed (the
  // next pump() may admit waiting tasks). A running task is forgotten, but
  // its worker stays busy until worker_free(): it must report before it is
  // given anything else.
  Where remove(TaskKey t);
  Where where(TaskKey t) const noexcept;

  // A new worker with the functions it announced (duplicates are ignored),
  // holding up to `slots` tasks at a time. It starts held (the dispatcher
  // first runs its set-up calls) until worker_free(). REQUIRES: `w` is not
  // 0 and not a worker; `slots` >= 1; every id came from intern().
  void add_worker(WorkerKey w, std::vector<FnId> fns, std::uint32_t slots = 1);
  // Forgets worker `w` and returns the tasks it was running, in the order
  // they started. They are no longer stored: the dispatcher requeues them
  // (requeue_front(), the last first) or resolves them. Unknown `w`: none.
  std::vector<TaskKey> remove_worker(WorkerKey w);
  // `w` reported everything it was given: it is no longer held, all its
  // slots are free, and tasks still recorded as running on it are forgotten
  // as by task_finished(). It goes behind the workers idle before it.
  // Unknown `w`: nothing. With one slot this is also how a task's end is
  // told; task_done() tells one task's end of a worker with several.
  void worker_free(WorkerKey w);
  // `w` reported task `t` (started on it, maybe removed since): one slot
  // is free again, and `t` is forgotten if still stored. Unknown `w`, or a
  // `w` with no slot taken: nothing.
  void task_done(WorkerKey w, TaskKey t);
  // `w` is given something outside the scheduler (a set-up call), or must
  // get nothing more until worker_free(): held. Unknown `w`: nothing.
  void worker_busy(WorkerKey w);
  // Running task `t` ended on its worker: forgotten (its slot stays taken
  // until worker_free() or task_done()). Unknown `t`: nothing. REQUIRES:
  // `t` is not waiting or queued.
  void task_finished(TaskKey t);
  // Whether some connected worker (idle or busy) has function `fn`.
  bool has_function(FnId fn) const noexcept;
  // Whether an idle worker has function `fn`.
  bool has_idle_worker(FnId fn) const noexcept;
  // The task `w` started first of those it runs, or 0 (none, or `w` unknown).
  TaskKey running_on(WorkerKey w) const noexcept;
  // Not held and nothing sent to it.
  bool is_idle(WorkerKey w) const noexcept;
  // Tasks sent to `w` and not yet reported (0: unknown `w`).
  std::uint32_t taken_slots(WorkerKey w) const noexcept;

  // Moves as much as can move: waiting tasks into the queue while they fit
  // (in order), and queued tasks to idle workers (see the class comment).
  // Appends to `admitted` the tasks moved from waiting to queued (the
  // dispatcher acknowledges them), in order, and to `started` the (task,
  // worker) pairs to send, in order: those tasks are running from now on
  // (their bytes freed) and those workers busy. Costs O(1) when nothing can
  // move, O(log F) per task admitted and O(functions of the worker x log F)
  // per task started (F functions): never a scan of all idle workers.
  void pump(std::vector<TaskKey>& admitted, std::vector<std::pair<TaskKey, WorkerKey>>& started);

  // Counters for status.
  std::uint64_t queued_bytes() const noexcept { return queued_bytes_; }
  std::uint64_t peak_bytes() const noexcept { return peak_bytes_; }
  std::uint64_t cap() const noexcept { return cap_; }
  std::size_t waiting_count() const noexcept { return waiting_.size; }
  std::size_t queued_count() const noexcept { return queued_count_; }
  std::size_t running_count() const noexcept { return running_count_; }
  std::size_t worker_count() const noexcept { return workers_.size(); }
  std::size_t idle_count() const noexcept { return idle_count_; }
  // Queued tasks whose function no connected worker has (they wait for one).
  std::size_t unroutable_count() const noexcept { return unroutable_; }

 private:
  static constexpr std::uint32_t kNil = UINT32_MAX;
  // A stored task, in slab_ (its place never changes while stored; free
  // places are chained through `next`).
  struct Task {
    TaskKey key = 0;
    std::uint64_t bytes = 0;
    std::uint64_t seq = 0;  // queue order: smaller is older
    WorkerKey worker = 0;   // while running
    FnId fn = 0;
    std::uint32_t prev = kNil;  // in the waiting line or its function's queue
    std::uint32_t next = kNil;
    Where where = Where::kNone;
    bool front = false;  // requeued: goes ahead of every queued task
  };
  // A doubly linked list of places in slab_ through Task::prev/next: O(1)
  // insertion at either end and removal of any member.
  struct TaskList {
    std::uint32_t head = kNil;
    std::uint32_t tail = kNil;
    std::size_t size = 0;
  };
  // TaskKey -> place in slab_: open addressing, Robin Hood linear probing
  // (an entry never sits farther from its home slot than the one it passed)
  // with backward-shift deletion, at most half full. A lookup is one cache
  // miss where std::unordered_map takes several, and removal stops at the
  // first entry at its home.
  class KeyIndex {
   public:
    std::uint32_t find(TaskKey key) const noexcept;  // kNil if absent
    void insert(TaskKey key, std::uint32_t place);   // REQUIRES: key is not 0 and absent
    void erase(TaskKey key) noexcept;                // an absent key: nothing
    std::size_t size() const noexcept { return size_; }
    void release() noexcept;  // REQUIRES: empty; frees the table

   private:
    struct Slot {
      TaskKey key = 0;  // 0: empty
      std::uint32_t place = 0;
      std::uint32_t dist = 0;  // from its home slot
    };
    // The key's low bits with the higher ones folded in: task ids counted
    // up by the dispatcher land in neighbouring slots (one cache line serves
    // several), and no bit of a key is ignored.
    std::size_t home(TaskKey key) const noexcept {
      for (unsigned s = bits_; s < 64; s *= 2) key ^= key >> s;
      return static_cast<std::size_t>(key) & (slots_.size() - 1);
    }
    std::size_t slot_of(TaskKey key) const noexcept;  // slots_.size() if absent
    void put(Slot s) noexcept;                        // REQUIRES: a free slot
    void grow();
    std::vector<Slot> slots_;  // a power of two of them (at least 16), or none
    unsigned bits_ = 0;        // log2(slots_.size())
    std::size_t size_ = 0;
  };
  struct Worker;
  using IdleList = std::list<Worker*>;
  struct Worker {
    WorkerKey key = 0;
    std::vector<FnId> fns;  // sorted, unique
    std::uint32_t slots = 1;
    std::uint32_t taken = 0;  // tasks sent and not reported (running, or removed since)
    bool held = true;
    bool listed = false;                     // in its functions' idle or room lists
    bool in_room = false;                    // listed: in the room lists (else idle, counted in idle_count_)
    std::uint64_t idle_seq = 0;              // when it was listed: smaller is longer
    std::vector<IdleList::iterator> places;  // while listed: its place in each function's list
    std::vector<TaskKey> running;            // stored tasks running on it, by start
    bool idle() const noexcept { return !held && taken == 0; }
    bool free() const noexcept { return !held && taken < slots; }
  };
  struct Fn {
    std::string_view name;  // into names_
    TaskList queue;         // queued tasks, by seq
    std::size_t workers = 0;
    IdleList idle;  // idle workers that have it, by idle_seq
    IdleList room;  // workers that have it with a free slot and a task, by idle_seq
    // This function's entry in ready_, if any: (rank of the worker that
    // takes its next task, id); see rank().
    std::optional<std::uint64_t> ready_key;
  };
  // Idle workers come before those with a task already, each by idle_seq.
  static std::uint64_t rank(const Worker& w) noexcept {
    return w.in_room ? w.idle_seq | (std::uint64_t{1} << 63) : w.idle_seq;
  }

  bool fits(std::uint64_t bytes) const noexcept { return cap_ == 0 || queued_bytes_ + bytes <= cap_; }
  void push_back(TaskList& l, std::uint32_t i) noexcept;
  void push_front(TaskList& l, std::uint32_t i) noexcept;
  void unlink(TaskList& l, std::uint32_t i) noexcept;
  std::uint32_t store(TaskKey t, FnId fn, std::uint64_t bytes);
  void forget(std::uint32_t i) noexcept;
  void enqueue(std::uint32_t i);
  void dequeue(std::uint32_t i) noexcept;
  // Lists `w` in its functions' lists if it has a free slot, else unlists
  // it; a listed worker goes to the back.
  void relist(Worker& w);
  void unlist(Worker& w);
  void refresh_ready(FnId id);
  void start(Worker& w, std::vector<std::pair<TaskKey, WorkerKey>>& started);

  std::uint64_t cap_;
  std::deque<std::string> names_;  // a deque: its strings never move, views into them stay valid
  std::unordered_map<std::string_view, FnId> ids_;
  std::vector<Fn> fns_;
  std::vector<Task> slab_;
  std::uint32_t free_ = kNil;  // the first free place in slab_
  KeyIndex index_;
  TaskList waiting_;
  std::unordered_map<WorkerKey, Worker> workers_;
  // Functions with both queued tasks and workers with a free slot, by the
  // rank of the worker that takes the next: the first entry's worker is the
  // next to start.
  std::set<std::pair<std::uint64_t, FnId>> ready_;
  std::uint64_t next_seq_ = std::uint64_t{1} << 63;        // counts up: submitted tasks
  std::uint64_t next_front_seq_ = std::uint64_t{1} << 63;  // counts down: requeued tasks
  std::uint64_t next_idle_seq_ = 0;
  std::uint64_t queued_bytes_ = 0;
  std::uint64_t peak_bytes_ = 0;
  std::size_t queued_count_ = 0;
  std::size_t running_count_ = 0;
  std::size_t idle_count_ = 0;
  std::size_t unroutable_ = 0;
};

// Deadlines by key (task timeouts, peer heartbeats): an indexed min-heap.
// Times are milliseconds on whatever monotonic clock the caller uses; keys
// with equal deadlines come out in the order they were set.
class Deadlines {
 public:
  // Adds key's deadline, or moves it to `at_ms`. O(log n).
  void set(std::uint64_t key, std::uint64_t at_ms);
  // Removes key's deadline; an unknown key: nothing. O(log n).
  void clear(std::uint64_t key) noexcept;
  bool contains(std::uint64_t key) const noexcept { return index_.count(key) != 0; }
  // The earliest deadline, or nullopt when there is none.
  std::optional<std::uint64_t> next() const noexcept;
  // Removes and returns the keys due at `now_ms` (deadline <= now_ms),
  // earliest first, at most `max` of them: the dispatcher processes a storm
  // of timeouts in slices without stalling its loop. O(k log n) for k keys.
  std::vector<std::uint64_t> pop_due(std::uint64_t now_ms, std::size_t max);
  std::size_t size() const noexcept { return heap_.size(); }

 private:
  struct Entry {
    std::uint64_t at = 0;
    std::uint64_t seq = 0;  // breaks ties: set order
    std::uint64_t key = 0;
    std::size_t* pos = nullptr;  // index_[key]: where this entry is in heap_
  };
  static bool before(const Entry& a, const Entry& b) noexcept {
    return a.at != b.at ? a.at < b.at : a.seq < b.seq;
  }
  void place(std::size_t i, Entry e) noexcept;
  void sift_up(std::size_t i) noexcept;
  void sift_down(std::size_t i) noexcept;
  void erase_at(std::size_t i) noexcept;

  std::vector<Entry> heap_;
  std::unordered_map<std::uint64_t, std::size_t> index_;  // node-based: Entry::pos stays valid
  std::uint64_t next_seq_ = 0;
};

}  // namespace kura::ipc::detail
