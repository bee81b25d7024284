// The dispatcher's semantics with real processes: the kura tool as workers
// (and as the dispatcher where it must die), clients in this process.
#include <poll.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <set>
#include <thread>

#include "ipc_util.hpp"
#include "kura/core/name.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

bool exists_region(const std::string& name) {
  struct stat st;
  return ::lstat(shm_path(name).c_str(), &st) == 0;
}

}  // namespace

TEST_CASE("one worker runs tasks in the order they were submitted", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  std::vector<ipc::TaskId> ids;
  for (int i = 0; i < 50; ++i) {
    auto id = c->submit(call("echo", {num(i)}));
    REQUIRE(id.is_ok());
    ids.push_back(*id);
  }
  for (int i = 0; i < 50; ++i) {
    auto [id, r] = c->wait_any();
    CHECK(id == ids[i]);  // one worker: results arrive in submission order
    CHECK(number(r) == i);
  }
}

TEST_CASE("tasks spread over every worker", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  std::vector<ipc::TaskId> ids;
  for (int i = 0; i < 20; ++i) ids.push_back(c->submit(call("sleep", {num(0.01)})).value());
  for (auto& r : c->wait_all(ids)) CHECK(r.ok());
  auto s = status_of(*c);
  REQUIRE(s.workers.size() == 2);
  CHECK(s.workers[0].tasks_done + s.workers[1].tasks_done == 20);
  CHECK(s.workers[0].tasks_done > 0);
  CHECK(s.workers[1].tasks_done > 0);
  CHECK(s.completed == 20);
}

TEST_CASE("nothing is lost and nothing duplicated while workers are killed", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  // The dispatcher as its own process, so its descriptors can be counted;
  // with workers that hold one task, and with tasks waiting on workers too.
  const std::string window = GENERATE("1", "8");
  INFO("--window " << window);
  Process dp({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "2", "--window", window});
  auto listening = dp.read_line(20s);
  REQUIRE(listening);
  auto c = connect(dir.socket());
  wait_workers(*c, 2);
  const int fds_before = fd_count(dp.pid());
  const auto files_before = shm_entries();

  constexpr int kTasks = 10000;
  constexpr int kWindow = 200;
  constexpr int kKillEvery = 300;
  std::map<ipc::TaskId, int> index;  // task -> its input
  std::set<ipc::TaskId> seen;
  std::vector<int> results_of(kTasks, 0);
  int ok = 0, lost = 0, next = 0, done = 0, kills = 0;
  std::set<std::int64_t> killed;
  while (done < kTasks) {
    while (next < kTasks && static_cast<int>(index.size()) < kWindow) {
      ipc::TaskOptions o;
      o.retries = next % 2 == 0 ? 0 : 3;  // half the tasks ask to be retried
      auto id = c->submit(call("echo", {num(next)}), o);
      REQUIRE(id.is_ok());
      index[*id] = next++;
    }
    auto [id, r] = c->wait_any();
    REQUIRE(seen.insert(id).second);  // never twice
    auto it = index.find(id);
    REQUIRE(it != index.end());
    const int input = it->second;
    index.erase(it);
    ++results_of[input];
    if (r.ok()) {
      CHECK(number(r) == input);
      ++ok;
    } else {
      INFO("task " << input << ": " << r.describe());
      REQUIRE(r.outcome() == ipc::Outcome::kWorkerLost);
      CHECK(input % 2 == 0);  // only tasks without retries may be lost
      ++lost;
    }
    if (++done % kKillEvery == 0) {
      // A worker killed a moment ago may still be listed: kill each pid once.
      for (const auto& w : status_of(*c).workers) {
        if (killed.insert(w.pid).second) {
          ::kill(static_cast<pid_t>(w.pid), SIGKILL);
          ++kills;
          break;
        }
      }
    }
  }
  INFO("ok " << ok << ", worker-lost " << lost << ", kills " << kills);
  CHECK(ok + lost == kTasks);
  CHECK(std::all_of(results_of.begin(), results_of.end(), [](int n) { return n == 1; }));
  CHECK(kills >= kTasks / kKillEvery - 1);
  // The pool is back to 2: every kill replaced, no killed worker listed.
  eventually(
      [&] {
        auto s = c->status();
        if (!s || s->cumulative != 2 + static_cast<std::uint64_t>(kills) || s->workers.size() != 2)
          return false;
        for (const auto& w : s->workers)
          if (killed.count(w.pid) != 0 || w.state != "idle") return false;
        return true;
      },
      20s, "2 live workers after " + std::to_string(kills) + " kills");
  auto s = status_of(*c);
  CHECK(s.awaiting == 0);
  CHECK(s.executing == 0);
  CHECK(shm_entries() == files_before);
  eventually([&] { return fd_count(dp.pid()) == fds_before; }, 10s,
             "the dispatcher's descriptors back to their start");
  dp.signal(SIGTERM);
  auto code = dp.wait(20s);
  REQUIRE(code);
  CHECK(*code == 0);
}

