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
// checks every node and every string entry, checks the tree rule of
// FORMAT.md section 4 for everything it met (no node header or data block
// reached twice, no two of them overlapping), and, when the region is
// hashed, recomputes each node's hash. Errors: Corrupt, naming the first
// node or the two pieces that failed; OutOfMemory. Reads every byte of the
// value: O(size of the value) time, and memory proportional to the number
// of nodes met (32 bytes per header or block).
Result<VerifyReport> verify(const NodeView& node) noexcept;

}  // namespace kura
