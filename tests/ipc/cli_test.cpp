// The dispatcher subcommands of the kura tool, run as processes: dispatcher,
// worker (through --workers), status and submit.
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>

#include "ipc_util.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"

using namespace kura::test;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

RunResult kura_cli(std::vector<std::string> args, std::string_view input = {}) {
  args.insert(args.begin(), kKura);
  return run(args, input);
}

}  // namespace

TEST_CASE("kura dispatcher, status and submit from the command line", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  Process dp({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "2", "--memory", "1MiB"});
  auto line = dp.read_line(20s);
  REQUIRE(line);
  CHECK(*line == "listening on " + dir.socket());
  auto c = connect(dir.socket());
  wait_workers(*c, 2);

  auto echo = kura_cli({"submit", "--socket", dir.socket(), "echo", "42", "hello", "true"});
  INFO(echo.err);
  REQUIRE(echo.code == 0);
  CHECK(echo.out.find("f64[1] 42") != std::string::npos);
  CHECK(echo.out.find("\"hello\"") != std::string::npos);
  CHECK(echo.out.find("lgl[1] TRUE") != std::string::npos);

  auto put = kura_cli({"put", "--keep", "-"}, R"({"type": "f64", "values": [1, 2, 3.5]})");
  REQUIRE(put.code == 0);
  std::string name = put.out.substr(0, put.out.find('\n'));
  auto sum = kura_cli({"submit", "--socket", dir.socket(), "--json", "sum", name});
  INFO(sum.err);
  REQUIRE(sum.code == 0);
  CHECK(Json::parse(sum.out) == Json::parse(R"({"type": "f64", "values": [6.5]})"));

  // --keep: the result lives on under an owner-0 name after the client exits.
  auto kept = kura_cli({"submit", "--socket", dir.socket(), "--keep", "scale", name, "2"});
  INFO(kept.err);
  REQUIRE(kept.code == 0);
  const std::string kept_name = kept.out.substr(0, kept.out.find('\n'));
  REQUIRE(kept_name.rfind("/kura_0_", 0) == 0);
  auto back = kura_cli({"get", "--json", kept_name});
  CHECK(Json::parse(back.out) == Json::parse(R"({"type": "f64", "values": [2.0, 4.0, 7.0]})"));
  CHECK(kura_cli({"rm", kept_name}).code == 0);
  CHECK(kura_cli({"rm", name}).code == 0);

  auto failed = kura_cli({"submit", "--socket", dir.socket(), "fail", "no good"});
  CHECK(failed.code == 1);
  CHECK(failed.err.find("error: no good") != std::string::npos);
  auto timeout = kura_cli({"submit", "--socket", dir.socket(), "--timeout", "100", "sleep", "30"});
  CHECK(timeout.code == 1);
  CHECK(timeout.err.find("timeout") != std::string::npos);
  auto bad_name = kura_cli({"submit", "--socket", dir.socket(), "sum", "/kura_X"});
  CHECK(bad_name.code == 2);

  auto st = kura_cli({"status", "--socket", dir.socket(), "--json"});
  INFO(st.err);
  REQUIRE(st.code == 0);
  Json s = Json::parse(st.out);
  CHECK(s["workers"].size() == 2);
  CHECK(s["queued_bytes"]["cap"] == 1048576);
  CHECK(s["completed"].get<int>() >= 5);
  CHECK(s["waiting_on_workers"] == 0);
  auto plain = kura_cli({"status", "--socket", dir.socket()});
  CHECK(plain.out.find("PID") != std::string::npos);
  CHECK(plain.out.find("0 waiting on workers") != std::string::npos);
  // A worker window must be 1 to 1024 tasks.
  for (const char* bad : {"0", "1025", "x"}) {
    auto refused = kura_cli({"dispatcher", "--socket", dir.dir() + "/other.sock", "--window", bad});
    INFO("--window " << bad << ": " << refused.err);
    CHECK(refused.code == 2);
    CHECK(refused.err.find("--window") != std::string::npos);
  }

  auto nobody = kura_cli({"status", "--socket", dir.dir() + "/none.sock"});
  CHECK(nobody.code == 3);  // not found: nobody listens there

  c.reset();
  dp.signal(SIGTERM);
  auto code = dp.wait(20s);
  REQUIRE(code);
  CHECK(*code == 0);
  struct stat st_sock;
  CHECK(::lstat(dir.socket().c_str(), &st_sock) != 0);  // the socket file is removed
}

TEST_CASE("a second dispatcher on a live socket is refused, and a stale socket is replaced",
          "[ipc][multiprocess]") {
  SocketDir dir;
  Process first({kKura, "dispatcher", "--socket", dir.socket()});
  REQUIRE(first.read_line(20s));
  auto second = kura_cli({"dispatcher", "--socket", dir.socket()});
  CHECK(second.code == 1);
  CHECK(second.err.find("already listens") != std::string::npos);
  first.signal(SIGKILL);  // leaves its socket file behind
  REQUIRE(first.wait(20s));
  Process third({kKura, "dispatcher", "--socket", dir.socket()});
  REQUIRE(third.read_line(20s));
  third.signal(SIGTERM);
  CHECK(third.wait(20s) == 0);
}

TEST_CASE("a dispatcher SIGKILLed under load: its workers go, clients see disconnected, a new one serves",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  Process first({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "2"});
  REQUIRE(first.read_line(20s));
  auto c = connect(dir.socket());
  wait_workers(*c, 2);
  std::vector<pid_t> old_workers;
  for (const auto& w : status_of(*c).workers) old_workers.push_back(static_cast<pid_t>(w.pid));
  auto running = c->submit(call("sleep", {num(30)}));
  REQUIRE(running.is_ok());
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the task running");

  first.signal(SIGKILL);
  REQUIRE(first.wait(20s));
  auto r = c->wait_for(*running, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == kura::ipc::Outcome::kDisconnected);
  for (pid_t pid : old_workers)
    eventually([&] { return !process_alive(pid); }, 20s,
               "worker " + std::to_string(pid) + " of the killed dispatcher gone");

  Process second({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "1"});
  REQUIRE(second.read_line(20s));
  auto again = connect(dir.socket());
  wait_workers(*again, 1);
  auto echo = again->wait_for(again->submit(call("echo", {num(3)})).value(), 20s);
  REQUIRE(echo.has_value());
  CHECK(echo->ok());
  c.reset();
  again.reset();
  second.signal(SIGTERM);
  CHECK(second.wait(20s) == 0);
}

TEST_CASE("a socket directory open to others, or a symlink, is refused", "[ipc]") {
  SocketDir dir;
  const std::string open_dir = dir.dir() + "/open";
  REQUIRE(::mkdir(open_dir.c_str(), 0755) == 0);
  auto r = kura_cli({"dispatcher", "--socket", open_dir + "/d.sock"});
  CHECK(r.code == 1);
  CHECK(r.err.find("mode 0700") != std::string::npos);
  const std::string link = dir.dir() + "/link";
  REQUIRE(::symlink(dir.dir().c_str(), link.c_str()) == 0);
  auto l = kura_cli({"dispatcher", "--socket", link + "/d.sock"});
  CHECK(l.code == 1);
  CHECK(l.err.find("symbolic link") != std::string::npos);
  ::rmdir(open_dir.c_str());
}
