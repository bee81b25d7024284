// Verification of a value in a region against its hashes (FORMAT.md 5.4).
#pragma once

#include <cstdint>

#include "kura/core/status.hpp"
#include "kura/core/view.hpp"

namespace kura {

struct VerifyReport {
  std::uint64_t nodes = 0;  // nodes checked
  bool hashed = false;      // false: the region has no node hashes, so only
                            // the structure was checked
};

// Walks `node` and everything below it (children, names, attribute nodes),
// checks every node and every string entry, and, when the region is hashed,
// recomputes each node's hash. Errors: Corrupt, naming the first node that
// failed. Reads every byte of the value: O(size of the value).
Result<VerifyReport> verify(const NodeView& node) noexcept;

}  // namespace kura
