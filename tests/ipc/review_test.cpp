// Defects found by an adversarial review of ipc/: each test failed before
// its fix (the commit that fixed it says which).
#include <fcntl.h>
#include <poll.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include <algorithm>
#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <future>
#include <optional>
#include <thread>

#include "ipc_util.hpp"
#include "kura/core/name.hpp"
#include "kura/ipc/pipeline.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

pid_t this_thread_id() {
  return static_cast<pid_t>(::syscall(SYS_gettid));
}

// True when thread `tid` of this process is blocked in a futex wait (a
// condition variable or a mutex): the system call it sits in, from /proc.
// Where /proc does not say, true: the test is then only weaker.
bool blocked_in_futex(pid_t tid) {
  std::ifstream f("/proc/self/task/" + std::to_string(tid) + "/syscall");
  if (!f) return true;
  std::string first;
  if (!(f >> first)) return true;
  return first == std::to_string(SYS_futex);
}

// Files of the region directory that belong to `owner` (regions, temporaries
// and its lease).
std::vector<std::string> files_of(std::uint64_t owner) {
  std::vector<std::string> out;
  char prefix[32];
  std::snprintf(prefix, sizeof prefix, "kura_%llx", static_cast<unsigned long long>(owner));
  for (const std::string& f : shm_entries()) {
    if (f.rfind(prefix, 0) != 0) continue;
    const char next = f.size() > std::strlen(prefix) ? f[std::strlen(prefix)] : '\0';
    if (next == '_' || next == '.') out.push_back(f);
  }
  return out;
}

std::string read_line_from(int fd, std::chrono::milliseconds timeout) {
  std::string line;
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  for (;;) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    pollfd p{fd, POLLIN, 0};
    if (left.count() <= 0 || ::poll(&p, 1, static_cast<int>(left.count())) != 1) return line;
    char ch;
    if (::read(fd, &ch, 1) != 1 || ch == '\n') return line;
    line += ch;
  }
}

// Duplicates every socket descriptor of this process (the copies are not
// registered to be closed in forked children, so a child keeps them).
void hold_sockets_across_fork() {
  std::vector<int> sockets;
  if (DIR* d = ::opendir("/proc/self/fd")) {
    while (dirent* de = ::readdir(d)) {
      if (de->d_name[0] == '.') continue;
      const int fd = std::atoi(de->d_name);
      struct stat st;
      if (::fstat(fd, &st) == 0 && S_ISSOCK(st.st_mode)) sockets.push_back(fd);
    }
    ::closedir(d);
  }
  for (int fd : sockets) (void)::dup(fd);
}

// Kills (and reaps, when they are its children) the processes it was given
// that the test has not ended itself, however the test ends.
struct KillOnExit {
  std::vector<pid_t> pids;
  void kill_now(pid_t p) {
    ::kill(p, SIGKILL);
    ::waitpid(p, nullptr, 0);  // a grandchild is not ours to reap: this fails harmlessly
    pids.erase(std::remove(pids.begin(), pids.end(), p), pids.end());
  }
  ~KillOnExit() {
    while (!pids.empty()) kill_now(pids.back());
  }
};

}  // namespace

TEST_CASE("two threads waiting for one task: one takes its result, the other an error, no crash",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const ipc::TaskId id = c->submit(call("sleep", {num(30)})).value();
  std::atomic<pid_t> tid[2] = {0, 0};
  std::optional<ipc::TaskResult> got[2];
  std::vector<std::thread> waiters;
  for (int i = 0; i < 2; ++i)
    waiters.emplace_back([&, i] {
      tid[i] = this_thread_id();
      got[i] = c->wait(id);
    });
  // Both are waiting before the result exists.
  eventually(
      [&] { return tid[0] != 0 && tid[1] != 0 && blocked_in_futex(tid[0]) && blocked_in_futex(tid[1]); }, 20s,
      "both threads to wait");
  REQUIRE(c->cancel(id).is_ok());
  for (auto& t : waiters) t.join();
  REQUIRE(got[0]);
  REQUIRE(got[1]);
  const int cancelled =
      (got[0]->outcome() == ipc::Outcome::kCancelled) + (got[1]->outcome() == ipc::Outcome::kCancelled);
  const int errors =
      (got[0]->outcome() == ipc::Outcome::kError) + (got[1]->outcome() == ipc::Outcome::kError);
  CHECK(cancelled == 1);
  CHECK(errors == 1);
}

