// Workers on another host (issue 16), made with namespaces (netns.hpp): a
// worker that sees none of the dispatcher's regions runs a task on an
// inline argument, and one on a name whose bytes it pulls, over a veth
// link; a cut network is noticed by heartbeats on both sides and the worker
// reconnects once it heals; a dispatcher that stops answering is noticed by
// its worker; a worker whose dispatcher was killed tries to reconnect for
// its window, then exits saying so. Where namespaces are refused, the tests
// that can run over loopback do, and say so.
#include <catch2/catch.hpp>
#include <chrono>
#include <csignal>
#include <cstring>
#include <span>
#include <vector>

#include "endpoint_internal.hpp"
#include "ipc_util.hpp"
#include "kura/shm/region.hpp"
#include "netns.hpp"
#include "shm_guard.hpp"
#include "tcp_util.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

using Clock = std::chrono::steady_clock;

// The kura tool as a dispatcher in the host's dispatcher namespace, listening
// on its socket in `dir` and on tcp://HOST:0 for workers, with `extra`
// options (deadlines).
class RemoteDispatcher {
 public:
  RemoteDispatcher(const RemoteHost& host, const SocketDir& dir, const std::vector<std::string>& extra = {}) {
    secret_ = dir.dir() + "/secret";
    auto made = run({kKura, "secret", secret_});
    INFO(made.err);
    REQUIRE(made.code == 0);
    std::vector<std::string> argv{kKura,           "dispatcher", "--socket",
                                  dir.socket(),    "--listen",   "tcp://" + host.dispatcher_host() + ":0",
                                  "--secret-file", secret_};
    argv.insert(argv.end(), extra.begin(), extra.end());
    process_.emplace(host.in_dispatcher(argv));
    REQUIRE(process_->read_line(20s));  // the Unix socket
    auto tcp_line = process_->read_line(20s);
    INFO(process_->err());
    REQUIRE(tcp_line);
    const std::string prefix = "listening on tcp://" + host.dispatcher_host() + ":";
    REQUIRE(tcp_line->rfind(prefix, 0) == 0);
    address_ = tcp_line->substr(std::strlen("listening on "));
  }
  Process& process() { return *process_; }
  const std::string& address() const { return address_; }

  // The worker's command: the kura tool connecting here, with `extra`.
  std::vector<std::string> worker(const RemoteHost& host, const std::vector<std::string>& extra = {}) const {
    std::vector<std::string> argv{kKura, "worker", "--connect", address_, "--secret-file", secret_};
    // Off loopback (the veth link) the stream is TLS: the worker pins the
    // dispatcher's certificate.
    argv.insert(argv.end(), {"--fingerprint", fingerprint_of(secret_)});
    argv.insert(argv.end(), extra.begin(), extra.end());
    return host.in_worker(argv);
  }

 private:
  std::string secret_;
  std::string address_;
  std::optional<Process> process_;
};

double inline_sum(ipc::Client& c) {
  auto id = c.submit(call("sum", {ipc::Arg::copy(Value::f64({1, 2, 3, 4}))}));
  REQUIRE(id.is_ok());
  auto r = c.wait_for(*id, 30s);
  REQUIRE(r.has_value());
  INFO(r->describe());
  REQUIRE(r->ok());
  auto xs = r->value().array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  REQUIRE(xs->size() == 1);
  return (*xs)[0];
}

// What the tests that also run over loopback start with; it says so when
// they do.
struct Setup {
  Setup() {
    if (!host.isolated()) WARN("over loopback with a private region directory: " << host.why_not());
  }
  RemoteHost host;  // destroyed last: what runs in it goes first
  ShmGuard guard;
  SocketDir dir;
};

std::chrono::milliseconds since(Clock::time_point t) {
  return std::chrono::duration_cast<std::chrono::milliseconds>(Clock::now() - t);
}

}  // namespace

