// A worker whose functions run on the thread that called Worker::run (as an
// R worker's run on R's main thread), with a cancel signal of the host's
// choosing: the loop, on a thread of its own, keeps heartbeats and cancels
// going while a function runs.
#include <signal.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <thread>

#include "ipc_util.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

std::atomic<long> g_signalled_tid{0};  // the thread the host's cancel handler ran on

long this_tid() {
  return static_cast<long>(::syscall(SYS_gettid));
}

void on_host_cancel(int) {
  g_signalled_tid.store(this_tid());
}

}  // namespace

TEST_CASE("a worker may run its functions on the calling thread, cancelled by the host's own signal",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  // Heartbeats due every 50 ms and missed after 400: a function that ran on
  // the loop's thread would get its worker dropped while it blocks.
  EmbeddedDispatcher d(dir, 0, [](ipc::DispatcherOptions& o) {
    o.heartbeat_ms = 50;
    o.heartbeat_timeout_ms = 400;
  });

  struct sigaction sa {
  }, old{};
  sa.sa_handler = on_host_cancel;
  sigemptyset(&sa.sa_mask);
  REQUIRE(::sigaction(SIGUSR2, &sa, &old) == 0);
  g_signalled_tid.store(0);

  std::atomic<long> host_tid{0};
  std::atomic<long> ran_on{0};
  std::atomic<bool> blocking{false};
  REQUIRE(ipc::Worker::add("host.where", [&](ipc::TaskContext& ctx) -> Result<ipc::Output> {
            ran_on.store(this_tid());
            std::vector<std::string_view> names;
            for (std::size_t i = 0; i < ctx.args().size(); ++i) names.push_back(ctx.arg_name(i));
            std::vector<String> out;
            for (auto n : names) out.push_back(String{std::string(n), Encoding::kUtf8, false});
            return ipc::Output(Value::strings_of(std::move(out)));
          }).is_ok());
  // Blocks, without polling its token, until the host's handler has run on
  // this thread (or 60 s pass: the test then fails on the outcome).
  REQUIRE(ipc::Worker::add("host.block", [&](ipc::TaskContext&) -> Result<ipc::Output> {
            blocking.store(true);
            const auto until = std::chrono::steady_clock::now() + 60s;
            while (g_signalled_tid.load() == 0 && std::chrono::steady_clock::now() < until) ::pause();
            blocking.store(false);
            return ipc::Output(Value::null());
          }).is_ok());

  Status worker_status = Status(Code::kIo, "not run");
  std::thread host([&] {
    host_tid.store(this_tid());
    ipc::WorkerOptions o;
    o.socket_path = d.socket();
    o.run_on_calling_thread = true;
    o.cancel_signal = SIGUSR2;
    o.log = [](const std::string&) {};
    worker_status = ipc::Worker::run(o);
  });

  auto c = connect(d.socket());
  wait_workers(*c, 1);

  auto arg = shm::share(Value::f64({1, 2, 3}));
  REQUIRE(arg.is_ok());
  auto r = c->wait(c->submit(call("host.where", {ipc::Arg::ref(arg->name()), num(2)})).value());
  REQUIRE(r.ok());
  CHECK(ran_on.load() == host_tid.load());
  REQUIRE(r.value().length() == 2);
  CHECK(r.value().string(0).value().bytes == arg->name());
  CHECK(r.value().string(1).value().bytes.empty());

  auto id = c->submit(call("host.block"));
  REQUIRE(id.is_ok());
  eventually([&] { return blocking.load(); }, 20s, "host.block to start");
  // Eight heartbeat deadlines: the loop answers for the blocked thread.
  CHECK_FALSE(c->wait_for(*id, 3200ms).has_value());
  CHECK(status_of(*c).workers_dropped == 0);
  REQUIRE(c->cancel(*id).is_ok());
  auto cancelled = c->wait_for(*id, 20s);
  REQUIRE(cancelled.has_value());
  CHECK(cancelled->outcome() == ipc::Outcome::kCancelled);
  // The client hears of the cancel at once; the worker's signal follows.
  eventually([&] { return g_signalled_tid.load() != 0; }, 20s, "the host's cancel handler to run");
  CHECK(g_signalled_tid.load() == host_tid.load());

  // The same worker goes on.
  auto again = c->wait(c->submit(call("host.where")).value());
  CHECK(again.ok());
  auto st = status_of(*c);
  CHECK(st.workers_dropped == 0);
  REQUIRE(st.workers.size() == 1);
  CHECK(st.workers[0].tasks_done == 3);

  c.reset();
  d.stop();  // run() returns on the calling thread when its dispatcher goes away
  host.join();
  CHECK(worker_status.is_ok());
  ::sigaction(SIGUSR2, &old, nullptr);
}
