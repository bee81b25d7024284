// Internal to kura_ipc: how the client fills in a TaskResult.
#pragma once

#include <optional>

#include "kura/ipc/task.hpp"

namespace kura::ipc::detail {

struct TaskResultAccess {
  // An ok result holding `value`, and the region it lives in when it came by
  // name.
  static TaskResult make(NodeView value, std::optional<shm::Shared> region) {
    TaskResult r(Outcome::kOk, "");
    r.value_ = std::move(value);
    r.region_ = std::move(region);
    return r;
  }
};

}  // namespace kura::ipc::detail
