// Internal to kura_ipc: the dispatcher's state and the parts that work on
// it, one idea per file:
//
//   dispatcher.cpp   start and stop, accepting connections, hello, frames to
//                    the part that handles them, status
//   tasks.cpp        submit, cancel, timeouts, results; the scheduler moves
//                    tasks (scheduler.hpp: pure, tested on its own)
//   setup.cpp        everywhere(): set-up calls, stored and replayed, bounded
//   pool.cpp         the managed worker processes: start, replace, back off
//   liveness.cpp     deadlines of peers: hello, heartbeats, connection caps
//   objects.cpp      objects that follow names: regions sent to remote
//                    workers, results they send back
//
// Everything here runs on the dispatcher's loop thread, but the work that
// objects.cpp sends off it (off_loop).
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <unordered_map>
#include <unordered_set>
#include <vector>

#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/task.hpp"
#include "message_internal.hpp"
#include "scheduler.hpp"
#include "trace.hpp"
#include "transfer_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

// The largest hello a peer may send before it is known (a worker's list of
// functions must fit): what an unknown connection can make the dispatcher
// hold.
inline constexpr std::uint32_t kHelloLimit = 64 * 1024;
// How long stopping waits for managed workers before killing them.
inline constexpr std::uint64_t kStopGraceMs = 5000;
// A managed worker that dies without having finished a task since it was
// ready is restarted after a delay that doubles up to this.
inline constexpr std::uint64_t kMaxRestartDelayMs = 5000;
// A client with more than this waiting to be written makes the dispatcher
// add up every client's backlog (against max_client_backlog).
inline constexpr std::uint64_t kBacklogCheck = 1u << 20;
// Timeouts handled in one loop turn (a storm of them is taken in slices,
// so that the loop serves its connections in between).
inline constexpr std::size_t kTimeoutSlice = 4096;

// True when process `pid` is `ancestor` or descends from it within a few
// generations (read from /proc; false when either is gone).
bool descends_from(std::int64_t pid, std::int64_t ancestor);

