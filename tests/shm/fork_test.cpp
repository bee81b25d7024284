// fork() at the worst moments: a child forked while a region is being
// written must not be able to write into it once it is published, nor drop
// the writer's lock on its temporary, and a child must not keep a lease (its
// parent's owner, or a Lease) alive.
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <climits>
#include <cstring>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "child.hpp"
#include "kura/core/verify.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::shm_path;

namespace {

// Waits (bounded) for one byte on `fd`; false on timeout or EOF.
bool wait_byte(int fd, int timeout_ms = 20000) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, timeout_ms) != 1) return false;
  char c;
  return ::read(fd, &c, 1) == 1;
}

// Waits (bounded, on a pidfd) for child `pid` to end and returns its wait
// status; -1 on timeout (the child is then killed).
int wait_child(pid_t pid, int timeout_ms = 20000) {
  int status = 0;
  const int pidfd = static_cast<int>(::syscall(SYS_pidfd_open, pid, 0));
  if (pidfd >= 0) {
    pollfd p{pidfd, POLLIN, 0};
    const bool ended = ::poll(&p, 1, timeout_ms) == 1;
    ::close(pidfd);
    if (!ended) ::kill(pid, SIGKILL);
    ::waitpid(pid, &status, 0);
    return ended ? status : -1;
  }
  ::waitpid(pid, &status, 0);  // no pidfd (kernel < 5.3): an unbounded wait
  return status;
}

// The descriptors of this process that refer to the file at `path`.
int descriptors_of(const std::string& path) {
  int found = 0;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* de = ::readdir(d)) {
      char target[PATH_MAX];
      std::string link = std::string("/proc/self/fd/") + de->d_name;
      ssize_t n = ::readlink(link.c_str(), target, sizeof target - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      std::string t(target);
      if (t.rfind(path, 0) == 0) ++found;  // also "<path> (deleted)" and "<path>.tmp"
    }
    ::closedir(d);
  }
  return found;
}

}  // namespace

TEST_CASE("a child forked during a write cannot write into the published region", "[shm][multiprocess]") {
  test::ShmGuard guard;
  Value v = Value::list({Value::array_in_place(Dtype::kF64, 1 << 16), Value::bytes_in_place("raw", 4096)});
  auto pending = shm::Pending::create(v);
  REQUIRE(pending.is_ok());
  auto xs = pending->array<double>(v.children[0]);
  auto raw = pending->block(v.children[1]);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i);
  std::memset(raw.data(), 0x5a, raw.size());

  int go[2], done[2];
  REQUIRE(::pipe(go) == 0);
  REQUIRE(::pipe(done) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    // Wait until the parent has published, then try everything: the
    // descriptor is gone, and writing through the old mapping faults.
    ::close(go[1]);
    if (!wait_byte(go[0])) ::_exit(10);
    char path_buf[512];
    ssize_t n = ::read(go[0], path_buf, sizeof path_buf - 1);
    if (n <= 0) ::_exit(11);
    path_buf[n] = '\0';
    if (descriptors_of(path_buf) != 0) ::_exit(12);  // a descriptor survived the fork
    (void)!::write(done[1], "w", 1);
    // Die of the fault itself, not in the handlers inherited from the test
    // runner or a sanitizer.
    ::signal(SIGSEGV, SIG_DFL);
    xs[0] = -1.0;  // must fault: the writable mapping was not inherited
    ::_exit(13);
  }
  ::close(go[0]);
  ::close(done[1]);
  auto shared = std::move(pending).value().publish();
  REQUIRE(shared.is_ok());
  const std::string path = shm_path(shared->name());
  REQUIRE(::write(go[1], "g", 1) == 1);
  REQUIRE(::write(go[1], path.data(), path.size()) == static_cast<ssize_t>(path.size()));
  CHECK(wait_byte(done[0]));
  const int status = wait_child(pid);
  ::close(go[1]);
  ::close(done[0]);
  INFO("child wait status " << status);
  REQUIRE(status != -1);
  CHECK(WIFSIGNALED(status));
  if (WIFSIGNALED(status)) CHECK(WTERMSIG(status) == SIGSEGV);

  auto m = shared->map();
  REQUIRE(m.is_ok());
  auto report = verify(m->node());
  INFO((report.is_ok() ? std::string() : report.status().to_string()));
  CHECK(report.is_ok());
  auto first = m->node().child(0);
  REQUIRE(first.is_ok());
  CHECK((*first->array<Dtype::kF64>())[0] == 0.0);
}

TEST_CASE("a forked child that drops an inherited Pending leaves the parent's write alone",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  Value v = Value::array_in_place(Dtype::kI32, 1024);
  auto pending = shm::Pending::create(v);
  REQUIRE(pending.is_ok());
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    { shm::Pending dropped = std::move(pending).value(); }  // must neither unlink nor unmap the parent's
    ::_exit(0);
  }
  const int status = wait_child(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto xs = pending->array<std::int32_t>(v);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<std::int32_t>(i);
  auto shared = std::move(pending).value().publish();
  REQUIRE(shared.is_ok());
  auto m = shared->map();
  REQUIRE(m.is_ok());
  CHECK((*m->node().array<Dtype::kI32>())[1023] == 1023);
}

