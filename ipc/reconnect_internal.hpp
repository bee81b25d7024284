// Internal to kura_ipc: how a worker whose connection to the dispatcher
// dropped connects again (docs/design.md "Workers over TCP"): which
// failures end it for good, and the back-off between attempts. Pure: no
// libuv, no I/O.
#pragma once

#include <cstdint>

#include "kura/core/status.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

// The first wait before connecting again, and the most any wait grows to.
inline constexpr std::uint64_t kReconnectFirstMs = 100;
inline constexpr std::uint64_t kReconnectCapMs = 5000;

// Exponential back-off with jitter: the n-th wait (from 0) is drawn
// uniformly from [d/2, d], d = min(cap, first x 2^n). Never 0, and the
// waits of workers that lost the same dispatcher spread out, so that one
// that comes back is not met by all of them at once. Not thread-safe.
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

}  // namespace kura::ipc::detail