TEST_CASE("the byte cap is exact: try_submit answers full and submit waits for room", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  // Measure one task's payload, then allow exactly three in the queue.
  const std::uint64_t cap = 3 * sleep_payload();
  EmbeddedDispatcher d(dir, 1, cap);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  // The worker is busy with a long task; three more fill the queue.
  auto busy = c->submit(call("sleep", {num(30)}));
  REQUIRE(busy.is_ok());
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the long task to run");
  const std::vector<ipc::TaskId> queued = try_fill(*c, 3);
  auto full = c->try_submit(call("sleep", {num(0.0)}));
  REQUIRE(full.is_ok());
  CHECK_FALSE(full->has_value());
  auto s = status_of(*c);
  CHECK(s.queued_bytes == cap);
  CHECK(s.queued_cap == cap);

  // A blocking submit from another thread waits until room frees.
  std::atomic<bool> admitted{false};
  ipc::TaskId late = 0;
  std::thread t([&] {
    late = c->submit(call("sleep", {num(0.0)})).value();
    admitted = true;
  });
  // It waits, not admitted, while the queue stays full: the queue never
  // holds more than the cap.
  eventually([&] { return status_of(*c).awaiting == 4; }, 20s, "the blocking submit to reach the dispatcher");
  for (int i = 0; i < 20; ++i) {
    auto now = status_of(*c);
    CHECK(now.queued_bytes <= cap);
    CHECK(now.awaiting == 4);
  }
  CHECK_FALSE(admitted.load());
  REQUIRE(c->cancel(*busy).is_ok());  // the worker frees, the queue drains
  t.join();
  CHECK(admitted.load());
  CHECK(c->wait(*busy).outcome() == ipc::Outcome::kCancelled);
  for (auto& r : c->wait_all(queued)) CHECK(r.ok());
  CHECK(c->wait(late).ok());
  auto after = status_of(*c);
  CHECK(after.queued_peak == cap);
  CHECK(after.queued_bytes == 0);
}

TEST_CASE("cancel: a queued task never runs, a running one stops and its worker survives",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto pid = status_of(*c).workers.at(0).pid;
  auto running = c->submit(call("sleep", {num(30)})).value();
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the sleep to run");
  auto queued = c->submit(call("echo", {num(1)})).value();
  REQUIRE(c->cancel(queued).is_ok());
  auto rq = c->wait(queued);
  CHECK(rq.outcome() == ipc::Outcome::kCancelled);
  const auto start = std::chrono::steady_clock::now();
  REQUIRE(c->cancel(running).is_ok());
  auto rr = c->wait(running);
  CHECK(rr.outcome() == ipc::Outcome::kCancelled);
  CHECK(std::chrono::steady_clock::now() - start < 20s);  // far less than the sleep
  // The same worker is free again and runs the next task.
  auto next = c->submit(call("echo", {num(7)})).value();
  CHECK(number(c->wait(next)) == 7);
  auto s = status_of(*c);
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].pid == pid);
  CHECK(s.cumulative == 1);
  CHECK(s.workers[0].tasks_done == 2);  // the cancelled sleep, then the echo; the queued echo never ran
  // Cancelling a task that finished changes nothing.
  auto done = c->submit(call("echo", {num(8)})).value();
  auto rd = c->wait(done);
  CHECK(c->cancel(done).is_ok());
  CHECK(number(rd) == 8);
  CHECK(status_of(*c).completed == 4);
}

