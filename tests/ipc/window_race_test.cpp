// Tasks sent to wait on workers (DispatcherOptions::worker_window) while
// everything else happens at once, with real processes: cancels, timeouts,
// retries, workers killed, tasks asked back for idle workers, clients that
// leave with tasks waiting on workers, and set-up calls. Every task ends
// exactly once, with an outcome it may have, and the counters come back to
// rest.
#include <signal.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <map>
#include <random>
#include <set>
#include <thread>

#include "ipc_util.hpp"
#include "objects_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

TEST_CASE("with worker windows every task ends once with an outcome it may have whatever races it",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  const std::uint32_t window = GENERATE(2u, 8u);
  EmbeddedDispatcher d(dir, 3, [&](ipc::DispatcherOptions& o) { o.worker_window = window; });
  auto c = connect(d.socket());
  wait_workers(*c, 3);
  // Set-up calls all along, from a client of their own: a worker with
  // tasks takes no more until it ran the call after them.
  std::atomic<bool> stop_setups{false};
  std::atomic<int> setups{0};
  // Each from a client that then leaves: the dispatcher keeps a client's
  // calls while it is connected, up to a bound.
  std::thread setter([&] {
    while (!stop_setups.load()) {
      auto sc = ipc::Client::connect(d.socket());
      if (!sc.is_ok()) return;
      (void)(*sc)->everywhere(call("echo", {num(0)}));
      ++setups;
    }
  });
  struct Joined {
    std::atomic<bool>& stop;
    std::thread& t;
    ~Joined() {
      stop.store(true);
      if (t.joinable()) t.join();
    }
  } joined{stop_setups, setter};
  const std::uint64_t seed = std::random_device{}();
  INFO("seed " << seed << ", window " << window);
  std::mt19937_64 rng(seed);
  auto chance = [&](int percent) { return static_cast<int>(rng() % 100) < percent; };

  struct Sent {
    int input = 0;
    bool echo = true;    // else a short sleep
    bool timed = false;  // it has a timeout
    bool cancelled = false;
  };
  constexpr int kTasks = 8000;
  constexpr std::size_t kInFlight = 100;
  std::map<ipc::TaskId, Sent> open;
  std::set<ipc::TaskId> seen;
  std::set<std::int64_t> killed;
  int next = 0, done = 0, ok = 0, cancelled = 0, timed_out = 0, lost = 0, kills = 0, leavers = 0;
  const auto deadline = std::chrono::steady_clock::now() + 120s;
  while (done < kTasks) {
    REQUIRE(std::chrono::steady_clock::now() < deadline);
    while (next < kTasks && open.size() < kInFlight) {
      Sent s;
      s.input = next++;
      s.echo = !chance(15);
      ipc::TaskOptions o;
      o.retries = static_cast<unsigned>(rng() % 3);
      if (chance(10)) {
        s.timed = true;
        o.timeout = std::chrono::milliseconds(1 + rng() % 40);
      }
      auto id =
          c->submit(s.echo ? call("echo", {num(s.input)}) : call("sleep", {num(0.001 * (rng() % 30))}), o);
      REQUIRE(id.is_ok());
      open[*id] = s;
    }
    // Cancel one that may be queued, waiting on a worker, running or done.
    if (chance(8) && !open.empty()) {
      auto it = std::next(open.begin(), static_cast<long>(rng() % open.size()));
      it->second.cancelled = true;
      REQUIRE(c->cancel(it->first).is_ok());
    }
    // A client that leaves with tasks queued and waiting on workers.
    if (chance(1)) {
      auto leaver = connect(d.socket());
      for (int i = 0; i < 8; ++i) REQUIRE(leaver->submit(call("sleep", {num(1.0)})).is_ok());
      ++leavers;
    }
    auto [id, r] = c->wait_any();
    REQUIRE(seen.insert(id).second);  // never twice
    auto it = open.find(id);
    REQUIRE(it != open.end());
    const Sent s = it->second;
    open.erase(it);
    ++done;
    INFO("task " << s.input << ": " << r.describe());
    switch (r.outcome()) {
      case ipc::Outcome::kOk:
        if (s.echo) CHECK(number(r) == s.input);
        ++ok;
        break;
      case ipc::Outcome::kCancelled:
        CHECK(s.cancelled);
        ++cancelled;
        break;
      case ipc::Outcome::kTimeout:
        CHECK(s.timed);
        ++timed_out;
        break;
      case ipc::Outcome::kWorkerLost: ++lost; break;
      default: FAIL("an outcome no task here may have");
    }
    if (done % 200 == 0 && done < kTasks) {
      for (const auto& w : status_of(*c).workers) {
        if (killed.insert(w.pid).second) {
          ::kill(static_cast<pid_t>(w.pid), SIGKILL);
          ++kills;
          break;
        }
      }
    }
  }
  stop_setups.store(true);
  setter.join();
  INFO("ok " << ok << ", cancelled " << cancelled << ", timed out " << timed_out << ", worker-lost " << lost
             << ", kills " << kills << ", clients that left " << leavers << ", set-up calls "
             << setups.load());
  CHECK(setups.load() > 0);
  CHECK(ok + cancelled + timed_out + lost == kTasks);
  CHECK(kills >= kTasks / 200 - 2);
  // Back at rest: nothing queued, running or waiting on a worker, and every
  // worker idle (none held by a task the dispatcher forgot).
  eventually(
      [&] {
        auto st = c->status();
        if (!st || st->workers.size() != 3 || st->awaiting != 0 || st->executing != 0 ||
            st->waiting_on_workers != 0)
          return false;
        for (const auto& w : st->workers)
          if (w.state != "idle") return false;
        return true;
      },
      30s, "3 idle workers and no task left");
  auto rest = status_of(*c);
  CHECK(rest.completed == static_cast<std::uint64_t>(kTasks));
  CHECK(rest.workers_dropped == 0);  // none broke the protocol
  // And it still works.
  auto last = c->wait_for(c->submit(call("echo", {num(-1)})).value(), 30s);
  REQUIRE(last.has_value());
  INFO(last->describe());
  CHECK(last->ok());
}

