// How a worker keeps its connection to the dispatcher (reconnect_internal.hpp):
// what ends it for good, the back-off and window of connecting again, and
// noticing a dispatcher gone silent.
#include <algorithm>
#include <cstdio>

#include "reconnect_internal.hpp"

namespace kura::ipc::detail {

namespace {

void close_timer(uv_timer_t* t) {
  if (!uv_is_closing(reinterpret_cast<uv_handle_t*>(t))) uv_close(reinterpret_cast<uv_handle_t*>(t), nullptr);
}

}  // namespace

std::uint64_t Backoff::next_ms() noexcept {
  const std::uint32_t doublings = std::min<std::uint32_t>(attempts_, 20);
  ++attempts_;
  const std::uint64_t d = std::min(cap_ms_, first_ms_ << doublings);
  // splitmix64: enough for jitter, which needs spread, not secrecy.
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const std::uint64_t half = d / 2;
  return std::max<std::uint64_t>(1, half + z % (d - half + 1));
}

bool connect_failure_is_final(const Status& s) noexcept {
  switch (s.code()) {
    case Code::kPermission:
    case Code::kCorrupt:
    case Code::kInvalidArgument: return true;
    default: return false;
  }
}

bool close_is_final(CloseReason why) noexcept {
  return why == CloseReason::kProtocol;
}

// --- Redial ---------------------------------------------------------------------------

Redial::Redial(uv_loop_t* loop, std::uint64_t window_ms, std::string where, LogFn log, Callbacks cb,
               std::uint64_t seed)
    : loop_(loop),
      window_ms_(window_ms),
      where_(std::move(where)),
      log_(std::move(log)),
      cb_(std::move(cb)),
      backoff_(kReconnectFirstMs, kReconnectCapMs, seed) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

std::string Redial::window() const {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.3g s", static_cast<double>(window_ms_) / 1000);
  return buf;
}

void Redial::dropped(CloseReason reason, const Status& why, bool wait_for_function) {
  last_failure_ = why;
  if (active()) return retry_later();
  lost_at_ms_ = uv_now(loop_);
  log_("lost the connection to the dispatcher at " + where_ + " (" + std::string(close_reason_name(reason)) +
       ": " + why.message() + "); reconnecting for up to " + window());
  if (!wait_for_function) return retry_later();
  uv_timer_start(
      &timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<Redial*>(t->data);
        const Status why(Code::kIo, "the function that ran when the connection to the dispatcher at " +
                                        self->where_ + " dropped still runs after " + self->window());
        self->log_("gave up: " + why.message() + "; exiting");
        self->cb_.give_up(why);
      },
      window_ms_, 0);
}

void Redial::failed(const Status& why) {
  last_failure_ = why;
  retry_later();
}

void Redial::function_returned() {
  uv_timer_stop(&timer_);
  retry_later();
}

void Redial::welcomed() {
  if (active())
    log_("reconnected to the dispatcher at " + where_ + " after " +
         std::to_string(uv_now(loop_) - lost_at_ms_) + " ms (" + std::to_string(backoff_.attempts()) +
         " attempts)");
  lost_at_ms_ = 0;
  backoff_.reset();
}

void Redial::retry_later() {
  const std::uint64_t spent = uv_now(loop_) - lost_at_ms_;
  if (spent >= window_ms_) {
    const Status why(Code::kIo, "could not reconnect to the dispatcher at " + where_ + " within " + window() +
                                    " (" + std::to_string(backoff_.attempts()) +
                                    " attempts; the last: " + last_failure_.message() + ")");
    log_("gave up: " + why.message() + "; exiting");
    return cb_.give_up(why);
  }
  uv_timer_start(
      &timer_, [](uv_timer_t* t) { static_cast<Redial*>(t->data)->cb_.connect(); },
      std::min(backoff_.next_ms(), window_ms_ - spent), 0);
}

void Redial::close() {
  close_timer(&timer_);
}

// --- SilenceWatch -----------------------------------------------------------------------

SilenceWatch::SilenceWatch(uv_loop_t* loop) : loop_(loop) {
  uv_timer_init(loop_, &timer_);
  timer_.data = this;
}

void SilenceWatch::start(std::uint32_t deadline_ms, std::function<void(const Status&)> on_silent) {
  deadline_ms_ = deadline_ms;
  every_ms_ = std::max<std::uint64_t>(10, deadline_ms / 4);
  on_silent_ = std::move(on_silent);
  last_heard_ms_ = last_check_ms_ = uv_now(loop_);
  uv_timer_start(
      &timer_, [](uv_timer_t* t) { static_cast<SilenceWatch*>(t->data)->check(); }, every_ms_, every_ms_);
}

void SilenceWatch::check() {
  const std::uint64_t now = uv_now(loop_);
  if (now - last_check_ms_ > every_ms_ + deadline_ms_ / 2) last_heard_ms_ = now;
  last_check_ms_ = now;
  if (now - last_heard_ms_ <= deadline_ms_) return;
  uv_timer_stop(&timer_);
  on_silent_(Status(Code::kIo, "the dispatcher sent nothing for " + std::to_string(now - last_heard_ms_) +
                                   " ms (the deadline is " + std::to_string(deadline_ms_) + " ms)"));
}

void SilenceWatch::stop() {
  uv_timer_stop(&timer_);
}

void SilenceWatch::close() {
  close_timer(&timer_);
}

}  // namespace kura::ipc::detail
