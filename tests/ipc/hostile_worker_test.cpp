// What a worker (or a process posing as one) cannot make the dispatcher do,
// with real processes: grow its table of function names without bound,
// remove a region that is not its task's owner's, claim a managed worker's
// start token, or keep running a task it was told to stop.
#include <signal.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <thread>

#include "ipc_util.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// A region under the kept owner (0): no task's owner, alive until removed.
struct KeptRegion {
  KeptRegion() {
    shm::ShareOptions o;
    o.keep = true;
    auto s = shm::share(Value::f64({1, 2, 3}), o);
    REQUIRE(s.is_ok());
    auto kept = s->keep();
    REQUIRE(kept.is_ok());
    name = *kept;
  }
  ~KeptRegion() { (void)shm::remove(name); }
  bool exists() const { return shm::map(name).is_ok(); }
  std::string name;
};

Bytes done_naming(const std::string& region) {
  auto r = ipc::detail::encode_result(ipc::Outcome::kOk, "", region, nullptr);
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

// The start token in the environment of process `pid`, or 0.
std::uint64_t token_of(pid_t pid) {
  std::ifstream in("/proc/" + std::to_string(pid) + "/environ", std::ios::binary);
  const std::string env((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  const std::string key = std::string(ipc::detail::kWorkerTokenEnv) + "=";
  for (std::size_t at = 0; at < env.size();) {
    const std::size_t end = env.find('\0', at);
    const std::string var = env.substr(at, end == std::string::npos ? std::string::npos : end - at);
    if (var.rfind(key, 0) == 0) return std::stoull(var.substr(key.size()));
    if (end == std::string::npos) break;
    at = end + 1;
  }
  return 0;
}

}  // namespace

TEST_CASE("function names: unknown ones cost nothing, waited-for ones and announced ones are capped",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);

  // Thousands of names no worker has, not waited for: each an error, none kept.
  for (int i = 0; i < 2000; ++i) {
    auto id = c->submit(call("nobody_has_" + std::to_string(i)));
    REQUIRE(id.is_ok());
    auto r = c->wait_for(*id, 20s);
    REQUIRE(r.has_value());
    REQUIRE(r->outcome() == ipc::Outcome::kError);
    REQUIRE(r->message().find("unknown function") != std::string::npos);
  }

  // Names waited for are kept, up to the cap: then a task for one more is
  // an error that says so, and the tasks already waiting are untouched.
  ipc::TaskOptions wait;
  wait.wait_for_worker = true;
  std::vector<ipc::TaskId> waiting;
  for (std::size_t i = 0; i <= ipc::detail::kMaxKnownFunctions; ++i) {
    auto id = c->submit(call("later_" + std::to_string(i)), wait);
    REQUIRE(id.is_ok());
    waiting.push_back(*id);
  }
  // The workers' names count too, so the last is past the cap; results
  // come in order, so every earlier refusal is here by then.
  auto last = c->wait_for(waiting.back(), 20s);
  REQUIRE(last.has_value());
  INFO(last->describe());
  CHECK(last->outcome() == ipc::Outcome::kError);
  CHECK(last->message().find("the most it keeps") != std::string::npos);
  std::size_t refused = 1;
  for (ipc::TaskId id : waiting)
    if (id != waiting.back() && c->wait_for(id, 0ms).has_value()) ++refused;
  CHECK(refused < 64);
  CHECK(status_of(*c).awaiting == waiting.size() - refused);

  // A worker announcing new names past the cap is refused; the one there
  // goes on serving.
  RawPeer fake(d.socket());
  fake.hello_worker({"brand_new_function"});
  auto answer = fake.read_frame();
  REQUIRE(answer.has_value());
  CHECK(answer->header.type == ipc::FrameType::kRefused);
  CHECK(d.wait_log("new function names would take the dispatcher past"));
  auto r = c->wait_for(c->submit(call("echo", {num(5)})).value(), 20s);
  REQUIRE(r.has_value());
  CHECK(r->ok());
  for (ipc::TaskId id : waiting) (void)c->cancel(id);
}

TEST_CASE("a worker's done cannot make the dispatcher remove a region of another owner",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  KeptRegion kept;
  auto c = connect(d.socket());

  SECTION("the result of a task that was cancelled while it ran") {
    RawPeer fake(d.socket());
    fake.hello_worker({"fake"});
    REQUIRE(fake.next_of(ipc::FrameType::kWelcome).has_value());
    auto id = c->submit(call("fake"));
    REQUIRE(id.is_ok());
    auto task = fake.next_of(ipc::FrameType::kTask);
    REQUIRE(task.has_value());
    REQUIRE(c->cancel(*id).is_ok());
    auto r = c->wait_for(*id, 20s);
    REQUIRE(r.has_value());
    CHECK(r->outcome() == ipc::Outcome::kCancelled);
    REQUIRE(fake.next_of(ipc::FrameType::kCancel).has_value());
    fake.frame(ipc::FrameType::kDone, task->header.id, done_naming(kept.name));
    CHECK(fake.closed_by_peer());
    CHECK(d.wait_log("done: a result region of another owner"));
  }
  SECTION("the result of a set-up call") {
    RawPeer fake(d.socket());
    fake.hello_worker({"fake"});
    REQUIRE(fake.next_of(ipc::FrameType::kWelcome).has_value());
    Status everywhere;
    std::thread caller([&] { everywhere = c->everywhere(call("fake")); });
    auto task = fake.next_of(ipc::FrameType::kTask);
    REQUIRE(task.has_value());
    CHECK((task->header.flags & ipc::kFlagSetup) != 0);
    fake.frame(ipc::FrameType::kDone, task->header.id, done_naming(kept.name), ipc::kFlagSetup);
    CHECK(fake.closed_by_peer());
    caller.join();
    INFO(everywhere.to_string());
    CHECK_FALSE(everywhere.is_ok());
  }
  CHECK(kept.exists());
}

TEST_CASE("a process that sends a managed worker's start token does not become that worker",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, [](ipc::DispatcherOptions& o) {
    o.heartbeat_ms = 200;
    o.heartbeat_timeout_ms = 2000;
  });
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const pid_t real = static_cast<pid_t>(status_of(*c).workers.at(0).pid);
  const std::uint64_t token = token_of(real);
  REQUIRE(token != 0);

  // The impostor says hello with the stolen token, then falls silent: it is
  // dropped for its missed heartbeats, which must not kill the real worker.
  RawPeer impostor(d.socket());
  impostor.hello_worker({"echo"}, token);
  REQUIRE(impostor.next_of(ipc::FrameType::kWelcome).has_value());
  CHECK(d.wait_log("sent a start token that is not its own"));
  CHECK(impostor.closed_by_peer());
  CHECK(d.wait_log("its heartbeat deadline is 2000 ms): dropped"));
  CHECK(process_alive(real));
  eventually([&] { return status_of(*c).workers.size() == 1; }, 20s, "the impostor gone from the status");
  auto s = status_of(*c);
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].pid == real);
  CHECK(s.workers_started == 1);
}

