// Protocol versions, routing tasks by the functions workers announce,
// bounded everywhere() and retries, and cancelling by frame, with real
// processes.
#include <signal.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "ipc_util.hpp"
#include "kura/core/builder.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

std::unique_ptr<Process> start_worker(const std::string& socket, bool plugin) {
  std::vector<std::string> argv = {kKura, "worker", "--connect", socket};
  if (plugin) argv.insert(argv.end(), {"--plugin", KURA_TEST_PLUGIN});
  return std::make_unique<Process>(argv);
}

const ipc::WorkerStatus& row_of(const ipc::DispatcherStatus& s, pid_t pid) {
  auto it = std::find_if(s.workers.begin(), s.workers.end(), [&](const auto& w) { return w.pid == pid; });
  REQUIRE(it != s.workers.end());
  return *it;
}

bool has_function(const ipc::WorkerStatus& w, const std::string& fn) {
  return std::find(w.functions.begin(), w.functions.end(), fn) != w.functions.end();
}

ipc::TaskResult run(ipc::Client& c, const ipc::Call& call, const ipc::TaskOptions& o = {}) {
  auto id = c.submit(call, o);
  INFO((id.is_ok() ? std::string() : id.status().to_string()));
  REQUIRE(id.is_ok());
  auto r = c.wait_for(*id, 30s);
  REQUIRE(r.has_value());
  return std::move(*r);
}

ipc::Arg text(const std::string& s) {
  return ipc::Arg::copy(Value::strings_utf8({s}));
}

std::size_t count_of(const std::string& text, const std::string& what) {
  std::size_t n = 0;
  for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1)) ++n;
  return n;
}

}  // namespace

TEST_CASE("a peer of protocol 1 is refused with both versions named", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  RawPeer old(d.socket());
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  // kura 0.1's hello: role, pid and owner, nothing else.
  Value hello = Value::list({Value::strings_utf8({"client"}), Value::array<Dtype::kI64>({::getpid()}),
                             Value::array<Dtype::kU64>({*owner})})
                    .with_names({String{"role"}, String{"pid"}, String{"owner"}});
  auto image = build(hello, Stamp{}, false);
  REQUIRE(image.is_ok());
  old.frame(ipc::FrameType::kHello, 0, *image);

  auto f = old.read_frame();
  REQUIRE(f.has_value());
  REQUIRE(f->header.type == ipc::FrameType::kRefused);
  auto why = ipc::detail::decode_refused(f->payload);
  REQUIRE(why.is_ok());
  INFO(*why);
  CHECK(why->find("protocol 1") != std::string::npos);
  const std::string ours = "this side speaks " + std::to_string(ipc::kProtocolVersion);
  CHECK(why->find(ours) != std::string::npos);
  CHECK(old.closed_by_peer());
  CHECK(d.wait_log("speaks kura protocol 1, " + ours));
  // A client of this version is served.
  auto c = connect(d.socket());
  CHECK(status_of(*c).connections == 1);
}

TEST_CASE("tasks go to the workers that have their function", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  auto c = connect(d.socket());
  auto plain = start_worker(d.socket(), false);
  wait_workers(*c, 1);
  CHECK_FALSE(has_function(row_of(status_of(*c), plain->pid()), "get_tag"));

  // Nobody has get_tag yet: an error at once, unless the task waits.
  auto unknown = run(*c, call("get_tag"));
  CHECK(unknown.outcome() == ipc::Outcome::kError);
  CHECK(unknown.message().find("unknown function") != std::string::npos);
  ipc::TaskOptions wait;
  wait.wait_for_worker = true;
  auto waiting = c->submit(call("get_tag"), wait);
  REQUIRE(waiting.is_ok());
  eventually([&] { return status_of(*c).unroutable == 1; }, 20s, "one unroutable task");
  ipc::TaskOptions wait_briefly = wait;
  wait_briefly.timeout = 300ms;
  CHECK(run(*c, call("get_tag"), wait_briefly).outcome() == ipc::Outcome::kTimeout);
  CHECK(c->wait_for(*waiting, 0ms) == std::nullopt);

  // A worker with the function connects: the waiting task runs there.
  auto tagged = start_worker(d.socket(), true);
  CHECK(tag_of(c->wait(*waiting)).empty());
  wait_workers(*c, 2);
  CHECK(status_of(*c).unroutable == 0);

  for (int i = 0; i < 10; ++i) {
    REQUIRE(run(*c, call("set_tag", {text("t" + std::to_string(i))})).ok());
    CHECK(tag_of(run(*c, call("get_tag"))) == "t" + std::to_string(i));
  }
  auto s = status_of(*c);
  const auto& p = row_of(s, plain->pid());
  const auto& t = row_of(s, tagged->pid());
  CHECK(p.tasks_done == 0);
  CHECK(t.tasks_done == 21);
  CHECK(has_function(t, "get_tag"));
  CHECK(has_function(t, "set_tag"));
  CHECK(has_function(t, "echo"));
  CHECK(has_function(p, "echo"));
  CHECK_FALSE(has_function(p, "set_tag"));
  CHECK(std::is_sorted(t.functions.begin(), t.functions.end()));
}

