// Path-form names (FORMAT.md section 1): "/kura_<owner>_<counter>[i,j,...]".
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/status.hpp"

namespace kura {

inline constexpr std::size_t kMaxNameLength = 1024;
inline constexpr std::size_t kMaxPathIndices = 64;
inline constexpr std::uint64_t kMaxIndex = 0x7FFFFFFFFFFFFFFFull;  // 2^63-1

// A parsed name. `path` holds the 1-based indices exactly as written; an
// empty path names the root of the region.
struct Name {
  std::uint64_t owner = 0;
  std::uint64_t counter = 0;
  std::vector<std::uint64_t> path;

  // The name of the region alone, without the path.
  Name region() const { return Name{owner, counter, {}}; }
  bool operator==(const Name&) const = default;
};

// Parses `text` per the grammar of FORMAT.md section 1. Anything that does not
// match it exactly is InvalidName, with a message saying where and why.
// OutOfMemory when the path or a message cannot be allocated.
Result<Name> parse_name(std::string_view text) noexcept;

// Formats `name`. REQUIRES: every index in 1..2^63-1 and at most 64 indices,
// so that parse_name(format_name(n)) == n.
std::string format_name(const Name& name);

// "/kura_<owner>_<counter>": the region part of a name.
std::string format_region_name(std::uint64_t owner, std::uint64_t counter);

}  // namespace kura