struct Dispatcher::Core {
  // A connection that has not said hello yet.
  struct Newcomer {
    detail::Connection* conn = nullptr;
    std::int64_t pid = 0;
    std::uint64_t since_ms = 0;
  };
  struct Client {
    detail::Connection* conn = nullptr;
    std::int64_t pid = 0;
    std::uint64_t owner = 0;
    std::unordered_map<std::uint64_t, detail::TaskKey> tasks;  // its task id -> ours
    std::uint32_t parked = 0;                                  // submits waiting for room
    // Results naming a region sent to it, while their frames may still be
    // queued (the payload alive elsewhere than here): the regions to remove
    // if it is disconnected before it read them.
    std::vector<std::pair<std::weak_ptr<const Bytes>, std::string>> region_results;
    std::size_t region_results_trimmed = 0;  // their number after the last trim
  };
  struct Worker {
    detail::Connection* conn = nullptr;
    std::int64_t pid = 0;
    std::uint64_t token = 0;  // the managed process it is, or 0
    std::vector<std::string> functions;
    // A task sent to it and not yet reported (maybe cancelled since).
    struct Sent {
      detail::TaskKey key = 0;
      std::uint64_t owner = 0;         // the task's owner
      std::uint64_t stop_sent_ms = 0;  // when it was told to stop the task, or 0
      // When it was sent (wall_ns): a region it wrote before is not this
      // task's. The worker may start it before the dispatcher reads the
      // report of the task before it.
      std::uint64_t since_ns = 0;
      bool revoking = false;  // asked back (kRevoke), no answer yet
    };
    // Its tasks in the order sent, which is the order it runs them: the
    // first is the one it runs (DispatcherOptions::worker_window).
    std::vector<Sent> sent;
    // Result regions named in its reports, with when each was read
    // (wall_ns), while a task sent before that read is still in `sent`:
    // they are their clients', not a result it never reported.
    std::vector<std::pair<std::string, std::uint64_t>> reported;
    std::uint64_t setup_owner = 0;     // the owner of the set-up call it runs
    std::uint64_t setup_running = 0;   // the set-up call it runs, or 0
    std::deque<std::uint64_t> setups;  // set-up calls still to run, by id
    bool ready = false;                // its set-up calls ran once: it took tasks
    std::uint64_t done = 0;
    std::uint64_t last_heard_ms = 0;
    std::uint64_t features = 0;  // its hello's (detail::Feature)
    detail::TaskKey running() const noexcept { return sent.empty() ? 0 : sent.front().key; }
    std::uint64_t running_task_owner() const noexcept { return sent.empty() ? 0 : sent.front().owner; }
    // Objects that follow names (objects.cpp), for the task it runs: the
    // region it pulls, the result it pushes, and that result once stored
    // for the client (until kDone names it).
    std::unique_ptr<detail::OutgoingTransfer> sending;
    std::unique_ptr<detail::IncomingTransfer> receiving;
    std::uint64_t push_id = 0;    // the task of the push in progress, or 0
    std::uint64_t push_left = 0;  // its bytes still to come
    std::string push_error;       // why it will not be kept, or empty
    std::string pushed;
    // Work off the loop for the task it runs (off_loop): the sub-tree being
    // rebased for its pull, the result it pushed being checked; each the
    // job's ticket or 0. Reset when the task ends, so that the job's end
    // finds it stale and throws its region away.
    std::uint64_t preparing = 0;
    std::uint64_t checking = 0;
  };
  struct Task {
    std::uint64_t client = 0;  // peer id
    std::uint64_t client_task = 0;
    std::shared_ptr<const Bytes> payload;
    std::uint64_t owner = 0;
    detail::FnId fn = 0;
    std::uint32_t retries_left = 0;
    std::uint64_t timeout_ms = 0;
    bool acked = false;  // admitted to the queue once (and told so, when it waits for that)
    bool try_submit = false;
    std::uint64_t worker = 0;                  // while it runs
    bool wait = false;                         // TaskOptions::wait_for_worker
    std::unique_ptr<detail::TaskTrace> trace;  // when it is traced
  };
  struct Setup {
    std::shared_ptr<const Bytes> payload;
    std::uint64_t owner = 0;   // the owner of the client that asked for it
    std::uint64_t client = 0;  // that client's peer id
    std::uint64_t client_task = 0;
    std::set<std::uint64_t> pending;  // workers of its time that have not run it yet
    std::string error;
    bool answered = false;
  };
  struct ManagedWorker {
    uv_process_t process;
    Core* core = nullptr;
    std::uint64_t token = 0;
    std::uint64_t peer = 0;        // its connection, once it said hello
    bool ready = false;            // it connected and ran its set-up calls
    std::uint64_t tasks_done = 0;  // tasks it finished since it was ready
  };

  explicit Core(DispatcherOptions o);

  // dispatcher.cpp
  Status open_loop(bool signals);
  // Opens options.tcp_listen (open_loop). Errors: as Dispatcher::start().
  Status listen_tcp();
  void run_loop();
  void request_stop();  // thread-safe
  void begin_stop();
  void close_all_handles();
  void on_accept(std::unique_ptr<detail::Stream> stream);
  void on_frame(std::uint64_t peer, Frame&& f);
  void on_close(std::uint64_t peer, detail::CloseReason reason, const Status& why);
  void on_hello(std::uint64_t peer, Newcomer& n, const Frame& f);
  void refuse(detail::Connection* conn, const std::string& why);
  void drop(detail::Connection* conn, const std::string& why);
  void send_status(Client& c, std::uint64_t query);
  void log(const std::string& line) { options.log(line); }
  // Runs `body`, the work of one of the loop's callbacks: running out of
  // memory there drops that work and says so in the log, instead of
  // unwinding through libuv (which cannot be unwound through).
  template <class F>
  void guarded(F&& body) noexcept {
    try {
      body();
    } catch (const std::bad_alloc&) {
      ++out_of_memory;
      try {
        log("out of memory in the loop: that callback's work was dropped");
      } catch (...) {  // NOLINT(bugprone-empty-catch): no memory to say so either
      }
    }
  }
  std::string who_client(const Client& c) const;
  std::string who_worker(std::uint64_t id, const Worker& w) const;
  std::uint64_t now_ms();

