// The byte layout of FORMAT.md sections 2-4: the region header, the node
// header, the string entry, kinds and dtypes.
//
// These structs mirror bytes shared between processes and implementations.
// No field may move: every size and offset is static_assert'ed below, and
// any change to them is a new format version (kFormatVersion).
#pragma once

#include <bit>
#include <cstddef>
#include <cstdint>
#include <optional>
#include <string_view>

namespace kura {

static_assert(std::endian::native == std::endian::little,
              "the kura format is little-endian; big-endian hosts are not supported");

inline constexpr std::uint16_t kFormatVersion = 1;
inline constexpr std::size_t kAlign = 64;
inline constexpr std::size_t kHeaderSize = 64;
inline constexpr unsigned kMaxDepth = 64;

inline constexpr std::uint16_t kRegionSealed = 1u << 0;
inline constexpr std::uint16_t kRegionHashed = 1u << 1;
inline constexpr std::uint16_t kRegionKnownFlags = kRegionSealed | kRegionHashed;

// R's NA_real_: a NaN whose low 32 bits are 1954.
inline constexpr std::uint64_t kNaRealBits = 0x7FF00000000007A2ull;
// NA in an lgl array (and R's NA_integer_ in an i32 array).
inline constexpr std::int32_t kNaInt = INT32_MIN;

enum class Kind : std::uint8_t { kNull = 0, kArray = 1, kStrings = 2, kList = 3, kBytes = 4 };

enum class Dtype : std::uint8_t {
  kNone = 0,
  kU8 = 1,
  kI8 = 2,
  kU16 = 3,
  kI16 = 4,
  kU32 = 5,
  kI32 = 6,
  kU64 = 7,
  kI64 = 8,
  kF32 = 9,
  kF64 = 10,
  kC128 = 11,
  kLgl = 12,
};
inline constexpr std::uint8_t kMaxDtype = 12;

enum class Encoding : std::uint8_t { kUtf8 = 0, kLatin1 = 1, kBytes = 2 };

// Width in bytes of one element of `d`; 0 for kNone or an unknown code.
std::size_t dtype_width(Dtype d) noexcept;
// "f64", "lgl", ...; "none" for kNone and "?" for an unknown code.
std::string_view dtype_name(Dtype d) noexcept;
// The dtype called `name` ("f64", ...), or nullopt.
std::optional<Dtype> dtype_from_name(std::string_view name) noexcept;
// "null", "array", "strings", "list", "bytes"; "?" for an unknown code.
std::string_view kind_name(Kind k) noexcept;

// Rounds `n` up to a multiple of 64. REQUIRES: n <= UINT64_MAX - 63.
constexpr std::uint64_t align64(std::uint64_t n) noexcept {
  return (n + 63) & ~std::uint64_t{63};
}

struct RegionHeader {
  char magic[4];  // "KURA"
  std::uint16_t version;
  std::uint16_t flags;
  std::uint64_t region_size;
  std::uint64_t root_offset;
  std::uint64_t node_count;
  std::uint64_t created_ns;
  std::uint32_t creator_pid;
  std::uint32_t reserved0;
  std::uint64_t reserved1;
  std::uint64_t header_hash;  // XXH3-64 of bytes 0..55
};

struct NodeHeader {
  char magic[4];  // "KNOD"
  std::uint8_t kind;
  std::uint8_t dtype;
  std::uint16_t flags;
  std::uint64_t length;
  std::uint64_t data_offset;
  std::uint64_t data_size;
  std::uint64_t names_offset;
  std::uint64_t attrs_offset;
  std::uint64_t hash;
  char tag[8];
};

struct StringEntry {
  std::uint64_t offset;  // from the start of the packed bytes
  std::int32_t nbytes;   // -1 = NA
  std::uint8_t encoding;
  std::uint8_t pad[3];
};

static_assert(sizeof(RegionHeader) == 64);
static_assert(offsetof(RegionHeader, magic) == 0);
static_assert(offsetof(RegionHeader, version) == 4);
static_assert(offsetof(RegionHeader, flags) == 6);
static_assert(offsetof(RegionHeader, region_size) == 8);
static_assert(offsetof(RegionHeader, root_offset) == 16);
static_assert(offsetof(RegionHeader, node_count) == 24);
static_assert(offsetof(RegionHeader, created_ns) == 32);
static_assert(offsetof(RegionHeader, creator_pid) == 40);
static_assert(offsetof(RegionHeader, reserved0) == 44);
static_assert(offsetof(RegionHeader, reserved1) == 48);
static_assert(offsetof(RegionHeader, header_hash) == 56);

static_assert(sizeof(NodeHeader) == 64);
static_assert(offsetof(NodeHeader, magic) == 0);
static_assert(offsetof(NodeHeader, kind) == 4);
static_assert(offsetof(NodeHeader, dtype) == 5);
static_assert(offsetof(NodeHeader, flags) == 6);
static_assert(offsetof(NodeHeader, length) == 8);
static_assert(offsetof(NodeHeader, data_offset) == 16);
static_assert(offsetof(NodeHeader, data_size) == 24);
static_assert(offsetof(NodeHeader, names_offset) == 32);
static_assert(offsetof(NodeHeader, attrs_offset) == 40);
static_assert(offsetof(NodeHeader, hash) == 48);
static_assert(offsetof(NodeHeader, tag) == 56);

static_assert(sizeof(StringEntry) == 16);
static_assert(offsetof(StringEntry, offset) == 0);
static_assert(offsetof(StringEntry, nbytes) == 8);
static_assert(offsetof(StringEntry, encoding) == 12);
static_assert(offsetof(StringEntry, pad) == 13);

}  // namespace kura
