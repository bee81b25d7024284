// Incremental node hashing, for the builder's copy-and-hash loop. Internal:
// keeps xxHash out of the public headers.
#pragma once

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstddef>
#include <cstdint>
#include <span>

#include "kura/core/layout.hpp"

namespace kura {

// Starts a node hash with the node's header (its hash field taken as 0).
void node_hash_begin(XXH3_state_t& state, const NodeHeader& header) noexcept;
// Adds the next bytes of the node's data block.
inline void node_hash_update(XXH3_state_t& state, std::span<const std::byte> data) noexcept {
  if (!data.empty()) XXH3_64bits_update(&state, data.data(), data.size());
}
inline std::uint64_t node_hash_end(XXH3_state_t& state) noexcept {
  return XXH3_64bits_digest(&state);
}

}  // namespace kura