  // tasks.cpp
  void on_submit(std::uint64_t peer, Client& c, Frame&& f);
  void on_cancel(Client& c, std::uint64_t client_task);
  void on_done(std::uint64_t worker, Worker& w, Frame&& f);
  void pump();
  void cancel_task(detail::TaskKey key, Outcome outcome, const std::string& message);
  void forget_task(detail::TaskKey key);
  void resolve(detail::TaskKey key, std::shared_ptr<const Bytes> payload, const std::string& region);
  void resolve_with(detail::TaskKey key, Outcome outcome, const std::string& message);
  void send_result_to(detail::Connection* conn, std::uint64_t client_task, Outcome outcome,
                      const std::string& message);
  void worker_lost(std::uint64_t id, Worker& w, const std::string& why);
  void remove_unsent_result(const Worker& w);

  // window.cpp: tasks sent to wait on a worker behind the one it runs
  // (DispatcherOptions::worker_window). Every change to Worker::sent goes
  // through sent_push and sent_erase, which keep the counters below.
  void sent_push(Worker& w, detail::TaskKey key, std::uint64_t owner);
  // Erases `it`; returns whether it was the first (the task that ran).
  bool sent_erase(Worker& w, std::vector<Worker::Sent>::iterator it);
  void sent_clear(Worker& w);
  // Asks back tasks that wait on a worker while a worker that has their
  // function is idle and nothing is queued.
  void revoke_for_idle();
  // kDone with kFlagRevoked: the task goes back to the front of the queue.
  void on_revoked(std::uint64_t id, Worker& w, std::uint64_t key);
  std::uint64_t waiting_on_workers = 0;  // entries of Worker::sent behind the first, over all workers
  std::uint64_t revoking = 0;            // of those, asked back and not answered
  void end_unknown_functions();          // when the first worker connects
  void client_gone(Client& c);
  std::size_t clients_of_owner(std::uint64_t owner) const;
  void arm_timeouts();
  void on_timeouts();
  void stop_running(detail::TaskKey key, Task& t);
  void end_trace(Task& t);  // writes a traced task's spans
  // True when `region` is a name of a region of `owner` (never the kept owner).
  static bool of_owner(const std::string& region, std::uint64_t owner);

  // setup.cpp
  void on_everywhere(std::uint64_t peer, Client& c, Frame&& f);
  void worker_ready(std::uint64_t id, Worker& w);
  void on_setup_done(std::uint64_t id, Worker& w, const detail::ResultMsg& msg, std::uint64_t setup);
  void answer_setup(std::uint64_t setup_id);
  void setups_of_lost_worker(std::uint64_t id, const Worker& w);
  void setups_of_gone_client(std::uint64_t client);

  // pool.cpp
  Status pool_command();  // fills in the default worker command
  void spawn_worker();
  void on_worker_exit(ManagedWorker* m, std::int64_t status, int signal);
  void schedule_restart(bool productive);
  ManagedWorker* managed_by_token(std::uint64_t token);
  std::uint64_t fresh_token() const;
  void kill_managed(std::uint64_t token);

  // objects.cpp
  // Runs `work` on libuv's thread pool, then `done` on the loop thread
  // (guarded). The loop does not end before `done` ran.
  void off_loop(std::function<void()> work, std::function<void()> done);
  void on_pull(Worker& w, Frame&& f);
  // Answers `w`'s pull for task `key` with `mapped`'s bytes (kept alive by
  // `keep`) and starts sending them.
  void start_sending(Worker& w, detail::TaskKey key, const shm::Mapped& mapped,
                     std::shared_ptr<const void> keep, detail::ObjectInfo info);
  void pump_pull(Worker& w);  // sends what the window allows, counted in pulled_bytes
  void on_worker_ack(Worker& w, const Frame& f);
  void on_push(Worker& w, Frame&& f);
  void on_worker_chunk(Worker& w, Frame&& f);
  void finish_push(Worker& w);
  void send_object_info(Worker& w, std::uint64_t id, const detail::ObjectInfo& info);
  void send_stored(Worker& w, std::uint64_t id, const detail::Stored& stored);
  void discard_pushed(Worker& w);
  // The task `w` ran ended with `result` (a region name or empty): its
  // transfers stop, and a pushed result it does not name is removed.
  void end_transfers(Worker& w, const std::string& result);

