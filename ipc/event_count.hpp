// Internal to kura_ipc, never installed: an event count, what a thread that
// hands results to another sleeps on instead of a condition variable.
//
// A waiter woken from std::condition_variable takes its mutex back marked
// as contended (glibc), so its next unlock is a futex system call even when
// nobody else wants the mutex: one system call more per hand-off. Here a
// waiter sleeps on a futex word of its own and takes the mutex afresh.
#pragma once

#include <linux/futex.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <climits>
#include <cstdint>
#include <ctime>
#include <mutex>
#include <optional>

namespace kura::ipc::detail {

class EventCount {
 public:
  using Clock = std::chrono::steady_clock;

  // Wakes every thread sleeping in wait_until() (a system call only when
  // one sleeps). Call it after the change it announces, mutex released or
  // not. Thread-safe.
  void notify_all() noexcept {
    seq_.fetch_add(1, std::memory_order_seq_cst);
    if (sleepers_.load(std::memory_order_seq_cst) != 0)
      ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAKE_PRIVATE, INT_MAX, nullptr,
                nullptr, 0);
  }

  // Waits, `lock` held on entry and on return, until `done()` (called with
  // the lock held) is true or `deadline` passed (none: for ever); returns
  // done(). Every change that can make done() true is made under the lock
  // and followed by notify_all(). Thread-safe.
  template <class Done>
  bool wait_until(std::unique_lock<std::mutex>& lock, std::optional<Clock::time_point> deadline, Done done) {
    for (;;) {
      if (done()) return true;
      if (deadline && Clock::now() >= *deadline) return false;
      // Read under the lock: a change made after this moves seq_ on, so the
      // futex returns at once instead of sleeping through it.
      const std::uint32_t seen = seq_.load(std::memory_order_seq_cst);
      lock.unlock();
      sleep(seen, deadline);
      lock.lock();
    }
  }

 private:
  void sleep(std::uint32_t seen, std::optional<Clock::time_point> deadline) noexcept {
    timespec at{};
    if (deadline) {
      // steady_clock is CLOCK_MONOTONIC, the clock FUTEX_WAIT_BITSET's
      // absolute timeout is read on.
      const auto ns =
          std::chrono::duration_cast<std::chrono::nanoseconds>(deadline->time_since_epoch()).count();
      at.tv_sec = static_cast<time_t>(ns / 1000000000);
      at.tv_nsec = static_cast<long>(ns % 1000000000);
    }
    sleepers_.fetch_add(1, std::memory_order_seq_cst);
    ::syscall(SYS_futex, reinterpret_cast<std::uint32_t*>(&seq_), FUTEX_WAIT_BITSET_PRIVATE, seen,
              deadline ? &at : nullptr, nullptr, FUTEX_BITSET_MATCH_ANY);
    sleepers_.fetch_sub(1, std::memory_order_seq_cst);
  }

  std::atomic<std::uint32_t> seq_{0};
  std::atomic<std::uint32_t> sleepers_{0};
  static_assert(sizeof(std::atomic<std::uint32_t>) == sizeof(std::uint32_t));
};

}  // namespace kura::ipc::detail
