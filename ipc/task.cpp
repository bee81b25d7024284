#include "kura/ipc/task.hpp"

namespace kura::ipc {

namespace {

// Whether s[from, from + n) is lowercase hex, and not all '0' when
// `nonzero`.
bool hex_field(std::string_view s, std::size_t from, std::size_t n, bool nonzero) {
  bool any = false;
  for (std::size_t i = from; i < from + n; ++i) {
    const char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    any = any || c != '0';
  }
  return any || !nonzero;
}

}  // namespace

bool valid_traceparent(std::string_view s) noexcept {
  // 00-<trace id: 32>-<parent id: 16>-<flags: 2>
  return s.size() == 55 && s.substr(0, 3) == "00-" && s[35] == '-' && s[52] == '-' &&
         hex_field(s, 3, 32, true) && hex_field(s, 36, 16, true) && hex_field(s, 53, 2, false);
}

std::string_view outcome_name(Outcome o) noexcept {
  switch (o) {
    case Outcome::kOk: return "ok";
    case Outcome::kError: return "error";
    case Outcome::kTimeout: return "timeout";
    case Outcome::kCancelled: return "cancelled";
    case Outcome::kWorkerLost: return "worker-lost";
    case Outcome::kDisconnected: return "disconnected";
  }
  return "?";
}

const NodeView& TaskResult::value() const noexcept {
  KURA_CHECK(ok() && value_.has_value());
  return *value_;
}

const std::string& TaskResult::name() const noexcept {
  static const std::string kNone;
  return region_ ? region_->name() : kNone;
}

std::optional<shm::Shared> TaskResult::take_region() noexcept {
  std::optional<shm::Shared> r = std::move(region_);
  region_.reset();
  return r;
}

std::string TaskResult::describe() const {
  std::string s(outcome_name(outcome_));
  if (!message_.empty()) s += ": " + message_;
  return s;
}

}  // namespace kura::ipc