TEST_CASE("everywhere is bounded, and forgotten when its client leaves", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0, [](ipc::DispatcherOptions& o) { o.max_setup_calls = 3; });
  auto b = connect(d.socket());
  {
    auto a = connect(d.socket());
    for (int i = 0; i < 3; ++i) REQUIRE(a->everywhere(call("set_tag", {text("a")})).is_ok());
    Status fourth = a->everywhere(call("set_tag", {text("a")}));
    REQUIRE_FALSE(fourth.is_ok());
    INFO(fourth.to_string());
    CHECK(fourth.message().find("the most it keeps is 3 calls") != std::string::npos);

    // While A is connected, a worker that joins runs A's calls first.
    auto first = start_worker(d.socket(), true);
    wait_workers(*b, 1);
    CHECK(tag_of(run(*b, call("get_tag"))) == "a");
    first->signal(SIGKILL);
    REQUIRE(first->wait(20s).has_value());
    eventually([&] { return status_of(*b).workers.empty(); }, 20s, "the first worker gone");
  }
  eventually([&] { return status_of(*b).connections == 1; }, 20s, "client A gone");
  auto later = start_worker(d.socket(), true);
  wait_workers(*b, 1);
  CHECK(tag_of(run(*b, call("get_tag"))) == "");
  // The calls A made no longer count against the bound.
  CHECK(b->everywhere(call("set_tag", {text("b")})).is_ok());
  CHECK(tag_of(run(*b, call("get_tag"))) == "b");
}

TEST_CASE("retries are capped, and workers killed by a task are restarted with back-off",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);

  ipc::TaskOptions too_many;
  too_many.retries = ipc::kMaxRetries + 1;
  const std::uint64_t sent = c->bytes_sent();
  auto refused = c->submit(call("echo", {num(1)}), too_many);
  REQUIRE_FALSE(refused.is_ok());
  CHECK(refused.status().code() == Code::kInvalidArgument);
  CHECK(c->bytes_sent() == sent);

  ipc::TaskOptions three;
  three.retries = 3;
  auto poison = run(*c, call("crash"), three);
  INFO(d.log());
  CHECK(poison.outcome() == ipc::Outcome::kWorkerLost);
  auto after = status_of(*c);
  CHECK(after.workers_started >= 4);  // the first worker and three replacements ran it
  eventually([&] { return count_of(d.log(), " exited") == 4; }, 20s, "four workers dead");
  // Workers that die without finishing a task come back slower and slower.
  const auto until = std::chrono::steady_clock::now() + 3s;
  while (std::chrono::steady_clock::now() < until) {
    const auto started = status_of(*c).workers_started;
    INFO("workers started: " << started);
    REQUIRE(started <= 1 + 4 + 2);
    std::this_thread::sleep_for(50ms);
  }
  eventually(
      [&] {
        auto s = status_of(*c);
        return s.workers.size() == 1 && s.workers[0].state == "idle";
      },
      30s, "the pool back to one idle worker");
  CHECK(run(*c, call("echo", {num(2)})).ok());
}

TEST_CASE("cancel stops a running function by frame, and its worker stays", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const std::int64_t pid = status_of(*c).workers.at(0).pid;

  auto id = c->submit(call("sleep", {num(30)}));
  REQUIRE(id.is_ok());
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the sleep running");
  REQUIRE(c->cancel(*id).is_ok());
  auto r = c->wait_for(*id, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == ipc::Outcome::kCancelled);

  auto echo = run(*c, call("echo", {num(7)}));
  INFO(echo.describe());
  REQUIRE(echo.ok());
  auto s = status_of(*c);
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].pid == pid);
  CHECK(s.workers_started == 1);
  CHECK(process_alive(static_cast<pid_t>(pid)));
}