TEST_CASE("a set-up call runs on a worker after the tasks waiting on it and before any task after the call",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2, [](ipc::DispatcherOptions& o) { o.worker_window = 4; },
                       {"--plugin", KURA_TEST_PLUGIN});
  auto c = connect(d.socket());
  auto setter = connect(d.socket());
  wait_workers(*c, 2);
  for (int round = 0; round < 5; ++round) {
    const std::string tag = "tag " + std::to_string(round);
    INFO(tag);
    // Both workers busy, with tasks waiting on them and in the queue.
    std::vector<ipc::TaskId> before;
    for (int i = 0; i < 2; ++i) before.push_back(c->submit(call("sleep", {num(0.05)})).value());
    for (int i = 0; i < 12; ++i) before.push_back(c->submit(call("get_tag")).value());
    REQUIRE(setter->everywhere(call("set_tag", {ipc::Arg::copy(Value::strings_utf8({tag}))})).is_ok());
    std::vector<ipc::TaskId> after;
    for (int i = 0; i < 12; ++i) after.push_back(c->submit(call("get_tag")).value());
    for (ipc::TaskId id : before) {
      auto r = c->wait_for(id, 30s);
      REQUIRE(r.has_value());
      CHECK(r->ok());
    }
    for (ipc::TaskId id : after) {
      auto r = c->wait_for(id, 30s);
      REQUIRE(r.has_value());
      CHECK(tag_of(*r) == tag);
    }
  }
  auto s = status_of(*c);
  CHECK(s.workers_dropped == 0);
  CHECK(s.cumulative == 2);
}

TEST_CASE("a remote worker with tasks waiting on it pulls and pushes for each as it runs it",
          "[ipc][multiprocess][tcp][objects]") {
  ShmGuard guard;
  SocketDir dir;
  RemoteDir remote;
  const std::string secret = make_secret(dir);
  EmbeddedDispatcher d(dir, 0, [&](ipc::DispatcherOptions& o) {
    on_loopback(secret)(o);
    o.worker_window = 4;
  });
  auto worker = remote_worker(remote, d.get().tcp_address(), secret);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  // Names the worker cannot map: each task pulls its argument when it
  // runs, and pushes its result (over the inline limit) back.
  constexpr std::size_t kN = 100000;
  std::vector<shm::Shared> inputs;
  for (int j = 0; j < 3; ++j) inputs.push_back(share_f64(kN, 1.0 + j));
  std::vector<std::pair<ipc::TaskId, double>> sent;
  for (int k = 1; k <= 12; ++k) {
    auto id = c->submit(call("scale", {ipc::Arg::ref(inputs[k % 3].name()), num(k)}));
    REQUIRE(id.is_ok());
    sent.emplace_back(*id, (1.0 + k % 3) * k);
  }
  for (auto [id, want] : sent) {
    auto r = c->wait_for(id, 60s);
    REQUIRE(r.has_value());
    INFO(r->describe() << "\n" << worker->err());
    REQUIRE(r->ok());
    CHECK(f64_at(r->value(), 1) == want);
  }
  auto s = status_of(*c);
  CHECK(s.workers_dropped == 0);
  CHECK(s.cumulative == 1);
  CHECK(s.pulls >= 3);
  CHECK(s.pushed_bytes >= 12 * kN * sizeof(double));
}
