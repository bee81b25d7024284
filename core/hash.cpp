#include "kura/core/hash.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <cstring>

#include "kura/core/layout.hpp"
#include "kura/core/status.hpp"

namespace kura {

std::uint64_t region_header_hash(std::span<const std::byte> header) noexcept {
  KURA_CHECK(header.size() >= 56);
  return XXH3_64bits(header.data(), 56);
}

std::uint64_t node_hash(std::span<const std::byte> header, std::span<const std::byte> data) noexcept {
  KURA_CHECK(header.size() == kHeaderSize);
  unsigned char copy[kHeaderSize];
  std::memcpy(copy, header.data(), kHeaderSize);
  std::memset(copy + offsetof(NodeHeader, hash), 0, sizeof(std::uint64_t));
  XXH3_state_t state;
  XXH3_64bits_reset(&state);
  XXH3_64bits_update(&state, copy, kHeaderSize);
  if (!data.empty()) XXH3_64bits_update(&state, data.data(), data.size());
  return XXH3_64bits_digest(&state);
}

}  // namespace kura