TEST_CASE("a forked child does not inherit a held Lease", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto owner = test::Child::helper({"owner-then-exit"});
  const std::string line = owner.read_line();
  REQUIRE(line.rfind("owner ", 0) == 0);
  const std::uint64_t id = std::stoull(line.substr(6), nullptr, 16);
  int ready[2], quit[2];
  REQUIRE(::pipe(ready) == 0);
  REQUIRE(::pipe(quit) == 0);
  pid_t pid;
  {
    auto lease = shm::Lease::hold(id);
    REQUIRE(lease.is_ok());
    pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      ::close(ready[0]);
      ::close(quit[1]);
      (void)!::write(ready[1], "r", 1);
      (void)wait_byte(quit[0]);  // holds whatever it inherited until told to go
      ::_exit(0);
    }
    ::close(ready[1]);
    ::close(quit[0]);
    REQUIRE(wait_byte(ready[0]));
  }  // our Lease is dropped; the child still runs
  owner.kill_and_wait(SIGKILL);
  // Dead owner, nobody holds its lease: prune removes it although the child
  // that was forked while we held it is alive.
  auto p = shm::prune(id);
  REQUIRE(p.is_ok());
  CHECK(p->removed == std::vector<std::string>{"/kura_" + line.substr(6) + ".lock"});
  REQUIRE(::write(quit[1], "q", 1) == 1);
  const int status = wait_child(pid);
  CHECK(WIFEXITED(status));
  ::close(ready[0]);
  ::close(quit[1]);
}

TEST_CASE("a forked child cannot keep its parent's region under another name", "[shm][multiprocess]") {
  test::ShmGuard guard;
  Value v = Value::i32({1, 2, 3});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  const std::string name = s->name();
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    auto kept = s->keep();
    ::_exit(!kept.is_ok() && kept.status().code() == Code::kInvalidArgument ? 0 : 1);
  }
  const int status = wait_child(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(shm::map(name).is_ok());  // still the parent's, under its name
  auto kept = s->keep();          // the parent may
  REQUIRE(kept.is_ok());
  CHECK(kept->rfind("/kura_0_", 0) == 0);
  CHECK(shm::remove(*kept).is_ok());
}

TEST_CASE("a forked child that exits does not release the lock on its parent's temporary",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  const std::set<std::string> before = test::shm_entries();
  Value v = Value::array_in_place(Dtype::kI32, 1024);
  auto pending = shm::Pending::create(v);
  REQUIRE(pending.is_ok());
  std::vector<std::string> temps;
  for (const auto& e : test::shm_entries())
    if (!before.count(e)) temps.push_back(e);
  REQUIRE(temps.size() == 1);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    { shm::Pending dropped = std::move(pending).value(); }
    ::_exit(0);  // closes every descriptor it inherited
  }
  const int status = wait_child(pid);
  REQUIRE(WIFEXITED(status));
  // Still ours, while the owner lives and when it is pruned as a whole.
  auto mine = shm::prune(*me);
  REQUIRE(mine.is_ok());
  CHECK(mine->removed.empty());
  auto all = shm::prune();
  REQUIRE(all.is_ok());
  CHECK(std::find(all->removed.begin(), all->removed.end(), "/" + temps[0]) == all->removed.end());
  CHECK(test::exists(shm_path(temps[0])));
  auto shared = std::move(pending).value().publish();
  REQUIRE(shared.is_ok());
  CHECK(shared->release().is_ok());
}

TEST_CASE("a forked child starts with an empty map cache, and keeps the views it inherited",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  shm::drop_map_cache();
  Value v = Value::list({Value::f64({6.5})});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  const std::string name = s->name() + "[1]";
  auto view = shm::map(name);
  REQUIRE(view.is_ok());
  REQUIRE(shm::map_cache_stats().mappings == 1);
  auto value_of = [](const shm::Mapped& m) {
    auto a = m.node().array<Dtype::kF64>();
    return a.is_ok() && a->size() == 1 ? (*a)[0] : -1.0;
  };

  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    if (shm::map_cache_stats().mappings != 0) ::_exit(2);
    if (value_of(*view) != 6.5) ::_exit(3);
    auto again = shm::map(name);
    if (!again.is_ok() || value_of(*again) != 6.5) ::_exit(4);
    auto hit = shm::map(name);
    const shm::MapCacheStats st = shm::map_cache_stats();
    if (!hit.is_ok() || st.hits != 1 || st.misses != 1) ::_exit(5);
    ::_exit(0);
  }
  const int status = wait_child(pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(shm::map_cache_stats().mappings == 1);
  auto after = shm::map(name);
  REQUIRE(after.is_ok());
  CHECK(value_of(*after) == 6.5);
  REQUIRE(s->release().is_ok());
}

TEST_CASE("fork() while another thread maps through the cache leaves the child a usable cache",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  Value v = Value::list({Value::i32({41})});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  const std::string name = s->name() + "[1]";
  std::atomic<bool> stop{false};
  std::atomic<int> failed{0};
  std::thread mapper([&] {
    for (int k = 0; !stop; ++k) {
      if (!shm::map(name).is_ok()) ++failed;
      if (k % 7 == 0) shm::drop_map_cache();  // misses too: the lock is taken and released often
    }
  });
  for (int i = 0; i < 20; ++i) {
    pid_t pid = ::fork();
    REQUIRE(pid >= 0);
    if (pid == 0) {
      // The mapper thread does not exist here; had fork() caught it holding
      // the cache's lock, this map would never return.
      auto m = shm::map(name);
      ::_exit(m.is_ok() && m->node().array<Dtype::kI32>().is_ok() ? 0 : 1);
    }
    const int status = wait_child(pid);
    INFO("child " << i << " (status -1: it hung and was killed)");
    REQUIRE(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
  stop = true;
  mapper.join();
  CHECK(failed == 0);
  REQUIRE(s->release().is_ok());
}
