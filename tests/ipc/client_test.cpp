// The client's contracts with real processes (kura issue 15): submits
// waiting for room do not hold back its control messages, each waiter gets
// its own results, calls from the completion callback never hang, a client
// destroyed with results in flight leaves no region, and a child forked
// without exec does not keep the connection. Each test failed before its fix.
#include <poll.h>
#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstring>
#include <future>
#include <optional>
#include <thread>

#include "ipc_util.hpp"
#include "kura/ipc/pipeline.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// Threads of a test, and what ends them however the test ends: `finish`
// (which must make every blocked call of theirs return, e.g. by stopping
// the dispatcher), then joins.
struct Threads {
  std::vector<std::thread> all;
  std::function<void()> finish;
  ~Threads() {
    if (finish) finish();
    for (auto& t : all) t.join();
  }
};

// Runs `f` on a thread of `threads` and returns its value if it returned
// within `bound`, else nullopt (the call goes on; `threads` joins it).
template <class F>
auto within(Threads& threads, std::chrono::milliseconds bound, F f) -> std::optional<decltype(f())> {
  auto done = std::make_shared<std::promise<decltype(f())>>();
  auto result = done->get_future();
  threads.all.emplace_back([done, f] { done->set_value(f()); });
  if (result.wait_for(bound) != std::future_status::ready) return std::nullopt;
  return result.get();
}

// Two threads that try to take results that are not theirs: one loops on
// wait_any() (it blocks on a task of its own, so it takes any result it is
// handed, until that task is cancelled), one on wait_any_for() over the
// first 5000 ids the client hands out.
class Thieves {
 public:
  explicit Thieves(ipc::Client& c) : c_(c), own_(c.submit(call("sleep", {num(60)})).value()) {
    for (ipc::TaskId id = 1; id < 5000; ++id)
      if (id != own_) guesses_.push_back(id);
    any_ = std::thread([this] {
      for (;;) {
        auto [id, r] = c_.wait_any();
        if (id == own_ || id == 0) break;
        ++stolen_;
      }
    });
    guess_ = std::thread([this] {
      while (!stop_) {
        auto got = c_.wait_any_for(guesses_, 20ms);
        if (got && got->first != 0) ++stolen_;
        if (got && got->first == 0) std::this_thread::sleep_for(1ms);  // none pending: do not spin
      }
    });
  }
  Thieves(const Thieves&) = delete;
  Thieves& operator=(const Thieves&) = delete;
  ~Thieves() { (void)stop(); }

  // Stops both; returns how many results they took.
  int stop() {
    if (!stop_.exchange(true)) {
      (void)c_.cancel(own_);
      any_.join();
      guess_.join();
    }
    return stolen_;
  }

 private:
  ipc::Client& c_;
  const ipc::TaskId own_;
  std::vector<ipc::TaskId> guesses_;
  std::atomic<int> stolen_{0};
  std::atomic<bool> stop_{false};
  std::thread any_, guess_;
};

// Files of the region directory that belong to `owner` (regions and
// temporaries; not its lease), other than `except`.
std::vector<std::string> regions_of(std::uint64_t owner, const std::string& except) {
  std::vector<std::string> out;
  char prefix[32];
  std::snprintf(prefix, sizeof prefix, "kura_%llx_", static_cast<unsigned long long>(owner));
  for (const std::string& f : shm_entries())
    if (f.rfind(prefix, 0) == 0 && "/" + f != except) out.push_back(f);
  return out;
}

}  // namespace