  // liveness.cpp
  void start_liveness();
  std::uint64_t sweep_every() const;
  void on_sweep();
  // Sends kHeartbeat to the workers that asked for it (kFeaturePing).
  void ping_workers();
  // Tells the workers that asked for it (kFeatureGoodbye) that the
  // dispatcher stops and closes every worker connection.
  void close_workers_for_stop();
  bool admit_connection();  // false: over the connection cap (logged)
  void note_region_result(Client& c, const std::shared_ptr<const Bytes>& payload, const std::string& region);
  void shed_backlog();  // disconnects the slowest clients while over max_client_backlog
  void prune_owner(std::uint64_t owner, unsigned attempt);
  void close_recheck(uv_timer_t* t);

  DispatcherOptions options;
  uv_loop_t loop{};
  uv_async_t stop_async{};
  uv_signal_t sigint{}, sigterm{};
  uv_timer_t restart_timer{}, kill_timer{}, timeout_timer{}, sweep_timer{}, refuse_timer{}, ping_timer{};
  bool handle_signals = false;
  bool stopping = false;
  std::unique_ptr<detail::Listener> listener;
  // DispatcherOptions::tcp_listen's listener, or null; and the address it got.
  std::unique_ptr<detail::Listener> tcp_listener;
  std::string tcp_address;
  std::mutex stop_mu;  // guards `open` against a stop() from another thread
  bool open = false;

  std::unordered_map<std::uint64_t, Newcomer> newcomers;
  std::unordered_map<std::uint64_t, Client> clients;
  std::unordered_map<std::uint64_t, Worker> workers;
  std::unordered_map<detail::TaskKey, Task> tasks;
  detail::Scheduler scheduler;
  // Every function a worker announced since the dispatcher started: a task
  // for one of them waits while no connected worker has it (a replacement
  // or a reconnect is on its way); a task for any other ends at once.
  std::unordered_set<detail::FnId> announced;
  detail::Deadlines timeouts;  // of tasks, by key
  std::uint64_t timeouts_armed_at = 0;

  std::unordered_map<std::uint64_t, Setup> setups;  // stored set-up calls, by id
  std::deque<std::uint64_t> setup_order;            // their ids, oldest first (replayed in this order)
  std::uint64_t setup_bytes = 0;
  std::uint64_t next_setup = 1;

  std::set<ManagedWorker*> managed;
  unsigned restarts_pending = 0;
  std::uint64_t restart_delay_ms = 0;

  std::vector<detail::Connection*> to_refuse;  // closed once their refusal is written
  std::set<uv_timer_t*> recheck_timers;
  std::uint64_t last_sweep_ms = 0;
  std::uint64_t refused_connections = 0;  // over the cap, since the last log line about it
  std::uint64_t max_connections = 0;      // the cap in force

  std::uint64_t next_peer = 1;
  std::uint64_t next_task = 1;
  std::uint64_t cumulative = 0;
  std::uint64_t completed = 0;
  std::uint64_t workers_dropped = 0;
  std::uint64_t workers_started = 0;
  std::uint64_t out_of_memory = 0;         // callbacks cut short by bad_alloc
  std::unique_ptr<detail::Tracer> tracer;  // when options.trace_path is set
  bool trace_failed = false;               // a line could not be written (said once)
  std::uint64_t closed_bytes_in = 0;       // socket bytes of connections that are gone
  std::uint64_t closed_bytes_out = 0;
  std::string regions_home;    // detail::region_home(), told to workers in welcome
  std::uint64_t next_job = 1;  // tickets of work off the loop (Worker::preparing, checking)
  std::uint64_t pulls = 0;
  std::uint64_t pulled_bytes = 0;
  std::uint64_t pushed_bytes = 0;
};

}  // namespace kura::ipc
