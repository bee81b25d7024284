// The two hashes of FORMAT.md: XXH3-64 with seed 0.
#pragma once

#include <cstddef>
#include <cstdint>
#include <span>
#include <string_view>

namespace kura {

// XXH3-64 of the first 56 bytes of a region header (its `header_hash`).
// REQUIRES: header.size() >= 56.
std::uint64_t region_header_hash(std::span<const std::byte> header) noexcept;

// A node's `hash`: XXH3-64 of its 64 header bytes with the hash field taken
// as 0, followed by its data block. REQUIRES: header.size() == 64.
std::uint64_t node_hash(std::span<const std::byte> header, std::span<const std::byte> data) noexcept;

// XXH3-64 (seed 0) of `bytes`: the checksum of bytes in transit (a chunk
// of a region crossing the network).
std::uint64_t checksum64(std::span<const std::byte> bytes) noexcept;

// Which build of XXH3 computes these hashes in this process, chosen once at
// run time for the widest vector unit the CPU has: "avx512", "avx2", or
// "libxxhash" (the system's). Every build gives the same values.
std::string_view hash_implementation() noexcept;

}  // namespace kura