// Needs the dispatcher that never stops reading a client (issue 15): with
// one that stops reading at 64 parked submits, the answers below wait until
// the long task ends.
TEST_CASE("cancel and try_submit and status are answered at once while 70 submits wait for room",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  const std::uint64_t cap = 3 * sleep_payload();
  EmbeddedDispatcher d(dir, 1, cap);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  constexpr int kWaiting = 70;
  std::vector<Result<ipc::TaskId>> submitted(kWaiting, Status(Code::kIo, "not returned"));
  Threads threads;
  threads.finish = [&] { d.stop(); };
  // The only worker is busy for a minute; three tasks fill the queue.
  const ipc::TaskId busy = c->submit(call("sleep", {num(60)})).value();
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the long task to run");
  const std::vector<ipc::TaskId> queued = try_fill(*c, 3);
  for (int i = 0; i < kWaiting; ++i)
    threads.all.emplace_back([&, i] { submitted[i] = c->submit(call("sleep", {num(0.0)})); });
  // 64 of them reach the dispatcher and wait for room there; the other 6
  // wait in the client. Meanwhile status is answered.
  const std::uint64_t parked = ipc::detail::kMaxParkedSubmits;
  const auto deadline = std::chrono::steady_clock::now() + 20s;
  for (;;) {
    auto s = within(threads, 10s, [&] { return c->status(); });
    REQUIRE(s);  // answered within 10 s
    REQUIRE(s->is_ok());
    REQUIRE((*s)->awaiting <= 3 + parked);
    if ((*s)->awaiting == 3 + parked) break;
    REQUIRE(std::chrono::steady_clock::now() < deadline);
  }
  for (int i = 0; i < 5; ++i) {
    auto s = within(threads, 10s, [&] { return c->status(); });
    REQUIRE(s);
    REQUIRE(s->is_ok());
    CHECK((*s)->awaiting == 3 + parked);  // never more than 64 parked
  }
  auto full = within(threads, 10s, [&] { return c->try_submit(call("sleep", {num(0.0)})); });
  REQUIRE(full);  // answered within 10 s
  REQUIRE(full->is_ok());
  CHECK_FALSE((*full)->has_value());
  // The long task is cancelled at once, not when it ends.
  REQUIRE(c->cancel(busy).is_ok());
  auto cancelled = c->wait_for(busy, 10s);
  REQUIRE(cancelled);
  CHECK(cancelled->outcome() == ipc::Outcome::kCancelled);
  // Then everything drains.
  threads.finish = nullptr;
  for (int i = 0; i < kWaiting; ++i) threads.all[i].join();
  threads.all.erase(threads.all.begin(), threads.all.begin() + kWaiting);
  std::vector<ipc::TaskId> ids = queued;
  for (auto& s : submitted) {
    REQUIRE(s.is_ok());
    ids.push_back(*s);
  }
  for (auto& r : c->wait_all(ids)) CHECK(r.ok());
}

// Needs the dispatcher that never stops reading a client (issue 15).
TEST_CASE("a map under a byte cap whose first input fails ends at once and nothing after it ends ok",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, 3 * sleep_payload());
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  // Input 0 fails at once (a negative sleep); every other sleeps a minute.
  std::vector<std::vector<ipc::Arg>> inputs(150, std::vector<ipc::Arg>{num(60)});
  inputs[0] = {num(-1)};
  Threads threads;
  threads.finish = [&] { d.stop(); };
  auto m = within(threads, 30s, [&] { return c->map("sleep", inputs); });
  REQUIRE(m);  // far sooner than the minute a task takes
  REQUIRE(m->is_ok());
  REQUIRE((*m)->failed);
  CHECK(*(*m)->failed == 0);
  CHECK((*m)->results[0].outcome() == ipc::Outcome::kError);
  std::size_t ok = 0;
  for (std::size_t i = 1; i < inputs.size(); ++i) ok += (*m)->results[i].ok();
  CHECK(ok == 0);
  eventually(
      [&] {
        auto s = status_of(*c);
        return s.executing == 0 && s.awaiting == 0;
      },
      20s, "the map's tasks to be gone from the dispatcher");
}

// With a dispatcher that closes a client with more than 64 submits waiting
// for room, this fails unless map and submit keep to that limit together.
TEST_CASE("map and submits from other threads under a small byte cap keep to the parked limit",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2, 3 * sleep_payload());
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  std::vector<std::vector<ipc::Arg>> inputs;
  for (int i = 0; i < 500; ++i) inputs.push_back({num(0.0)});
  std::vector<Result<ipc::TaskId>> submitted(20, Status(Code::kIo, "not returned"));
  {
    std::vector<std::thread> others;
    for (int i = 0; i < 20; ++i)
      others.emplace_back([&, i] { submitted[i] = c->submit(call("sleep", {num(0.0)})); });
    auto m = c->map("sleep", inputs);
    for (auto& t : others) t.join();
    REQUIRE(m.is_ok());
    CHECK_FALSE(m->failed);
    for (const auto& r : m->results) CHECK(r.ok());
  }
  for (auto& s : submitted) {
    REQUIRE(s.is_ok());
    CHECK(c->wait(*s).ok());
  }
  CHECK(status_of(*c).completed == 520);
}

