// Tasks sent to wait on a worker behind the one it runs
// (DispatcherOptions::worker_window), with real processes: they are asked
// back for a worker that is idle, a cancel ends one at once without running
// it, a lost worker's are each retried or resolved once, and a worker that
// gives back what it was not asked for is dropped.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "ipc_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// A dispatcher whose one managed worker holds up to 4 tasks, and a client.
struct OneWorker {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d{dir, 1, [](ipc::DispatcherOptions& o) { o.worker_window = 4; }};
  std::unique_ptr<ipc::Client> c = connect(d.socket());
  OneWorker() { wait_workers(*c, 1); }
};

// Submits `c` and returns its id.
ipc::TaskId submit(ipc::Client& client, const ipc::Call& c, const ipc::TaskOptions& o = {}) {
  auto id = client.submit(c, o);
  INFO((id.is_ok() ? std::string() : id.status().to_string()));
  REQUIRE(id.is_ok());
  return *id;
}

ipc::TaskResult result_of(ipc::Client& c, ipc::TaskId id) {
  auto r = c.wait_for(id, 30s);
  REQUIRE(r.has_value());
  return std::move(*r);
}

// Waits until the one worker runs one task and `n` wait behind it.
void wait_behind(ipc::Client& c, std::uint64_t n) {
  eventually(
      [&] {
        auto s = status_of(c);
        return s.executing == 1 && s.waiting_on_workers == n && s.awaiting == 0;
      },
      20s, std::to_string(n) + " tasks to wait on the worker behind a running one");
}

}  // namespace

TEST_CASE("a task waiting on a worker behind a long one is taken back for a worker that is idle",
          "[ipc][multiprocess]") {
  OneWorker one;
  auto& c = one.c;
  const ipc::TaskId long_task = submit(*c, call("sleep", {num(60)}));
  const ipc::TaskId behind = submit(*c, call("echo", {num(7)}));
  wait_behind(*c, 1);
  // Nothing else can run it while the long task runs.
  CHECK_FALSE(c->wait_for(behind, 200ms).has_value());
  Process second({kKura, "worker", "--connect", one.d.socket()});
  ipc::TaskResult r = result_of(*c, behind);
  CHECK(number(r) == 7);
  auto s = status_of(*c);
  CHECK(s.executing == 1);  // the long task still runs
  CHECK(s.waiting_on_workers == 0);
  auto row = std::find_if(s.workers.begin(), s.workers.end(),
                          [&](const ipc::WorkerStatus& w) { return w.pid == second.pid(); });
  REQUIRE(row != s.workers.end());
  CHECK(row->tasks_done == 1);
  REQUIRE(c->cancel(long_task).is_ok());
  CHECK(result_of(*c, long_task).outcome() == ipc::Outcome::kCancelled);
  CHECK(number(result_of(*c, submit(*c, call("echo", {num(8)})))) == 8);
}

TEST_CASE("a task cancelled while it waits on a worker ends at once and never runs", "[ipc][multiprocess]") {
  OneWorker one;
  auto& c = one.c;
  const ipc::TaskId long_task = submit(*c, call("sleep", {num(60)}));
  const ipc::TaskId first = submit(*c, call("echo", {num(1)}));
  const ipc::TaskId second = submit(*c, call("echo", {num(2)}));
  wait_behind(*c, 2);
  REQUIRE(c->cancel(first).is_ok());
  CHECK(result_of(*c, first).outcome() == ipc::Outcome::kCancelled);
  wait_behind(*c, 1);
  REQUIRE(c->cancel(long_task).is_ok());
  CHECK(result_of(*c, long_task).outcome() == ipc::Outcome::kCancelled);
  CHECK(number(result_of(*c, second)) == 2);
  // The worker ran the long task and the second; the cancelled one is not
  // counted as done.
  eventually([&] { return status_of(*c).workers.at(0).tasks_done == 2; }, 20s, "2 tasks done on the worker");
  CHECK(status_of(*c).completed == 3);
}

TEST_CASE("a worker lost with tasks waiting on it: each is retried or ends worker-lost, once",
          "[ipc][multiprocess]") {
  OneWorker one;
  auto& c = one.c;
  const std::int64_t pid = status_of(*c).workers.at(0).pid;
  const ipc::TaskId long_task = submit(*c, call("sleep", {num(60)}));
  ipc::TaskOptions again;
  again.retries = 1;
  const ipc::TaskId retried = submit(*c, call("echo", {num(3)}), again);
  const ipc::TaskId lost = submit(*c, call("echo", {num(4)}));
  wait_behind(*c, 2);
  REQUIRE(::kill(static_cast<pid_t>(pid), SIGKILL) == 0);
  ipc::TaskResult running = result_of(*c, long_task);
  CHECK(running.outcome() == ipc::Outcome::kWorkerLost);
  CHECK_THAT(running.describe(), Catch::Contains("while running the task"));
  ipc::TaskResult waited = result_of(*c, lost);
  CHECK(waited.outcome() == ipc::Outcome::kWorkerLost);
  CHECK_THAT(waited.describe(), Catch::Contains("waited behind another"));
  // The managed replacement runs the one with a retry.
  CHECK(number(result_of(*c, retried)) == 3);
  auto s = status_of(*c);
  CHECK(s.awaiting == 0);
  CHECK(s.executing == 0);
  CHECK(s.waiting_on_workers == 0);
  CHECK(s.completed == 3);
}

TEST_CASE("a worker that gives back a task it was not asked for is dropped", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0, [](ipc::DispatcherOptions& o) { o.worker_window = 4; });
  auto c = connect(d.socket());
  RawPeer fake(d.socket());
  fake.hello_worker({"fake"});
  REQUIRE(fake.next_of(ipc::FrameType::kWelcome).has_value());
  const ipc::TaskId id = submit(*c, call("fake"));
  auto task = fake.next_of(ipc::FrameType::kTask);
  REQUIRE(task.has_value());
  fake.frame(ipc::FrameType::kDone, task->header.id, Bytes(), ipc::kFlagRevoked);
  CHECK(fake.closed_by_peer());
  CHECK(d.wait_log("done: gave back a task it was not asked for"));
  // The task was given to a worker that is gone: it ends worker-lost.
  CHECK(result_of(*c, id).outcome() == ipc::Outcome::kWorkerLost);
}
