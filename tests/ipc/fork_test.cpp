// A child forked without exec from a process that runs an embedded
// dispatcher keeps none of its sockets: when the process dies, its workers
// and clients see it go, and a new dispatcher can take its socket, while
// the child lives on.
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <string>
#include <thread>

#include "ipc_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// Whether `pid` runs (a zombie that nobody reaped yet does not).
bool running(pid_t pid) {
  std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
  if (f == nullptr) return false;
  int got_pid = 0;
  char comm[256];
  char state = 'X';
  const int n = std::fscanf(f, "%d %255s %c", &got_pid, comm, &state);
  std::fclose(f);
  return n == 3 && state != 'Z' && state != 'X';
}

}  // namespace

TEST_CASE("a child forked from a process with an embedded dispatcher keeps none of its sockets",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  int to_test[2];
  REQUIRE(::pipe(to_test) == 0);
  const pid_t owner = ::fork();
  REQUIRE(owner >= 0);
  if (owner == 0) {
    // The process that runs the dispatcher: it forks a child that only
    // waits, says the child's pid, and waits to be killed.
    ::close(to_test[0]);
    ipc::DispatcherOptions o;
    o.socket_path = dir.socket();
    o.workers = 1;
    o.worker_command = ipc::Worker::command(kKura);
    o.log = [](const std::string&) {};
    auto d = ipc::Dispatcher::start(std::move(o));
    if (!d) ::_exit(2);
    // Fork once the worker's connection is open, so that the child would
    // inherit it as well as the listening socket.
    auto self = ipc::Client::connect(dir.socket());
    if (!self) ::_exit(3);
    const auto until = std::chrono::steady_clock::now() + 20s;
    for (;;) {
      auto s = (*self)->status();
      if (s && s->workers.size() == 1 && s->workers[0].state == "idle") break;
      if (std::chrono::steady_clock::now() > until) ::_exit(4);
      std::this_thread::sleep_for(5ms);
    }
    const pid_t child = ::fork();
    if (child == 0) {
      for (;;) ::pause();  // killed by the test
    }
    char line[32];
    std::snprintf(line, sizeof line, "%d\n", static_cast<int>(child));
    (void)!::write(to_test[1], line, std::strlen(line));
    for (;;) ::pause();  // killed by the test
  }
  ::close(to_test[1]);
  std::string said;
  char ch;
  while (::read(to_test[0], &ch, 1) == 1 && ch != '\n') said += ch;
  ::close(to_test[0]);
  const pid_t child = static_cast<pid_t>(std::atoi(said.c_str()));
  struct Reap {
    pid_t owner, child;
    ~Reap() {
      ::kill(owner, SIGKILL);
      ::waitpid(owner, nullptr, 0);
      if (child > 0) ::kill(child, SIGKILL);  // a grandchild: not ours to reap
    }
  } reap{owner, child};
  INFO("the dispatcher's process said: " << said);
  REQUIRE(child > 0);

  auto c = connect(dir.socket());
  wait_workers(*c, 1);
  const auto worker = static_cast<pid_t>(status_of(*c).workers.at(0).pid);
  ::kill(owner, SIGKILL);
  ::waitpid(owner, nullptr, 0);

  // The client hears the dispatcher go, and so does the worker, which
  // exits, although the child that was forked from the dispatcher lives.
  eventually([&] { return !c->status().is_ok(); }, 20s, "the client to see the dispatcher gone");
  eventually([&] { return !running(worker); }, 20s, "the worker to exit");
  CHECK(running(child));
  // Nobody holds the listening socket: a new dispatcher takes it.
  EmbeddedDispatcher again(dir, 0);
  auto c2 = connect(again.socket());
  CHECK(status_of(*c2).workers.empty());
}
