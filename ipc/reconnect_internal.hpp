// Internal to kura_ipc: how a worker keeps its connection to the dispatcher
// (docs/design.md "Workers over TCP"): which failures end it for good, the
// back-off between attempts to connect again and the window they are made
// in (Redial), and noticing a dispatcher gone silent (SilenceWatch). The
// worker's loop (worker.cpp) drives them.
#pragma once

#include <cstdint>
#include <functional>
#include <string>

#include "kura/core/status.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

// The first wait before connecting again, and the most any wait grows to.
inline constexpr std::uint64_t kReconnectFirstMs = 100;
inline constexpr std::uint64_t kReconnectCapMs = 5000;

// Exponential back-off with jitter: the n-th wait (from 0) is drawn
// uniformly from [d/2, d], d = min(cap, first x 2^n). Never 0, and the
// waits of workers that lost the same dispatcher spread out, so that one
// that comes back is not met by all of them at once. Pure; not thread-safe.
class Backoff {
 public:
  // REQUIRES: 0 < first_ms <= cap_ms. `seed` picks the jitter.
  Backoff(std::uint64_t first_ms, std::uint64_t cap_ms, std::uint64_t seed) noexcept
      : first_ms_(first_ms), cap_ms_(cap_ms), state_(seed) {}
  // The next wait, in milliseconds.
  std::uint64_t next_ms() noexcept;
  // Starts again from the first wait (after a connection that worked).
  void reset() noexcept { attempts_ = 0; }
  // Waits handed out since the last reset.
  std::uint32_t attempts() const noexcept { return attempts_; }

 private:
  std::uint64_t first_ms_;
  std::uint64_t cap_ms_;
  std::uint64_t state_;  // splitmix64
  std::uint32_t attempts_ = 0;
};

// True when a connect that failed with `s` is not worth repeating: the
// listener answered and refused (Permission: a wrong secret, or a socket of
// another user), what answered is not kura (Corrupt), or this side's own
// settings are wrong (InvalidArgument: say, no secret file). Nobody
// listening (NotFound) and network errors (Io) may pass: those are retried.
bool connect_failure_is_final(const Status& s) noexcept;

// True when a connection that closed for `why` (without kGoodbye or
// kRefused) is not worth opening again: the dispatcher sent what this
// worker cannot read (kProtocol), and would again. Every other reason (the
// peer closed or reset it, a silent dispatcher, a full write queue, no
// memory for a frame) may pass, and is retried.
bool close_is_final(CloseReason why) noexcept;

// Connecting again after a drop, for at most a window of time since it:
// the waits between attempts (Backoff) and the log lines that say what
// happens. Its owner makes each attempt and reports how it went. Loop
// thread only; the object must not move once made.
class Redial {
 public:
  struct Callbacks {
    // Make one attempt; its outcome comes back as failed() or welcomed().
    std::function<void()> connect;
    // The window is over (logged already): `why` says what was tried.
    std::function<void(const Status& why)> give_up;
  };
  // `where` names the dispatcher in log lines; `seed` picks the jitter.
  Redial(uv_loop_t* loop, std::uint64_t window_ms, std::string where, LogFn log, Callbacks cb,
         std::uint64_t seed);

  // True from a drop until a connection is welcomed again.
  bool active() const noexcept { return lost_at_ms_ != 0; }
  // The window (0: a drop is not retried; the owner does not call dropped()).
  std::uint64_t window_ms() const noexcept { return window_ms_; }
  // The connection closed for `reason`, `why`: the first drop is logged and
  // starts the window; while active, it is one more failed attempt. The
  // next attempt follows a back-off, or, when `wait_for_function`, once
  // function_returned() is called (give_up at the window's end if never).
  void dropped(CloseReason reason, const Status& why, bool wait_for_function);
  // An attempt failed with `why`: the next follows a back-off, or give_up
  // is called once the window is over (one last attempt is made at its end).
  void failed(const Status& why);
  // The function dropped() waited for returned.
  void function_returned();
  // A connection was welcomed: logged when it ends a drop; the back-off
  // starts again from its first wait.
  void welcomed();
  // Closes the timer handle (the loop can end).
  void close();

 private:
  void retry_later();
  std::string window() const;

  uv_loop_t* loop_;
  uv_timer_t timer_{};
  std::uint64_t window_ms_;
  std::string where_;
  LogFn log_;
  Callbacks cb_;
  Backoff backoff_;
  std::uint64_t lost_at_ms_ = 0;  // uv_now at the drop; 0 while connected
  Status last_failure_;
};

// Notices a dispatcher gone silent: the owner calls heard() for every frame
// that arrives; when nothing arrived for the deadline, on_silent is called
// (the owner closes the connection with kTimeout). Checked four times per
// deadline; a check that comes late because this process was held up (a
// stopped process, a stalled machine: what arrived meanwhile is still
// unread) starts the clock again, as the dispatcher's sweep does. Loop
// thread only; the object must not move once made.
class SilenceWatch {
 public:
  explicit SilenceWatch(uv_loop_t* loop);
  // Starts watching with `deadline_ms` (> 0).
  void start(std::uint32_t deadline_ms, std::function<void(const Status& why)> on_silent);
  void heard() noexcept { last_heard_ms_ = uv_now(loop_); }
  void stop();
  // Closes the timer handle (the loop can end).
  void close();

 private:
  void check();

  uv_loop_t* loop_;
  uv_timer_t timer_{};
  std::uint32_t deadline_ms_ = 0;
  std::uint64_t every_ms_ = 0;
  std::uint64_t last_heard_ms_ = 0;
  std::uint64_t last_check_ms_ = 0;
  std::function<void(const Status&)> on_silent_;
};

}  // namespace kura::ipc::detail