TEST_CASE("map completes while other threads loop on wait_any", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  std::vector<std::vector<ipc::Arg>> inputs;
  for (int i = 0; i < 100; ++i) inputs.push_back({num(i)});
  Thieves thieves(*c);
  Threads threads;
  threads.finish = [&] { d.stop(); };
  auto m = within(threads, 60s, [&] { return c->map("echo", inputs); });
  REQUIRE(m);
  REQUIRE(m->is_ok());
  CHECK_FALSE((*m)->failed);
  for (int i = 0; i < 100; ++i) {
    const ipc::TaskResult& r = (*m)->results[i];
    REQUIRE(r.ok());
    CHECK(r.value().array<Dtype::kF64>().value()[0] == i);
  }
  CHECK(thieves.stop() == 0);
}

TEST_CASE("a pipeline completes while other threads loop on wait_any", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  ipc::Pipeline p;
  p.map("twice", "scale", {num(2)}).map("again", "scale", {num(3)}).reduce("all", "echo");
  std::vector<ipc::Arg> inputs;
  for (int i = 0; i < 40; ++i) inputs.push_back(num(i));
  Thieves thieves(*c);
  Threads threads;
  threads.finish = [&] { d.stop(); };
  auto r = within(threads, 60s, [&] { return p.run(*c, inputs); });
  REQUIRE(r);
  REQUIRE(r->is_ok());
  REQUIRE_FALSE((*r)->failure);
  REQUIRE((*r)->outputs.size() == 1);
  const NodeView& all = (*r)->outputs[0].value();
  REQUIRE(all.length() == 40);
  for (std::size_t i = 0; i < 40; ++i)
    CHECK(all.child(i).value().array<Dtype::kF64>().value()[0] == 6.0 * static_cast<double>(i));
  CHECK(thieves.stop() == 0);
}

TEST_CASE("calls that wait for the reader are refused at once from the completion callback",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2, 64 * sleep_payload());  // a byte cap: submit waits for admission
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  // One worker sleeps; the other runs the echo whose result calls back.
  const ipc::TaskId other = c->submit(call("sleep", {num(60)})).value();
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the sleep to run");
  struct Seen {
    Result<ipc::TaskId> submit = Status(Code::kIo, "not called");
    Result<std::optional<ipc::TaskId>> try_submit = Status(Code::kIo, "not called");
    Result<ipc::DispatcherStatus> status = Status(Code::kIo, "not called");
    std::optional<ipc::TaskResult> wait, wait_for;
    std::optional<std::pair<ipc::TaskId, ipc::TaskResult>> wait_any, wait_any_ids, wait_any_for;
    std::vector<ipc::TaskResult> wait_all;
    Result<ipc::MapResult> map = Status(Code::kIo, "not called");
    Status everywhere;
    Result<ipc::PipelineResult> pipeline = Status(Code::kIo, "not called");
    Status cancel = Status(Code::kIo, "not called");
  };
  Seen seen;
  std::promise<void> called;
  auto returned = called.get_future();
  std::atomic<bool> once{false};
  ipc::Client* cp = c.get();
  c->on_complete([&, cp](ipc::TaskId) {
    if (once.exchange(true)) return;
    const ipc::TaskId ids[] = {other};
    seen.submit = cp->submit(call("echo", {num(1)}));
    seen.try_submit = cp->try_submit(call("echo", {num(1)}));
    seen.status = cp->status();
    seen.wait = cp->wait(other);
    seen.wait_for = cp->wait_for(other, 10s);
    seen.wait_any = cp->wait_any();
    seen.wait_any_ids = cp->wait_any(ids);
    seen.wait_any_for = cp->wait_any_for(ids, 10s);
    seen.wait_all = cp->wait_all(ids);
    std::vector<std::vector<ipc::Arg>> inputs(2, std::vector<ipc::Arg>{num(1)});
    seen.map = cp->map("echo", inputs);
    seen.everywhere = cp->everywhere(call("echo", {num(1)}));
    ipc::Pipeline p;
    p.map("echo", "echo");
    seen.pipeline = p.run(*cp, {num(1)});
    seen.cancel = cp->cancel(other);  // works from the callback
    called.set_value();
  });
  const ipc::TaskId trigger = c->submit(call("echo", {num(1)})).value();
  if (returned.wait_for(20s) != std::future_status::ready) {
    (void)c.release();  // its reader thread is stuck: leave it, so the test can end
    FAIL("the completion callback did not return within 20 s");
  }
  auto refused = [](const Status& s, const char* what) {
    INFO(what << ": " << s.to_string());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find("cannot be called from the completion callback") != std::string::npos);
  };
  refused(seen.submit.status(), "submit");
  refused(seen.try_submit.status(), "try_submit");
  refused(seen.status.status(), "status");
  refused(seen.map.status(), "map");
  refused(seen.everywhere, "everywhere");
  refused(seen.pipeline.status(), "pipeline");
  auto error_result = [](const ipc::TaskResult& r, const char* what) {
    INFO(what);
    CHECK(r.outcome() == ipc::Outcome::kError);
    CHECK(r.message().find("cannot be called from the completion callback") != std::string::npos);
  };
  REQUIRE(seen.wait);
  error_result(*seen.wait, "wait");
  REQUIRE(seen.wait_for);
  error_result(*seen.wait_for, "wait_for");
  for (auto* any : {&seen.wait_any, &seen.wait_any_ids, &seen.wait_any_for}) {
    REQUIRE(*any);
    CHECK((*any)->first == 0);
    error_result((*any)->second, "wait_any");
  }
  REQUIRE(seen.wait_all.size() == 1);
  error_result(seen.wait_all[0], "wait_all");
  CHECK(seen.cancel.is_ok());
  // The client still works, and its tasks were not lost to the refused waits.
  CHECK(c->wait(other).outcome() == ipc::Outcome::kCancelled);
  CHECK(c->wait(trigger).ok());
  CHECK(status_of(*c).workers.size() == 2);
}

