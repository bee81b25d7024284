// XXH3-64 for the format's hashes, in several builds of the same code, and
// the incremental node hashing of the builder's copy-and-hash loop.
// Internal: keeps xxHash out of the public headers.
//
// XXH3 gives the same values whatever vector unit computes them; only the
// speed differs (on one machine here: Debian's libxxhash, built for SSE2,
// about 18 GiB/s; the same code built for AVX-512, 53 GiB/s from cache).
// kura therefore carries xxHash's header-only implementation compiled three
// more times, each in a translation unit of its own with its own target
// flags (xxh3_scalar.cpp, xxh3_avx2.cpp, xxh3_avx512.cpp; see
// xxh3_variant.hpp), and picks the widest one this CPU runs, once, on first
// use. Everything kura hashes goes through that choice.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

#include "kura/core/layout.hpp"

namespace kura::detail {

// Room for an XXH3_state_t of any of the builds (each build checks that its
// state fits, with the same alignment).
struct alignas(64) Xxh3State {
  unsigned char bytes[640];
};

// One build of XXH3-64 with seed 0. A state is used with the functions of
// the build that reset it, and with no other.
struct Xxh3 {
  std::string_view name;  // "avx512", "avx2", "scalar" or "libxxhash" (Debian's, SSE2 on x86-64)
  std::uint64_t (*hash)(const void* data, std::size_t size) noexcept;
  void (*reset)(Xxh3State& state) noexcept;
  void (*update)(Xxh3State& state, const void* data, std::size_t size) noexcept;
  std::uint64_t (*digest)(const Xxh3State& state) noexcept;
};

// The build this process uses: AVX-512 when the CPU (and the OS) support it,
// else AVX2, else libxxhash. Chosen once; thread-safe.
const Xxh3& xxh3() noexcept;

// Every build this CPU can run, the chosen one first (for tests and
// benchmarks, which compare them).
std::span<const Xxh3* const> xxh3_builds() noexcept;

}  // namespace kura::detail

namespace kura {

// Starts a node hash with the node's header (its hash field taken as 0).
void node_hash_begin(detail::Xxh3State& state, const NodeHeader& header) noexcept;
// Adds the next bytes of the node's data block.
inline void node_hash_update(detail::Xxh3State& state, std::span<const std::byte> data) noexcept {
  if (!data.empty()) detail::xxh3().update(state, data.data(), data.size());
}
inline std::uint64_t node_hash_end(detail::Xxh3State& state) noexcept {
  return detail::xxh3().digest(state);
}

}  // namespace kura
