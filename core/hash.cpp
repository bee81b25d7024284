#include "kura/core/hash.hpp"

#include <cstring>

#include "hash_internal.hpp"
#include "kura/core/status.hpp"

namespace kura {

std::uint64_t region_header_hash(std::span<const std::byte> header) noexcept {
  KURA_CHECK(header.size() >= 56);
  return XXH3_64bits(header.data(), 56);
}

void node_hash_begin(XXH3_state_t& state, const NodeHeader& header) noexcept {
  NodeHeader copy = header;
  copy.hash = 0;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, &copy, sizeof copy);
}

std::uint64_t node_hash(std::span<const std::byte> header, std::span<const std::byte> data) noexcept {
  KURA_CHECK(header.size() == kHeaderSize);
  NodeHeader h;
  std::memcpy(&h, header.data(), sizeof h);
  XXH3_state_t state;
  node_hash_begin(state, h);
  node_hash_update(state, data);
  return node_hash_end(state);
}

}  // namespace kura