TEST_CASE("submit without a byte cap and cancel work from the completion callback", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  std::promise<std::pair<Result<ipc::TaskId>, Status>> called;
  auto returned = called.get_future();
  std::atomic<bool> once{false};
  ipc::Client* cp = c.get();
  c->on_complete([&, cp](ipc::TaskId) {
    if (once.exchange(true)) return;
    auto next = cp->submit(call("sleep", {num(60)}));
    Status cancelled = next ? cp->cancel(*next) : Status(Code::kIo, "no task to cancel");
    called.set_value({std::move(next), std::move(cancelled)});
  });
  const ipc::TaskId first = c->submit(call("echo", {num(1)})).value();
  if (returned.wait_for(20s) != std::future_status::ready) {
    (void)c.release();
    FAIL("the completion callback did not return within 20 s");
  }
  auto [next, cancelled] = returned.get();
  REQUIRE(next.is_ok());
  CHECK(cancelled.is_ok());
  CHECK(c->wait(first).ok());
  CHECK(c->wait(*next).outcome() == ipc::Outcome::kCancelled);
}

TEST_CASE("a client destroyed with results in flight leaves no region behind", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto watcher = connect(d.socket());
  wait_workers(*watcher, 2);
  std::vector<double> xs(64 * 1024, 1.5);
  auto input = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
  REQUIRE(input.is_ok());
  const std::uint64_t owner = watcher->owner();
  for (int round = 0; round < 50; ++round) {
    auto c = connect(d.socket());
    for (int i = 0; i < 4; ++i)
      REQUIRE(c->submit(call("scale", {ipc::Arg::ref(input->name()), num(i)})).is_ok());
    if (round % 2 == 1) {
      // Half the rounds wait until results are on their way first.
      auto s = c->wait_any();
      REQUIRE(s.second.ok());
    }
  }
  // The dispatcher removes the results of tasks that end after it saw a
  // client go; the client removed those it had been sent.
  eventually([&] { return status_of(*watcher).executing == 0 && status_of(*watcher).awaiting == 0; }, 20s,
             "every task to end");
  eventually([&] { return regions_of(owner, input->name()).empty(); }, 20s,
             "no result region of this process left");
}