TEST_CASE(
    "remote: over the link a worker sums a 64 MiB name pulled once, a sub-tree alone, and sends a result "
    "back "
    "as a name",
    "[ipc][multiprocess][tcp][netns][objects]") {
  Setup setup;
  RemoteDispatcher d(setup.host, setup.dir);
  Process worker(d.worker(setup.host));
  auto c = connect(setup.dir.socket());
  wait_workers(*c, 1);
  auto run_task = [&](ipc::Call task) {
    auto id = c->submit(std::move(task));
    REQUIRE(id.is_ok());
    auto r = c->wait_for(*id, 60s);
    REQUIRE(r.has_value());
    INFO(r->describe() << "\n" << worker.err());
    REQUIRE(r->ok());
    return std::move(*r);
  };
  auto first = [](const ipc::TaskResult& r) {
    auto xs = r.value().array<Dtype::kF64>();
    REQUIRE(xs.is_ok());
    REQUIRE(xs->size() >= 1);
    return (*xs)[0];
  };

  const std::size_t n = std::size_t{8} << 20;  // 64 MiB of f64
  std::vector<double> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i);
  auto big = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
  REQUIRE(big.is_ok());
  CHECK(first(run_task(call("sum", {ipc::Arg::ref(big->name())}))) ==
        static_cast<double>(n - 1) * static_cast<double>(n) / 2);
  auto s1 = status_of(*c);
  CHECK(s1.pulls == 1);
  CHECK(s1.pulled_bytes == big->size());
  // Again: the worker's copy is current, no bytes cross.
  auto counted = run_task(call("length", {ipc::Arg::ref(big->name())}));
  auto length = counted.value().array<Dtype::kU64>();
  REQUIRE(length.is_ok());
  CHECK((*length)[0] == n);
  auto s2 = status_of(*c);
  CHECK(s2.pulls == 2);
  CHECK(s2.pulled_bytes == s1.pulled_bytes);

  // A path-form name: its sub-tree alone crosses, not the 64 MiB beside it.
  auto list = shm::share(Value::list(
      {Value::array<Dtype::kF64>(std::span<const double>(xs)), Value::f64({1, 2, 3, 4, 5, 6, 7, 8, 9})}));
  REQUIRE(list.is_ok());
  CHECK(first(run_task(call("sum", {ipc::Arg::ref(list->name() + "[2]")}))) == 45);
  CHECK(status_of(*c).pulled_bytes - s2.pulled_bytes < 4096);

  // A result written on the worker's host comes back as a region this
  // client maps by name.
  auto r = run_task(call("scale", {ipc::Arg::ref(big->name()), num(2.0)}));
  CHECK_FALSE(r.name().empty());
  auto scaled = r.value().array<Dtype::kF64>();
  REQUIRE(scaled.is_ok());
  CHECK((*scaled)[n - 1] == 2.0 * static_cast<double>(n - 1));
  CHECK(status_of(*c).pushed_bytes >= big->size());
  // The dispatcher made a region of its own for the sub-tree: stopped, it
  // leaves nothing behind.
  d.process().signal(SIGTERM);
  CHECK(d.process().wait(20s) == 0);
}

TEST_CASE(
    "remote: a worker that cannot see the dispatcher's regions runs a task over TCP, and exits when it stops",
    "[ipc][multiprocess][tcp][netns]") {
  Setup setup;
  RemoteHost& host = setup.host;
  SocketDir& dir = setup.dir;
  RemoteDispatcher d(host, dir);
  Process worker(d.worker(host));
  {
    auto c = connect(dir.socket());
    wait_workers(*c, 1);
    auto st = status_of(*c);
    REQUIRE(st.workers.size() == 1);
    CHECK(st.workers[0].pid == 0);  // over TCP: no pid this host can check
    CHECK(inline_sum(*c) == 10);

    // A region shared here is not in the worker's region directory.
    auto shared = shm::share(Value::f64({1, 2}));
    REQUIRE(shared.is_ok());
    auto seen = run(host.in_worker({kKura, "get", shared->name()}));
    CHECK(seen.code != 0);
    CHECK_THAT(seen.err, Catch::Contains("not found") || Catch::Contains("No such file"));
    // Handed that name, the worker pulls its bytes over the link.
    auto id = c->submit(call("sum", {ipc::Arg::ref(shared->name())}));
    REQUIRE(id.is_ok());
    auto r = c->wait_for(*id, 30s);
    REQUIRE(r.has_value());
    INFO(r->describe());
    REQUIRE(r->ok());
    auto xs = r->value().array<Dtype::kF64>();
    REQUIRE(xs.is_ok());
    CHECK((*xs)[0] == 3);
  }
  // The dispatcher says goodbye: the worker exits at once, without trying
  // to reconnect (its window would be a minute).
  d.process().signal(SIGTERM);
  CHECK(d.process().wait(20s) == 0);
  auto code = worker.wait(20s);
  INFO(worker.err());
  REQUIRE(code.has_value());
  CHECK(*code == 0);
  CHECK(worker.err().find("reconnecting") == std::string::npos);
}