TEST_CASE("wait_any and wait on the same task in two threads: neither crashes nor hangs",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const ipc::TaskId id = c->submit(call("sleep", {num(30)})).value();
  std::atomic<pid_t> any_tid{0};
  std::promise<std::pair<ipc::TaskId, ipc::TaskResult>> any_done;
  auto any_result = any_done.get_future();
  std::thread any([&] {
    any_tid = this_thread_id();
    any_done.set_value(c->wait_any());
  });
  std::atomic<pid_t> one_tid{0};
  std::promise<ipc::TaskResult> one_done;
  auto one_result = one_done.get_future();
  std::thread one([&] {
    one_tid = this_thread_id();
    one_done.set_value(c->wait(id));
  });
  eventually(
      [&] { return any_tid != 0 && one_tid != 0 && blocked_in_futex(any_tid) && blocked_in_futex(one_tid); },
      20s, "both threads to wait");
  REQUIRE(c->cancel(id).is_ok());
  const bool any_returned = any_result.wait_for(20s) == std::future_status::ready;
  const bool one_returned = one_result.wait_for(20s) == std::future_status::ready;
  CHECK(any_returned);
  CHECK(one_returned);
  if (!any_returned) {
    // Let the stuck wait_any go, so the test can end.
    (void)c->submit(call("echo", {num(1)}));
  }
  any.join();
  one.join();
  auto [any_id, any_r] = any_result.get();
  ipc::TaskResult one_r = one_result.get();
  // Exactly one of them took the cancelled task.
  const bool any_took = any_id == id && any_r.outcome() == ipc::Outcome::kCancelled;
  const bool one_took = one_r.outcome() == ipc::Outcome::kCancelled;
  CHECK(any_took != one_took);
}

TEST_CASE("a pipeline whose first stage is a reduce runs it once over every input", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  ipc::Pipeline p;
  p.reduce("all", "echo");
  auto r = p.run(*c, {num(1), num(2), num(3)});
  REQUIRE(r.is_ok());
  REQUIRE_FALSE(r->failure);
  REQUIRE(r->outputs.size() == 1);
  const NodeView& all = r->outputs[0].value();
  CHECK(all.length() == 3);
  REQUIRE(r->stages.size() == 1);
  CHECK(r->stages[0].total == 1);
  CHECK(r->stages[0].done == 1);
  CHECK(status_of(*c).completed == 1);  // one task, not one per input
}

TEST_CASE("an error message longer than the frame limit ends the task, not its worker",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto pid = status_of(*c).workers.at(0).pid;
  // fail() returns its argument as the error message: 2 MiB of it.
  auto big = shm::share(Value::strings_utf8({std::string(2u << 20, 'x')}));
  REQUIRE(big.is_ok());
  auto r = c->wait(c->submit(call("fail", {ipc::Arg::ref(big->name())})).value());
  INFO(r.message().substr(0, 200));
  CHECK(r.outcome() == ipc::Outcome::kError);
  CHECK(r.message().rfind("xxxxxxxx", 0) == 0);
  CHECK(r.message().size() < (1u << 20));
  auto s = status_of(*c);
  CHECK(s.cumulative == 1);  // the same worker, not a replacement
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].pid == pid);
}

TEST_CASE("a function that returns a region of another owner: an error, the worker stays, no region left",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto pid = status_of(*c).workers.at(0).pid;
  auto r = c->wait(c->submit(call("own_region")).value());
  INFO(r.describe());
  CHECK(r.outcome() == ipc::Outcome::kError);
  CHECK(r.message().find("owner") != std::string::npos);
  auto s = status_of(*c);
  CHECK(s.cumulative == 1);
  REQUIRE(s.workers.size() == 1);
  CHECK(s.workers[0].pid == pid);
  // The region the function made is gone (the worker's own lease stays
  // while it lives).
  eventually(
      [&] {
        for (const std::string& f : guard.new_entries())
          if (f.find(".lock") == std::string::npos) return false;
        return true;
      },
      20s, "the function's region to be removed");
}