TEST_CASE("a child forked without exec does not keep its parent's connection", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  int from_parent[2];
  REQUIRE(::pipe(from_parent) == 0);
  // The "parent" is a helper process: it connects, runs a long task, forks a
  // child that only waits, tells the test both pids, and waits to be killed.
  const pid_t parent = ::fork();
  REQUIRE(parent >= 0);
  if (parent == 0) {
    ::close(from_parent[0]);
    auto pc = ipc::Client::connect(d.socket());
    if (!pc) ::_exit(2);
    if (!(*pc)->submit(call("sleep", {num(120)}))) ::_exit(3);
    const pid_t child = ::fork();
    if (child == 0) {
      for (;;) ::pause();  // killed by the test
    }
    char line[32];
    std::snprintf(line, sizeof line, "%d\n", static_cast<int>(child));
    (void)!::write(from_parent[1], line, std::strlen(line));
    for (;;) ::pause();  // killed by the test
  }
  ::close(from_parent[1]);
  std::string said;
  char ch;
  while (::read(from_parent[0], &ch, 1) == 1 && ch != '\n') said += ch;
  ::close(from_parent[0]);
  const pid_t child = static_cast<pid_t>(std::atoi(said.c_str()));
  struct Reap {
    pid_t parent, child;
    ~Reap() {
      ::kill(parent, SIGKILL);
      ::waitpid(parent, nullptr, 0);
      if (child > 0) ::kill(child, SIGKILL);  // a grandchild: not ours to reap
    }
  } reap{parent, child};
  INFO("the helper said: " << said);
  REQUIRE(child > 0);
  eventually([&] { return status_of(*c).executing == 1; }, 20s, "the helper's task to run");
  ::kill(parent, SIGKILL);
  ::waitpid(parent, nullptr, 0);
  // The dispatcher sees the helper's connection go although its child
  // lives: the task is cancelled and the worker is free again.
  eventually(
      [&] {
        auto s = status_of(*c);
        return s.executing == 0 && s.workers.size() == 1 && s.workers[0].state == "idle";
      },
      20s, "the dead client's task to be cancelled");
  CHECK(process_alive(child));
  // The dead helper's lease goes too (the dispatcher prunes its owner).
  eventually([&] { return guard.new_entries().empty(); }, 20s, "the helper's files to be removed");
}

TEST_CASE("connect says NotFound where no dispatcher listens", "[ipc]") {
  SocketDir dir;
  auto c = ipc::Client::connect(dir.socket());
  REQUIRE_FALSE(c.is_ok());
  INFO(c.status().to_string());
  CHECK(c.status().code() == Code::kNotFound);
}

TEST_CASE("everywhere with no worker returns at once and runs on a worker that joins later",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  auto c = connect(d.socket());
  REQUIRE(c->everywhere(call("set_tag", {ipc::Arg::copy(Value::strings_utf8({"late"}))})).is_ok());
  Process worker({kKura, "worker", "--connect", d.socket(), "--plugin", KURA_TEST_PLUGIN});
  wait_workers(*c, 1);
  auto r = c->wait(c->submit(call("get_tag")).value());
  REQUIRE(r.ok());
  CHECK(std::string(r.value().string(0).value().bytes) == "late");
  // A call that fails on a worker connected now is InvalidArgument, with its message.
  Status bad = c->everywhere(call("fail", {ipc::Arg::copy(Value::strings_utf8({"no model"}))}));
  CHECK(bad.code() == Code::kInvalidArgument);
  CHECK(bad.message().find("no model") != std::string::npos);
}

TEST_CASE("completion_fd counts results from connect on", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  const ipc::TaskId id = c->submit(call("echo", {num(1)})).value();
  const ipc::TaskResult r = c->wait(id);
  REQUIRE(r.ok());
  // Asked for only now, after the result arrived: it is readable already.
  const int fd = c->completion_fd();
  REQUIRE(fd >= 0);
  pollfd p{fd, POLLIN, 0};
  REQUIRE(::poll(&p, 1, 20000) == 1);  // the reader signals it right after waking the waiters
  std::uint64_t n = 0;
  REQUIRE(::read(fd, &n, sizeof n) == static_cast<ssize_t>(sizeof n));
  CHECK(n == 1);
}
