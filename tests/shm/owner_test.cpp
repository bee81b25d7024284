#include "kura/shm/owner.hpp"

#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>

#include "child.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

TEST_CASE("the process owner is random, stable and backed by a held lease", "[shm]") {
  test::ShmGuard guard;
  auto a = shm::process_owner();
  auto b = shm::process_owner();
  REQUIRE(a.is_ok());
  REQUIRE(b.is_ok());
  CHECK(*a != 0);
  CHECK(*a == *b);
  const std::string lease = shm_path("kura_" + test::hex(*a) + ".lock");
  CHECK(exists(lease));
  CHECK(test::mode_of(lease) == 0600);
  CHECK(shm::owner_alive(*a));
  CHECK(shm::owner_alive(shm::kKeptOwner));
  CHECK(!shm::owner_alive(*a ^ 0x5a5a5a5a5a5a5a5aull));  // no such lease
  // Probing did not release our own lock.
  CHECK(shm::owner_alive(*a));
}

TEST_CASE("Lease::hold takes a live owner's lease and refuses a missing one", "[shm]") {
  test::ShmGuard guard;
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  {
    auto l = shm::Lease::hold(*me);
    REQUIRE(l.is_ok());
    CHECK(l->owner() == *me);
    shm::Lease moved = std::move(l).value();
    CHECK(moved.owner() == *me);
  }
  CHECK(shm::owner_alive(*me));
  auto none = shm::Lease::hold(*me ^ 0x77);
  REQUIRE(!none.is_ok());
  CHECK(none.status().code() == Code::kNotFound);
  auto kept = shm::Lease::hold(shm::kKeptOwner);
  REQUIRE(!kept.is_ok());
  CHECK(kept.status().code() == Code::kNotFound);
}

TEST_CASE("a forked child that drops an inherited Shared leaves the parent's region", "[shm][multiprocess]") {
  test::ShmGuard guard;
  Value v = Value::f64({1, 2, 3});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  auto t = shm::share(v);
  REQUIRE(t.is_ok());
  auto parent_owner = shm::process_owner();
  REQUIRE(parent_owner.is_ok());

  int fds[2];
  REQUIRE(::pipe(fds) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    ::close(fds[0]);
    // Drop one inherited handle by release(), the other by destruction.
    bool ok = s->release().is_ok();
    { shm::Shared dropped = std::move(t).value(); }
    // The child gets an owner of its own.
    auto mine = shm::process_owner();
    ok = ok && mine.is_ok() && *mine != *parent_owner;
    std::string msg = (ok ? "ok " : "fail ") + (mine.is_ok() ? test::hex(*mine) : std::string("none")) + "\n";
    (void)!::write(fds[1], msg.data(), msg.size());
    ::_exit(ok ? 0 : 1);
  }
  ::close(fds[1]);
  pollfd p{fds[0], POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);  // bounded: the child answers at once
  char buf[64] = {};
  REQUIRE(::read(fds[0], buf, sizeof buf - 1) > 0);
  ::close(fds[0]);
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  std::string answer(buf);
  INFO("child said: " << answer);
  REQUIRE(answer.rfind("ok ", 0) == 0);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);

  CHECK(exists(shm_path(s->name())));
  CHECK(exists(shm_path(t->name())));
  auto m = s->map();
  REQUIRE(m.is_ok());
  CHECK(shm::owner_alive(*parent_owner));

  // The child exited without cleaning up: its lease is an orphan that prune
  // removes, and nothing of ours goes with it.
  std::string child_owner = answer.substr(3, answer.find('\n') - 3);
  auto report = shm::prune();
  REQUIRE(report.is_ok());
  CHECK(report->removed == std::vector<std::string>{"/kura_" + child_owner + ".lock"});
  CHECK(exists(shm_path(s->name())));
}

TEST_CASE("a forked child does not keep its dead parent's owner alive", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto parent = test::Child::helper({"fork-heir"});
  const std::string owner_line = parent.read_line();
  REQUIRE(owner_line.rfind("owner ", 0) == 0);
  const std::uint64_t owner = std::stoull(owner_line.substr(6), nullptr, 16);
  const std::string heir_line = parent.read_line();
  REQUIRE(heir_line.rfind("heir ", 0) == 0);
  const pid_t heir = static_cast<pid_t>(std::stol(heir_line.substr(5)));
  CHECK(shm::owner_alive(owner));

  parent.kill_and_wait(SIGKILL);
  // The heir still runs, with a copy of every descriptor the parent had at
  // the fork, but not the lease's lock (it said its pid only after fork()
  // returned in it, so after the fork handlers ran).
  REQUIRE(::kill(heir, 0) == 0);
  CHECK_FALSE(shm::owner_alive(owner));
  auto pruned = shm::prune(owner);
  REQUIRE(pruned.is_ok());
  CHECK(pruned->removed == std::vector<std::string>{"/kura_" + owner_line.substr(6) + ".lock"});
  CHECK_FALSE(exists(shm_path("kura_" + owner_line.substr(6) + ".lock")));
  ::kill(heir, SIGKILL);
}

TEST_CASE("a disowned region survives its process's clean exit, then prune takes it", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto c = test::Child::helper({"disown-and-exit"});
  const std::string disowned = c.read_line();
  const std::string held = c.read_line();
  const std::string owner_line = c.read_line();
  REQUIRE(disowned.rfind("disowned /kura_", 0) == 0);
  REQUIRE(held.rfind("held /kura_", 0) == 0);
  REQUIRE(owner_line.rfind("owner ", 0) == 0);
  c.close_input();
  CHECK(WEXITSTATUS(c.wait()) == 0);
  const std::string kept_name = disowned.substr(9);
  CHECK(exists(shm_path(kept_name)));             // disowned: left by the clean exit
  CHECK_FALSE(exists(shm_path(held.substr(5))));  // still owned: removed at exit
  CHECK(shm::map(kept_name).is_ok());
  // Its owner is gone, so it is an orphan now.
  auto p = shm::prune(std::stoull(owner_line.substr(6), nullptr, 16));
  REQUIRE(p.is_ok());
  CHECK(p->removed == std::vector<std::string>{kept_name});
}