TEST_CASE(
    "remote: a cut network is noticed by heartbeats on both sides, and the worker reconnects once it heals",
    "[ipc][multiprocess][tcp][netns]") {
  RemoteHost host;
  if (!host.isolated()) {
    WARN("skipped: cutting the network needs namespaces; " << host.why_not());
    return;
  }
  ShmGuard guard;
  SocketDir dir;
  constexpr auto kDeadline = 1500ms;
  RemoteDispatcher d(host, dir, {"--heartbeat-timeout", std::to_string(kDeadline.count())});
  Process worker(d.worker(host, {"--reconnect-for", "60"}));
  auto c = connect(dir.socket());
  wait_workers(*c, 1);
  CHECK(inline_sum(*c) == 10);

  ipc::TaskOptions once;
  once.retries = 0;
  auto id = c->submit(call("sleep", {num(120)}), once);
  REQUIRE(id.is_ok());
  eventually([&] { return status_of(*c).workers.at(0).state == "busy"; }, 20s, "the worker to run the sleep");

  const auto cut_at = Clock::now();
  host.cut();
  // The dispatcher misses the worker's heartbeats: the task is lost.
  auto r = c->wait_for(*id, 30s);
  REQUIRE(r.has_value());
  INFO(r->describe());
  CHECK(r->outcome() == ipc::Outcome::kWorkerLost);
  // Not before the deadline (less the heartbeat interval, a quarter of it:
  // the last heartbeat came at most that long before the cut), and not
  // much after it.
  CHECK(since(cut_at) >= kDeadline * 3 / 4);
  CHECK(since(cut_at) < kDeadline + 15s);
  INFO(d.process().err());
  CHECK(d.process().wait_err("sent nothing for", 20s));
  // The worker misses the dispatcher's: it cancels the sleep and reconnects.
  INFO(worker.err());
  REQUIRE(worker.wait_err("lost the connection to the dispatcher", 20s));
  CHECK_THAT(worker.err(), Catch::Contains("(timeout: the dispatcher sent nothing for"));
  CHECK(worker.wait_err("the function that runs is cancelled", 20s));

  host.heal();
  REQUIRE(worker.wait_err("reconnected to the dispatcher", 30s));
  wait_workers(*c, 1);
  CHECK(inline_sum(*c) == 10);
  auto st = status_of(*c);
  CHECK(st.cumulative == 2);  // the worker said hello again: a new worker
  CHECK(st.workers_dropped == 1);
}

TEST_CASE("remote: a worker whose dispatcher was killed tries to reconnect for its window, then exits",
          "[ipc][multiprocess][tcp][netns]") {
  Setup setup;
  RemoteHost& host = setup.host;
  SocketDir& dir = setup.dir;
  RemoteDispatcher d(host, dir);
  Process worker(d.worker(host, {"--reconnect-for", "2"}));
  {
    auto c = connect(dir.socket());
    wait_workers(*c, 1);
  }
  d.process().signal(SIGKILL);
  REQUIRE(d.process().wait(20s).has_value());
  const auto killed_at = Clock::now();
  // No goodbye came: the end of the stream is a drop, not a stop.
  INFO(worker.err());
  REQUIRE(worker.wait_err("lost the connection to the dispatcher", 20s));
  CHECK_THAT(worker.err(), Catch::Contains("(peer-closed"));
  auto code = worker.wait(30s);
  REQUIRE(code.has_value());
  CHECK(*code == 1);
  CHECK(since(killed_at) >= 1900ms);
  CHECK_THAT(worker.err(), Catch::Contains("gave up: could not reconnect to the dispatcher at " +
                                           d.address() + " within 2 s"));
  CHECK_THAT(worker.err(), Catch::Contains("attempts; the last:"));
}

TEST_CASE(
    "remote: a dispatcher that stops answering is noticed by its TCP worker, which reconnects once it "
    "answers",
    "[ipc][multiprocess][tcp][netns]") {
  Setup setup;
  RemoteHost& host = setup.host;
  SocketDir& dir = setup.dir;
  RemoteDispatcher d(host, dir, {"--heartbeat-timeout", "1000"});
  Process worker(d.worker(host, {"--reconnect-for", "60"}));
  auto c = connect(dir.socket());
  wait_workers(*c, 1);
  // A stopped process keeps its sockets open and says nothing: to its
  // worker, a network gone silent.
  d.process().signal(SIGSTOP);
  INFO(worker.err());
  const bool noticed = worker.wait_err("(timeout: the dispatcher sent nothing for", 20s);
  d.process().signal(SIGCONT);
  REQUIRE(noticed);
  CHECK_THAT(worker.err(), Catch::Contains("(the deadline is 1000 ms)"));
  REQUIRE(worker.wait_err("reconnected to the dispatcher", 30s));
  wait_workers(*c, 1);
  CHECK(inline_sum(*c) == 10);
  CHECK(status_of(*c).cumulative == 2);
}