TEST_CASE("a worker that runs on past a cancel is dropped after the grace, and replaced",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, [](ipc::DispatcherOptions& o) { o.cancel_grace_ms = 300; },
                       {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const pid_t first = static_cast<pid_t>(status_of(*c).workers.at(0).pid);

  // hold_lease_until ignores cancellation (a function busy computing). It
  // is running once it made its result region (a cancel that comes before
  // the function starts is honoured without it); counted from before the
  // submit, since the region may come before the test looks.
  const std::size_t before = shm_entries().size();
  auto id =
      c->submit(call("hold_lease_until", {ipc::Arg::copy(Value::strings_utf8({dir.dir() + "/never"}))}));
  REQUIRE(id.is_ok());
  eventually([&] { return shm_entries().size() > before; }, 20s, "the function running");
  REQUIRE(c->cancel(*id).is_ok());
  auto r = c->wait_for(*id, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == ipc::Outcome::kCancelled);
  INFO(d.log());
  CHECK(d.wait_log("still runs a task it was told to stop"));
  eventually([&] { return !process_alive(first); }, 20s, "the worker that ran on killed");
  wait_workers(*c, 1);
  auto s = status_of(*c);
  CHECK(s.workers_dropped == 1);
  CHECK(s.workers_started == 2);
  auto again = c->wait_for(c->submit(call("echo", {num(2)})).value(), 20s);
  REQUIRE(again.has_value());
  CHECK(again->ok());
}
