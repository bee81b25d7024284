#include "kura/ipc/task.hpp"

namespace kura::ipc {

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