// The soak (issue 18) requires a restarted dispatcher's `completed` to equal
// the tasks its clients submitted: every way a task ends with a result
// counts once, and nothing else does.
TEST_CASE(
    "completed counts each task that ended with a result, not a try_submit answered full nor a task "
    "whose client left",
    "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 3 * sleep_payload());
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  std::uint64_t results = 0;
  auto outcome_of = [&](ipc::TaskId id) {
    ++results;
    return c->wait(id).outcome();
  };
  CHECK(outcome_of(c->submit(call("echo", {num(1)})).value()) == ipc::Outcome::kOk);
  CHECK(outcome_of(c->submit(call("fail", {ipc::Arg::copy(Value::strings_utf8({"no"}))})).value()) ==
        ipc::Outcome::kError);
  // Answered at submit: a function no worker has, a payload over the cap.
  CHECK(outcome_of(c->submit(call("no_such_function")).value()) == ipc::Outcome::kError);
  const std::vector<double> big(1000, 1.0);
  const ipc::Arg over_cap = ipc::Arg::copy(Value::array<Dtype::kF64>(std::span<const double>(big)));
  CHECK(outcome_of(c->submit(call("echo", {over_cap})).value()) == ipc::Outcome::kError);
  // The only worker busy, three tasks fill the queue: a try_submit is
  // answered full, and a submit waits for room until its timeout.
  const ipc::TaskId busy = c->submit(call("sleep", {num(60)})).value();
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the long task to run");
  const std::vector<ipc::TaskId> queued = try_fill(*c, 3);
  auto full = c->try_submit(call("sleep", {num(0.0)}));
  REQUIRE(full.is_ok());
  CHECK_FALSE(full->has_value());
  ipc::TaskOptions soon;
  soon.timeout = 50ms;
  CHECK(outcome_of(c->submit(call("sleep", {num(0.0)}), soon).value()) == ipc::Outcome::kTimeout);
  REQUIRE(c->cancel(queued[0]).is_ok());
  CHECK(outcome_of(queued[0]) == ipc::Outcome::kCancelled);
  // Another client's task takes the room and is forgotten when it leaves.
  {
    auto other = connect(d.socket());
    REQUIRE(other->submit(call("sleep", {num(60)})).is_ok());  // returns once queued
    CHECK(status_of(*c).awaiting == 3);
  }
  eventually([&] { return status_of(*c).awaiting == 2; }, 20s, "the other client's task to be forgotten");
  REQUIRE(c->cancel(busy).is_ok());
  CHECK(outcome_of(busy) == ipc::Outcome::kCancelled);
  CHECK(outcome_of(queued[1]) == ipc::Outcome::kOk);
  CHECK(outcome_of(queued[2]) == ipc::Outcome::kOk);
  CHECK(results == 9);
  CHECK(status_of(*c).completed == results);
}

TEST_CASE("a timeout counts from submission and resolves as timeout", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  ipc::TaskOptions running_for, queued_for;
  running_for.timeout = 500ms;
  queued_for.timeout = 100ms;  // ends while the worker still runs the first
  auto running = c->submit(call("sleep", {num(30)}), running_for).value();
  auto queued = c->submit(call("echo", {num(1)}), queued_for).value();
  auto r2 = c->wait(queued);
  auto r1 = c->wait(running);
  CHECK(r1.outcome() == ipc::Outcome::kTimeout);
  CHECK(r1.message().find("500 ms") != std::string::npos);
  CHECK(r2.outcome() == ipc::Outcome::kTimeout);
  CHECK(r2.message().find("100 ms") != std::string::npos);
  auto next = c->submit(call("echo", {num(3)})).value();
  CHECK(number(c->wait(next)) == 3);
}

TEST_CASE("a dispatcher killed: workers exit and clients get an error, never a hang", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  Process dp({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "2"});
  REQUIRE(dp.read_line(20s));
  auto c = connect(dir.socket());
  wait_workers(*c, 2);
  std::vector<pid_t> workers;
  for (const auto& w : status_of(*c).workers) workers.push_back(static_cast<pid_t>(w.pid));
  auto a = c->submit(call("sleep", {num(30)})).value();
  auto b = c->submit(call("sleep", {num(30)})).value();
  auto q = c->submit(call("echo", {num(1)})).value();
  dp.signal(SIGKILL);
  // The workers share the dispatcher's standard error, so this also waits
  // for them to exit (generously: the machine may be loaded).
  REQUIRE(dp.wait(60s));
  for (ipc::TaskId id : {a, b, q}) {
    auto r = c->wait_for(id, 20s);
    REQUIRE(r);
    CHECK(r->outcome() == ipc::Outcome::kDisconnected);
  }
  CHECK_FALSE(c->submit(call("echo")).is_ok());
  for (pid_t w : workers)
    eventually([&] { return !process_alive(w); }, 10s, "worker " + std::to_string(w) + " to exit");
}

