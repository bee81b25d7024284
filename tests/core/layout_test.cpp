// The dtype table of FORMAT.md 4.1 and the alignment helper. Struct sizes
// and field offsets are static_assert'ed in layout.hpp itself.
#include "kura/core/layout.hpp"

#include <catch2/catch.hpp>
#include <string_view>

using namespace kura;

namespace {

struct Row {
  std::string_view name;
  std::uint8_t code;
  std::size_t width;
};

// FORMAT.md table 4.1, copied by hand.
constexpr Row kTable[] = {
    {"u8", 1, 1},  {"i8", 2, 1},  {"u16", 3, 2}, {"i16", 4, 2},  {"u32", 5, 4},    {"i32", 6, 4},
    {"u64", 7, 8}, {"i64", 8, 8}, {"f32", 9, 4}, {"f64", 10, 8}, {"c128", 11, 16}, {"lgl", 12, 4},
};

}  // namespace

TEST_CASE("dtype codes, widths and names follow table 4.1", "[core]") {
  STATIC_REQUIRE(std::size(kTable) == kMaxDtype);
  for (const Row& r : kTable) {
    INFO("dtype " << r.name);
    auto d = static_cast<Dtype>(r.code);
    CHECK(dtype_width(d) == r.width);
    CHECK(dtype_name(d) == r.name);
    auto back = dtype_from_name(r.name);
    REQUIRE(back.has_value());
    CHECK(*back == d);
  }
  CHECK(static_cast<int>(Dtype::kF64) == 10);
  CHECK(static_cast<int>(Dtype::kLgl) == 12);
  CHECK(static_cast<int>(Dtype::kC128) == 11);
}

TEST_CASE("unknown dtypes have width 0 and no name", "[core]") {
  CHECK(dtype_width(Dtype::kNone) == 0);
  CHECK(dtype_name(Dtype::kNone) == "none");
  for (int code : {13, 14, 100, 255}) {
    INFO("code " << code);
    CHECK(dtype_width(static_cast<Dtype>(code)) == 0);
    CHECK(dtype_name(static_cast<Dtype>(code)) == "?");
  }
  CHECK_FALSE(dtype_from_name("none").has_value());
  CHECK_FALSE(dtype_from_name("").has_value());
  CHECK_FALSE(dtype_from_name("F64").has_value());
  CHECK_FALSE(dtype_from_name("f64 ").has_value());
  CHECK_FALSE(dtype_from_name("double").has_value());
  CHECK_FALSE(dtype_from_name("?").has_value());
}

TEST_CASE("kind names", "[core]") {
  CHECK(kind_name(Kind::kNull) == "null");
  CHECK(kind_name(Kind::kArray) == "array");
  CHECK(kind_name(Kind::kStrings) == "strings");
  CHECK(kind_name(Kind::kList) == "list");
  CHECK(kind_name(Kind::kBytes) == "bytes");
  CHECK(kind_name(static_cast<Kind>(5)) == "?");
}

TEST_CASE("align64 rounds up to a multiple of 64", "[core]") {
  STATIC_REQUIRE(align64(0) == 0);
  CHECK(align64(1) == 64);
  CHECK(align64(63) == 64);
  CHECK(align64(64) == 64);
  CHECK(align64(65) == 128);
  CHECK(align64(70) == 128);
  CHECK(align64(128) == 128);
  CHECK(align64(UINT64_MAX - 63) == UINT64_MAX - 63);
  CHECK(align64(UINT64_MAX - 100) == UINT64_MAX - 63);
}

TEST_CASE("format constants", "[core]") {
  CHECK(kFormatVersion == 1);
  CHECK(kHeaderSize == 64);
  CHECK(kAlign == 64);
  CHECK(kMaxDepth == 64);
  CHECK(kRegionSealed == 1);
  CHECK(kRegionHashed == 2);
  CHECK(kNaRealBits == 0x7FF00000000007A2ull);
  CHECK(kNaInt == INT32_MIN);
}
