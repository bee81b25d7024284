// The body of one build of XXH3-64 (hash_internal.hpp): xxHash's
// header-only implementation, compiled for the vector unit of the including
// translation unit's target flags, behind four functions in the namespace
// kura::detail::KURA_XXH3_BUILD.
//
// Include it from a .cpp of its own and nothing else: every xxHash function
// is static there (XXH_INLINE_ALL), and the file defines no inline function
// with external linkage, so no code compiled for AVX2 or AVX-512 can be
// picked by the linker for a caller on a CPU without them.
#ifndef KURA_XXH3_BUILD
#error "define KURA_XXH3_BUILD (the namespace of this build) before including xxh3_variant.hpp"
#endif

#define XXH_INLINE_ALL
#define XXH_STATIC_LINKING_ONLY
#include <xxhash.h>

#include "hash_internal.hpp"

namespace kura::detail::KURA_XXH3_BUILD {

static_assert(sizeof(XXH3_state_t) <= sizeof(Xxh3State) && alignof(XXH3_state_t) <= alignof(Xxh3State),
              "Xxh3State is too small for this xxHash");

std::uint64_t hash(const void* data, std::size_t size) noexcept {
  return XXH3_64bits(data, size);
}

void reset(Xxh3State& state) noexcept {
  XXH3_64bits_reset(reinterpret_cast<XXH3_state_t*>(state.bytes));
}

void update(Xxh3State& state, const void* data, std::size_t size) noexcept {
  XXH3_64bits_update(reinterpret_cast<XXH3_state_t*>(state.bytes), data, size);
}

std::uint64_t digest(const Xxh3State& state) noexcept {
  return XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state.bytes));
}

}  // namespace kura::detail::KURA_XXH3_BUILD