TEST_CASE("results by name: the worker maps arguments, the client owns and releases the result",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  std::vector<double> xs(100000);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i);
  Value v = Value::array<Dtype::kF64>(std::span<const double>(xs));
  auto shared = shm::share(v);
  REQUIRE(shared.is_ok());
  auto sum = c->wait(c->submit(call("sum", {ipc::Arg::ref(shared->name())})).value());
  CHECK(number(sum) == 99999.0 * 100000.0 / 2);
  CHECK(sum.name().empty());  // small: inline
  auto scaled = c->wait(c->submit(call("scale", {ipc::Arg::ref(shared->name()), num(2)})).value());
  REQUIRE(scaled.ok());
  const std::string name = scaled.name();
  REQUIRE_FALSE(name.empty());
  auto n = parse_name(name);
  REQUIRE(n.is_ok());
  CHECK(n->owner == c->owner());  // written for us, under our owner
  CHECK((*scaled.value().array<Dtype::kF64>())[99999] == 199998.0);
  CHECK(exists_region(name));
  { ipc::TaskResult gone = std::move(scaled); }
  CHECK_FALSE(exists_region(name));  // released with its TaskResult
  // A missing name is the task's error, not the connection's.
  auto missing = c->wait(c->submit(call("sum", {ipc::Arg::ref("/kura_1_1")})).value());
  CHECK(missing.outcome() == ipc::Outcome::kError);
  CHECK(missing.message().find("not found") != std::string::npos);
}

TEST_CASE("map collects in order and stops at the first error", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  std::vector<std::vector<ipc::Arg>> inputs;
  for (int i = 0; i < 100; ++i) inputs.push_back({num(i)});
  std::size_t last_done = 0;
  auto m = c->map("echo", inputs, {}, [&](std::size_t done, std::size_t total) {
    CHECK(total == 100);
    CHECK(done >= last_done);
    last_done = done;
  });
  REQUIRE(m.is_ok());
  CHECK_FALSE(m->failed);
  for (int i = 0; i < 100; ++i) CHECK(number(m->results[i]) == i);
  CHECK(last_done == 100);

  // Input 1 fails at once while input 0 runs long on the other worker: the
  // running one and every queued one are cancelled.
  std::vector<std::vector<ipc::Arg>> slow;
  for (int i = 0; i < 40; ++i) slow.push_back({num(i == 1 ? -1 : 30)});
  const auto start = std::chrono::steady_clock::now();
  auto f = c->map("sleep", slow);
  REQUIRE(f.is_ok());
  CHECK(std::chrono::steady_clock::now() - start < 20s);  // nobody waited out a 30 s sleep
  REQUIRE(f->failed);
  CHECK(*f->failed == 1);
  CHECK(f->results[1].outcome() == ipc::Outcome::kError);
  CHECK(f->results[1].message().find("seconds must be") != std::string::npos);
  for (int i = 0; i < 40; ++i)
    if (i != 1) CHECK(f->results[i].outcome() == ipc::Outcome::kCancelled);
  wait_workers(*c, 2);  // both workers free again
}

TEST_CASE("completions reach a program's own event loop: callback and descriptor", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  std::mutex mu;
  std::condition_variable cv;
  std::vector<ipc::TaskId> called;
  c->on_complete([&](ipc::TaskId id) {
    std::lock_guard<std::mutex> lock(mu);
    called.push_back(id);
    cv.notify_all();
  });
  const int fd = c->completion_fd();  // before the task: it counts results from its making on
  REQUIRE(fd >= 0);
  auto id = c->submit(call("echo", {num(5)})).value();
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);
  std::uint64_t count = 0;
  REQUIRE(::read(fd, &count, sizeof count) == sizeof count);
  CHECK(count >= 1);
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, 20s, [&] { return !called.empty(); }));
    CHECK(called.front() == id);
  }
  CHECK(number(c->wait(id)) == 5);
}

