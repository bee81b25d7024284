// Tasks sent to wait on a worker behind the one it runs
// (DispatcherOptions::worker_window), with real processes: they are asked
// back for a worker that is idle (and a late answer does not block the
// next), a cancel ends one at once without running it and never takes the
// running task's cancel, a lost worker's are each retried or resolved once
// and its unreported result removed, a worker that gives back what it was
// not asked for is dropped, and a window over the bound is refused.
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/un.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "ipc_util.hpp"
#include "kura/ipc/worker.hpp"
#include "message_internal.hpp"
#include "shm_guard.hpp"
#include "transfer_internal.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

std::atomic<bool> g_host_signalled{false};  // the host's cancel handler ran

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

TEST_CASE("a worker lost after it reported one task and published the next's result leaves no region behind",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0, [](ipc::DispatcherOptions& o) { o.worker_window = 2; });
  auto c = connect(d.socket());
  // A hand-driven worker in this process: what it writes is this client's,
  // by this pid, as a worker's result is.
  std::optional<RawPeer> fake;
  fake.emplace(d.socket());
  fake->hello_worker({"fake"});
  REQUIRE(fake->next_of(ipc::FrameType::kWelcome).has_value());
  const ipc::TaskId first = submit(*c, call("fake"));
  const ipc::TaskId second = submit(*c, call("fake"));
  auto task1 = fake->next_of(ipc::FrameType::kTask);
  REQUIRE(task1.has_value());
  auto task2 = fake->next_of(ipc::FrameType::kTask);
  REQUIRE(task2.has_value());
  // The first ended and the second started at once on the worker: its
  // result is published before the dispatcher reads the first's report.
  auto published = shm::share(Value::array<Dtype::kF64>(std::span<const double>(std::vector<double>{1, 2})));
  REQUIRE(published.is_ok());
  const std::string name = published->name();
  auto done = ipc::detail::encode_result(ipc::Outcome::kOk, "", "", nullptr);
  REQUIRE(done.is_ok());
  fake->frame(ipc::FrameType::kDone, task1->header.id, *done);
  CHECK(result_of(*c, first).ok());
  // The worker dies before it reports the second.
  fake.reset();
  CHECK(result_of(*c, second).outcome() == ipc::Outcome::kWorkerLost);
  CHECK(d.wait_log("wrote but never reported"));
  auto regions = shm::list();
  REQUIRE(regions.is_ok());
  CHECK(std::none_of(regions->begin(), regions->end(),
                     [&](const shm::RegionInfo& r) { return r.name == name; }));
}