TEST_CASE("a client that dies while a worker writes for it: its files go once the worker lets go",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  auto input = shm::share(Value::f64({1, 2, 3}));
  REQUIRE(input.is_ok());
  const std::string release = dir.dir() + "/release";
  // The client is a child process: it holds a result region, then starts a
  // task whose function holds its lease (writing a result) until released.
  // Its socket is also held by a grandchild, so that the owner is dead (the
  // child killed) before the dispatcher sees the connection go (the
  // grandchild killed): the dispatcher's clean-up then meets the worker's
  // hold on the lease.
  int from_child[2];
  REQUIRE(::pipe(from_child) == 0);
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  KillOnExit reaper;
  if (pid == 0) {
    ::close(from_child[0]);
    auto cc = ipc::Client::connect(d.socket());
    if (!cc) ::_exit(2);
    ipc::TaskResult held =
        (*cc)->wait((*cc)->submit(call("scale", {ipc::Arg::ref(input->name()), num(3)})).value());
    if (!held.ok() || held.name().empty()) ::_exit(3);
    if (!(*cc)->submit(call("hold_lease_until", {ipc::Arg::copy(Value::strings_utf8({release}))})))
      ::_exit(4);
    // The client's socket is closed in a forked child (the fork guard): the
    // grandchild holds copies of it made before the fork, which nothing
    // closes.
    hold_sockets_across_fork();
    pid_t grandchild = ::fork();
    if (grandchild == 0) {
      for (;;) ::pause();  // holds the socket until killed
    }
    char line[64];
    std::snprintf(line, sizeof line, "%llx %d\n", static_cast<unsigned long long>((*cc)->owner()),
                  static_cast<int>(grandchild));
    (void)!::write(from_child[1], line, std::strlen(line));
    for (;;) ::pause();  // killed here
  }
  reaper.pids.push_back(pid);
  ::close(from_child[1]);
  const std::string said = read_line_from(from_child[0], 20s);
  ::close(from_child[0]);
  INFO("child said: " << said);
  unsigned long long owner_hex = 0;
  int grandchild = 0;
  REQUIRE(std::sscanf(said.c_str(), "%llx %d", &owner_hex, &grandchild) == 2);
  const std::uint64_t owner = owner_hex;
  reaper.pids.push_back(grandchild);
  // The worker is writing for the child: a temporary region of its owner.
  eventually(
      [&] {
        for (const std::string& f : files_of(owner))
          if (f.find(".tmp") != std::string::npos) return true;
        return false;
      },
      20s, "the worker to start writing for the child");
  reaper.kill_now(pid);
  eventually([&] { return !shm::owner_alive(owner); }, 20s, "the child's owner to be dead");
  const auto connections = status_of(*c).connections;
  reaper.kill_now(grandchild);
  eventually([&] { return status_of(*c).connections == connections - 1; }, 20s,
             "the dispatcher to see the child's connection go");
  // Only now does the worker let go of the lease.
  { std::ofstream(release.c_str()) << "go\n"; }
  eventually([&] { return files_of(owner).empty(); }, 20s,
             "the dead client's result region and lease to be removed");
  wait_workers(*c, 1);
}

TEST_CASE("a set-up call that kills its worker does not make the dispatcher restart workers in a loop",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  CHECK_FALSE(c->everywhere(call("crash")).is_ok());
  // Every replacement runs the set-up call first and dies of it too. Like a
  // worker that dies before it connects, it is replaced after a delay that
  // doubles (100 ms, 200 ms, ...): a handful in the next second, not the
  // hundreds of a tight loop. (This watches a rate, so it looks for a while.)
  const auto until = std::chrono::steady_clock::now() + 1s;
  while (std::chrono::steady_clock::now() < until) std::this_thread::sleep_for(50ms);
  const auto started = status_of(*c).cumulative;
  INFO("workers started: " << started);
  CHECK(started <= 10);
}

TEST_CASE("a worker killed while it writes a result leaves no temporary, although its client lives",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 0, {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const auto worker = static_cast<pid_t>(status_of(*c).workers.at(0).pid);
  // The worker writes a result region for this client and keeps writing
  // until the file named appears (or it is killed).
  const std::string release = dir.dir() + "/release";
  ipc::TaskOptions once;
  once.retries = 1;
  auto id = c->submit(call("hold_lease_until", {ipc::Arg::copy(Value::strings_utf8({release}))}), once);
  REQUIRE(id.is_ok());
  auto temporaries = [&] {
    std::size_t n = 0;
    for (const std::string& f : files_of(c->owner()))
      if (f.find(".tmp") != std::string::npos) ++n;
    return n;
  };
  eventually([&] { return temporaries() == 1; }, 20s, "the worker to start writing for the client");
  ::kill(worker, SIGKILL);
  // The task goes to the replacement, which starts a temporary of its own;
  // the dead worker's is removed while the client (its owner) lives.
  eventually([&] { return status_of(*c).cumulative == 2 && temporaries() == 1; }, 20s,
             "the dead worker's temporary to be removed, the retry's to be written");
  CHECK(shm::owner_alive(c->owner()));
  REQUIRE(c->cancel(*id).is_ok());
  CHECK(c->wait(*id).outcome() == ipc::Outcome::kCancelled);
  // The retry's writer lets go (it does not poll for cancellation) and drops
  // its temporary.
  { std::ofstream(release).put('x'); }
  eventually([&] { return temporaries() == 0; }, 20s, "the cancelled task's temporary to go");
}