TEST_CASE("a program's own functions: Worker::add, and a worker that connects by itself",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);  // no managed workers
  REQUIRE(ipc::Worker::add("triple", [](ipc::TaskContext& ctx) -> Result<ipc::Output> {
            if (ctx.args().empty()) return invalid_argument("triple takes one number");
            auto xs = ctx.args()[0].array<Dtype::kF64>();
            if (!xs || xs->empty()) return invalid_argument("triple takes one number");
            const double tripled = 3 * (*xs)[0];
            return ipc::Output(Value::f64({tripled}));
          }).is_ok());
  CHECK_FALSE(ipc::Worker::add("", nullptr).is_ok());
  Status worker_status = Status(Code::kIo, "not run");
  std::thread worker([&] {
    ipc::WorkerOptions o;
    o.socket_path = d.socket();
    o.log = [](const std::string&) {};
    worker_status = ipc::Worker::run(o);
  });
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  CHECK(number(c->wait(c->submit(call("triple", {num(14)})).value())) == 42);
  d.stop();  // the worker's run() returns when its dispatcher goes away
  worker.join();
  CHECK(worker_status.is_ok());
}

TEST_CASE("the dispatcher prunes orphans when it starts", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  Process put({kKura, "put", "-"});
  put.send(R"({"type": "i32", "values": [1, 2, 3]})");
  auto name = put.read_line(20s);
  REQUIRE(name);
  put.signal(SIGKILL);  // its region and lease are orphans now
  REQUIRE(put.wait(20s));
  REQUIRE(exists_region(*name));
  EmbeddedDispatcher d(dir, 0);
  CHECK(d.wait_log("pruned"));
  CHECK_FALSE(exists_region(*name));
}

TEST_CASE("a task cancelled after it published its result leaves no region", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto before = shm_entries();
  auto id = c->submit(call("publish_then_sleep")).value();
  // Its region appears (written for us), then the task is cancelled.
  eventually([&] { return shm_entries().size() > before.size(); }, 20s, "the task's result region");
  REQUIRE(c->cancel(id).is_ok());
  CHECK(c->wait(id).outcome() == ipc::Outcome::kCancelled);
  eventually([&] { return shm_entries() == before; }, 20s, "the cancelled task's region to be removed");
  wait_workers(*c, 1);
}

TEST_CASE("a forked child that drops its parent's Client and Dispatcher leaves them working",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  ipc::DispatcherOptions o;
  o.socket_path = dir.socket();
  o.workers = 1;
  o.worker_command = ipc::Worker::command(kKura);
  o.log = [](const std::string&) {};
  auto d = ipc::Dispatcher::start(o);
  REQUIRE(d.is_ok());
  auto c = connect(dir.socket());
  wait_workers(*c, 1);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    c.reset();   // must neither hang nor disturb the parent's connection
    d->reset();  // nor stop the parent's dispatcher
    ::_exit(0);
  }
  int status = 0;
  eventually([&] { return ::waitpid(pid, &status, WNOHANG) == pid; }, 20s, "the child to exit");
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto r = c->wait(c->submit(call("echo", {num(9)})).value());
  CHECK(number(r) == 9);
}

TEST_CASE("a worker killed after publishing a result it never reported leaves no region behind",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto pid = static_cast<pid_t>(status_of(*c).workers.at(0).pid);
  // Counted before the submit: the region may come before the test looks.
  const std::size_t before = shm::list().value().size();
  auto id = c->submit(call("publish_then_sleep"));
  REQUIRE(id.is_ok());
  eventually([&] { return shm::list().value().size() > before; }, 20s, "the published result");
  REQUIRE(::kill(pid, SIGKILL) == 0);
  auto r = c->wait_for(*id, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == ipc::Outcome::kWorkerLost);
  CHECK(d.wait_log("wrote but never reported"));
  CHECK(shm::list().value().size() == before);
}

TEST_CASE("a task for an unknown function submitted before any worker ends when the first one connects",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  auto c = connect(d.socket());
  auto lost = c->submit(call("no_such_fn"));
  REQUIRE(lost.is_ok());
  ipc::TaskOptions wait;
  wait.wait_for_worker = true;
  auto waiting = c->submit(call("no_such_fn"), wait);
  REQUIRE(waiting.is_ok());
  eventually([&] { return status_of(*c).awaiting == 2; }, 20s, "both tasks queued");
  Process worker({kKura, "worker", "--connect", d.socket()});
  auto r = c->wait_for(*lost, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == ipc::Outcome::kError);
  CHECK(r->message().find("unknown function \"no_such_fn\"") != std::string::npos);
  // The one that asked to wait still does.
  CHECK_FALSE(c->wait_for(*waiting, 0ms).has_value());
  CHECK(status_of(*c).awaiting == 1);
  (void)c->cancel(*waiting);
}
