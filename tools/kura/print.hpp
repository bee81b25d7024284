// Human-readable output of `kura get` (the value) and `kura inspect` (the
// node tree). Both walk the region through validated views and spend a
// WalkBudget (nodes met, bytes of headers and blocks, bytes of strings read),
// so a hostile region cannot make them loop or print more than O(region
// size). Every string (value, name, attribute key) is copied out of the
// region once (read_string) and printed from that copy; tags come from the
// node's private header copy. Output is streamed: on error `out` holds what
// was printed before it.
#pragma once

#include <cstdint>
#include <ostream>
#include <string>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/core/view.hpp"

namespace kura::tool {

struct PrintOptions {
  // Print every element and every list child instead of summarising long
  // arrays and lists (first and last few, with the length).
  bool all = false;
};

// Arrays and lists longer than this are summarised unless `all`.
inline constexpr std::uint64_t kSummaryThreshold = 20;
// How many elements are shown at each end of a summarised array or list.
inline constexpr std::uint64_t kSummaryEnds = 5;

// Prints the value at `node`: one line per array, strings or bytes node,
// list children indented below their list, names and attributes below the
// node they belong to. Errors: Corrupt (including an lgl value other than
// 0, 1 and NA, and a spent budget), OutOfMemory.
Status print_value(const NodeView& node, std::ostream& out, const PrintOptions& options) noexcept;

// Prints the node tree at `node`: for each node its offset, kind, dtype,
// length, data block offset and size, hash and tag, then its names node,
// attributes and children indented below it. Errors: Corrupt (including a
// spent budget), OutOfMemory.
Status print_tree(const NodeView& node, std::ostream& out, const PrintOptions& options) noexcept;

// Prints the region header: size, version, flags, node count, creation time
// and creator process.
void print_region_header(const RegionHeader& header, std::ostream& out);

}  // namespace kura::tool
