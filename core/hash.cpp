#include "kura/core/hash.hpp"

#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t's size, for the libxxhash build
#include <xxhash.h>

#include <array>
#include <cstring>

#include "hash_internal.hpp"
#include "kura/core/status.hpp"

namespace kura {
namespace detail {

// The builds compiled in their own translation units (xxh3_variant.hpp).
#define KURA_DECLARE_XXH3_BUILD(ns)                                           \
  namespace ns {                                                              \
  std::uint64_t hash(const void* data, std::size_t size) noexcept;            \
  void reset(Xxh3State& state) noexcept;                                      \
  void update(Xxh3State& state, const void* data, std::size_t size) noexcept; \
  std::uint64_t digest(const Xxh3State& state) noexcept;                      \
  }
KURA_DECLARE_XXH3_BUILD(xxh3_scalar)
#if KURA_XXH3_X86
KURA_DECLARE_XXH3_BUILD(xxh3_avx2)
KURA_DECLARE_XXH3_BUILD(xxh3_avx512)
#endif
#undef KURA_DECLARE_XXH3_BUILD

namespace {

// Debian's shared libxxhash: the build every machine can run.
static_assert(sizeof(XXH3_state_t) <= sizeof(Xxh3State) && alignof(XXH3_state_t) <= alignof(Xxh3State));

std::uint64_t lib_hash(const void* data, std::size_t size) noexcept {
  return XXH3_64bits(data, size);
}
void lib_reset(Xxh3State& state) noexcept {
  XXH3_64bits_reset(reinterpret_cast<XXH3_state_t*>(state.bytes));
}
void lib_update(Xxh3State& state, const void* data, std::size_t size) noexcept {
  XXH3_64bits_update(reinterpret_cast<XXH3_state_t*>(state.bytes), data, size);
}
std::uint64_t lib_digest(const Xxh3State& state) noexcept {
  return XXH3_64bits_digest(reinterpret_cast<const XXH3_state_t*>(state.bytes));
}

constexpr Xxh3 kLibxxhash{"libxxhash", lib_hash, lib_reset, lib_update, lib_digest};
constexpr Xxh3 kScalar{"scalar", xxh3_scalar::hash, xxh3_scalar::reset, xxh3_scalar::update,
                       xxh3_scalar::digest};
#if KURA_XXH3_X86
constexpr Xxh3 kAvx2{"avx2", xxh3_avx2::hash, xxh3_avx2::reset, xxh3_avx2::update, xxh3_avx2::digest};
constexpr Xxh3 kAvx512{"avx512", xxh3_avx512::hash, xxh3_avx512::reset, xxh3_avx512::update,
                       xxh3_avx512::digest};
#endif

// The builds this CPU runs, widest first. __builtin_cpu_supports asks
// cpuid, and for AVX and AVX-512 also whether the OS saves their registers
// (xgetbv), so a build is listed only where its instructions work.
struct Builds {
  std::array<const Xxh3*, 4> list{};
  std::size_t count = 0;
  Builds() noexcept {
#if KURA_XXH3_X86
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) list[count++] = &kAvx512;
    if (__builtin_cpu_supports("avx2")) list[count++] = &kAvx2;
#endif
    list[count++] = &kLibxxhash;
    list[count++] = &kScalar;
  }
};

const Builds& builds() noexcept {
  static const Builds b;
  return b;
}

}  // namespace

const Xxh3& xxh3() noexcept {
  static const Xxh3& chosen = *builds().list[0];
  return chosen;
}

std::span<const Xxh3* const> xxh3_builds() noexcept {
  const Builds& b = builds();
  return {b.list.data(), b.count};
}

}  // namespace detail

std::string_view hash_implementation() noexcept {
  return detail::xxh3().name;
}

std::uint64_t region_header_hash(std::span<const std::byte> header) noexcept {
  KURA_CHECK(header.size() >= 56);
  return detail::xxh3().hash(header.data(), 56);
}

std::uint64_t checksum64(std::span<const std::byte> bytes) noexcept {
  return detail::xxh3().hash(bytes.data(), bytes.size());
}

void node_hash_begin(detail::Xxh3State& state, const NodeHeader& header) noexcept {
  NodeHeader copy = header;
  copy.hash = 0;
  detail::xxh3().reset(state);
  detail::xxh3().update(state, &copy, sizeof copy);
}

std::uint64_t node_hash(std::span<const std::byte> header, std::span<const std::byte> data) noexcept {
  KURA_CHECK(header.size() == kHeaderSize);
  NodeHeader h;
  std::memcpy(&h, header.data(), sizeof h);
  detail::Xxh3State state;
  node_hash_begin(state, h);
  node_hash_update(state, data);
  return node_hash_end(state);
}

}  // namespace kura