TEST_CASE("a cancel of a task a worker no longer holds does not undo the cancel of the task it runs",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  // A hand-driven dispatcher and a worker in this process with a cancel
  // signal of the host's choosing (as an R worker's): tasks reach it while
  // one runs, so a cancel of one that ended can follow the cancel of the one
  // that runs.
  struct sigaction sa {
  }, old{};
  sa.sa_handler = [](int) { g_host_signalled.store(true); };
  sigemptyset(&sa.sa_mask);
  REQUIRE(::sigaction(SIGUSR2, &sa, &old) == 0);
  g_host_signalled.store(false);
  std::atomic<bool> started{false};
  REQUIRE(ipc::Worker::add("window.quick", [](ipc::TaskContext&) -> Result<ipc::Output> {
            return ipc::Output(Value::null());
          }).is_ok());
  // Looks at its cancel once told to (or 20 s pass).
  std::atomic<bool> look{false};
  REQUIRE(ipc::Worker::add("window.look", [&](ipc::TaskContext& ctx) -> Result<ipc::Output> {
            started.store(true);
            const auto until = std::chrono::steady_clock::now() + 20s;
            while (!look.load() && std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(1ms);
            if (!ctx.cancelled()) return invalid_argument("never saw its cancel");
            return ipc::Output(Value::null());
          }).is_ok());

  const int listener = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(listener >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  REQUIRE(dir.socket().size() < sizeof addr.sun_path);
  std::memcpy(addr.sun_path, dir.socket().data(), dir.socket().size());
  REQUIRE(::bind(listener, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(listener, 1) == 0);
  Status worker_status = Status(Code::kIo, "not run");
  std::thread host([&] {
    ipc::WorkerOptions o;
    o.socket_path = dir.socket();
    o.cancel_signal = SIGUSR2;
    o.log = [](const std::string&) {};
    worker_status = ipc::Worker::run(o);
  });
  {
    pollfd p{listener, POLLIN, 0};
    REQUIRE(::poll(&p, 1, 20000) == 1);
    RawPeer d(RawPeer::Adopt{}, ::accept4(listener, nullptr, nullptr, SOCK_CLOEXEC));
    ::close(listener);
    REQUIRE(d.next_of(ipc::FrameType::kHello).has_value());
    ipc::detail::Welcome welcome;
    welcome.frame_limit = 1u << 24;
    welcome.pid = ::getpid();
    welcome.regions = ipc::detail::region_home();
    auto w = ipc::detail::encode_welcome(welcome);
    REQUIRE(w.is_ok());
    d.frame(ipc::FrameType::kWelcome, 0, *w);
    const std::uint64_t owner = shm::process_owner().value();
    auto quick = ipc::detail::encode_submit(call("window.quick"), owner, {});
    auto poll = ipc::detail::encode_submit(call("window.look"), owner, {});
    REQUIRE(quick.is_ok());
    REQUIRE(poll.is_ok());
    d.frame(ipc::FrameType::kTask, 1, *quick);
    d.frame(ipc::FrameType::kTask, 2, *poll);
    auto first = d.next_of(ipc::FrameType::kDone);
    REQUIRE(first.has_value());
    CHECK(first->header.id == 1);
    eventually([&] { return started.load(); }, 20s, "the second task to run");
    d.frame(ipc::FrameType::kCancel, 2, Bytes());
    eventually([&] { return g_host_signalled.load(); }, 20s, "the host's cancel handler to run");
    // A cancel of the first that crossed its report.
    d.frame(ipc::FrameType::kCancel, 1, Bytes());
    // A third, cancelled while it waits: its answer tells that the worker
    // read the frames before.
    d.frame(ipc::FrameType::kTask, 3, *quick);
    d.frame(ipc::FrameType::kCancel, 3, Bytes());
    auto third = d.next_of(ipc::FrameType::kDone);
    REQUIRE(third.has_value());
    CHECK(third->header.id == 3);
    look.store(true);
    auto second = d.next_of(ipc::FrameType::kDone, 15000);
    REQUIRE(second.has_value());
    CHECK(second->header.id == 2);
    auto r = ipc::detail::decode_result(std::make_shared<const Bytes>(std::move(second->payload)));
    REQUIRE(r.is_ok());
    INFO(r->message);
    CHECK(r->outcome == ipc::Outcome::kCancelled);
  }
  host.join();  // its dispatcher went away
  ::sigaction(SIGUSR2, &old, nullptr);
}

TEST_CASE("a task asked back too late and started does not keep other waiting tasks from an idle worker",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0, [](ipc::DispatcherOptions& o) { o.worker_window = 2; });
  auto c = connect(d.socket());
  auto done = ipc::detail::encode_result(ipc::Outcome::kOk, "", "", nullptr);
  REQUIRE(done.is_ok());
  // Hand-driven workers: x holds two tasks, y one (no kFeatureQueue).
  RawPeer x(d.socket());
  x.hello_worker({"fake"});
  REQUIRE(x.next_of(ipc::FrameType::kWelcome).has_value());
  const ipc::TaskId a = submit(*c, call("fake"));
  submit(*c, call("fake"));
  auto task_a = x.next_of(ipc::FrameType::kTask);
  auto task_b = x.next_of(ipc::FrameType::kTask);
  REQUIRE(task_a.has_value());
  REQUIRE(task_b.has_value());
  RawPeer y(d.socket());
  {
    ipc::detail::Hello h{"worker", ::getpid(), 0, 0, {"fake"}};
    h.features &= ~std::uint64_t{ipc::detail::kFeatureQueue};
    auto bytes = ipc::detail::encode_hello(h);
    REQUIRE(bytes.is_ok());
    y.frame(ipc::FrameType::kHello, 0, *bytes);
  }
  REQUIRE(y.next_of(ipc::FrameType::kWelcome).has_value());
  // y is idle: the second task is asked back, but x has started it already
  // (it ignores the revoke) and reports the first.
  auto revoke = x.next_of(ipc::FrameType::kRevoke);
  REQUIRE(revoke.has_value());
  CHECK(revoke->header.id == task_b->header.id);
  x.frame(ipc::FrameType::kDone, task_a->header.id, *done);
  CHECK(result_of(*c, a).ok());
  // y takes the next; the one after waits on x behind the second.
  submit(*c, call("fake"));
  REQUIRE(y.next_of(ipc::FrameType::kTask).has_value());
  submit(*c, call("fake"));
  auto task_d = x.next_of(ipc::FrameType::kTask);
  REQUIRE(task_d.has_value());
  // A worker comes idle: the task waiting on x is asked back for it.
  RawPeer z(d.socket());
  z.hello_worker({"fake"});
  REQUIRE(z.next_of(ipc::FrameType::kWelcome).has_value());
  auto second_revoke = x.next_of(ipc::FrameType::kRevoke, 10000);
  REQUIRE(second_revoke.has_value());
  CHECK(second_revoke->header.id == task_d->header.id);
}

TEST_CASE("a worker window over the most a dispatcher takes is refused at start", "[ipc]") {
  SocketDir dir;
  ipc::DispatcherOptions o;
  o.socket_path = dir.socket();
  // Slots for each worker are made room for as it connects.
  o.worker_window = std::uint32_t{1} << 31;
  auto d = ipc::Dispatcher::start(o);
  REQUIRE_FALSE(d.is_ok());
  CHECK(d.status().code() == Code::kInvalidArgument);
  CHECK_THAT(d.status().message(), Catch::Contains("worker_window"));
  o.worker_window = ipc::kMaxWorkerWindow;
  auto most = ipc::Dispatcher::start(o);
  CHECK(most.is_ok());
}
