// everywhere(): set-up on every worker, replayed on workers that join later.
#include <catch2/catch.hpp>

#include "ipc_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

TEST_CASE("everywhere runs on every worker, and on a replacement before its first task",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  REQUIRE(c->everywhere(call("set_tag", {ipc::Arg::copy(Value::strings_utf8({"ready"}))})).is_ok());
  // Both workers answer "ready": run enough get_tag tasks to reach both.
  std::vector<std::vector<ipc::Arg>> inputs(20);
  auto m = c->map("get_tag", inputs);
  REQUIRE(m.is_ok());
  for (auto& r : m->results) CHECK(tag_of(r) == "ready");

  // A worker dies; the replacement runs the set-up before anything else.
  auto before = status_of(*c);
  ::kill(static_cast<pid_t>(before.workers.at(0).pid), SIGKILL);
  eventually([&] { return status_of(*c).cumulative == 3; }, 20s, "the replacement worker");
  wait_workers(*c, 2);
  auto again = c->map("get_tag", inputs);
  REQUIRE(again.is_ok());
  for (auto& r : again->results) CHECK(tag_of(r) == "ready");
  // Every worker took part.
  for (const auto& w : status_of(*c).workers) CHECK(w.tasks_done > 0);

  // A set-up that fails reports how.
  Status bad = c->everywhere(call("fail", {ipc::Arg::copy(Value::strings_utf8({"no model"}))}));
  REQUIRE_FALSE(bad.is_ok());
  CHECK(bad.message().find("no model") != std::string::npos);
}
