// The event count the client's waiting threads and the worker's executor
// sleep on (ipc/event_count.hpp): no wake-up is lost between a waiter's
// check and its sleep, every sleeper wakes, and a deadline is kept.
#include "event_count.hpp"

#include <catch2/catch.hpp>
#include <chrono>
#include <future>
#include <mutex>
#include <thread>
#include <vector>

using kura::ipc::detail::EventCount;
using namespace std::chrono_literals;

TEST_CASE("an event count loses no wake-up in a ping-pong of 20000 hand-offs", "[ipc]") {
  std::mutex mu;
  EventCount to_b, to_a;
  int turn = 0;  // even: A's move, odd: B's
  constexpr int kRounds = 10000;
  auto b = std::async(std::launch::async, [&] {
    std::unique_lock<std::mutex> lock(mu);
    for (int i = 0; i < kRounds; ++i) {
      to_b.wait_until(lock, std::nullopt, [&] { return turn % 2 == 1; });
      ++turn;
      to_a.notify_all();  // with the lock held: allowed
    }
  });
  auto a = std::async(std::launch::async, [&] {
    std::unique_lock<std::mutex> lock(mu);
    for (int i = 0; i < kRounds; ++i) {
      to_a.wait_until(lock, std::nullopt, [&] { return turn % 2 == 0; });
      ++turn;
      lock.unlock();
      to_b.notify_all();  // and without it
      lock.lock();
    }
  });
  // A lost wake-up leaves both asleep for ever.
  REQUIRE(a.wait_for(60s) == std::future_status::ready);
  REQUIRE(b.wait_for(60s) == std::future_status::ready);
  CHECK(turn == 2 * kRounds);
}

TEST_CASE("one notify wakes every thread that sleeps on an event count", "[ipc]") {
  std::mutex mu;
  EventCount ec, arrivals;
  int arrived = 0;
  bool go = false;
  std::vector<std::future<bool>> sleepers;
  for (int i = 0; i < 4; ++i)
    sleepers.push_back(std::async(std::launch::async, [&] {
      std::unique_lock<std::mutex> lock(mu);
      ++arrived;
      arrivals.notify_all();
      return ec.wait_until(lock, std::nullopt, [&] { return go; });
    }));
  {
    // Once all four arrived, each has read the count under the lock: it
    // sleeps, or is about to and returns at once.
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(arrivals.wait_until(lock, EventCount::Clock::now() + 30s, [&] { return arrived == 4; }));
    go = true;
  }
  ec.notify_all();
  for (auto& s : sleepers) {
    REQUIRE(s.wait_for(30s) == std::future_status::ready);
    CHECK(s.get());
  }
}

TEST_CASE("an event count's wait ends at its deadline, not before, when nothing changes", "[ipc]") {
  std::mutex mu;
  EventCount ec;
  std::unique_lock<std::mutex> lock(mu);
  const auto start = EventCount::Clock::now();
  const bool done = ec.wait_until(lock, start + 150ms, [] { return false; });
  const auto took = EventCount::Clock::now() - start;
  CHECK_FALSE(done);
  CHECK(lock.owns_lock());
  CHECK(took >= 150ms);
  CHECK(took < 10s);
  // A deadline already past: false at once, without sleeping.
  CHECK_FALSE(ec.wait_until(lock, start, [] { return false; }));
  CHECK(ec.wait_until(lock, start, [] { return true; }));
}
