// Names (FORMAT.md section 1): every valid name round trips through
// parse_name and format_name; everything off the grammar is InvalidName.
#include "kura/core/name.hpp"

#include <catch2/catch.hpp>
#include <string>
#include <vector>

using namespace kura;

namespace {

// "/kura_1_2[1,1,...]" with `n` indices.
std::string name_with_indices(std::size_t n) {
  std::string s = "/kura_1_2[";
  for (std::size_t i = 0; i < n; ++i) {
    if (i) s += ',';
    s += '1';
  }
  return s + "]";
}

void check_invalid(const std::string& text) {
  INFO("name: \"" << text << "\" (" << text.size() << " chars)");
  auto r = parse_name(text);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == Code::kInvalidName);
  CHECK_FALSE(r.status().message().empty());
}

}  // namespace

TEST_CASE("valid names round trip through parse and format", "[core]") {
  std::vector<std::string> valid = {
      "/kura_0_0",
      "/kura_1_2",
      "/kura_1f_2a",
      "/kura_1f_2a[2,3]",
      "/kura_abcdef_123456",
      "/kura_ffffffffffffffff_ffffffffffffffff",
      "/kura_1234567890abcdef_fedcba0987654321",
      "/kura_0_1[1]",
      "/kura_10_0[10]",
      "/kura_1_1[9223372036854775807]",
      "/kura_1_1[1,9223372036854775807,1]",
      "/kura_a_b[123456789,987654321]",
      name_with_indices(2),
      name_with_indices(63),
      name_with_indices(64),
  };
  for (const auto& s : valid) {
    INFO("name: " << s);
    auto r = parse_name(s);
    REQUIRE(r.is_ok());
    CHECK(format_name(*r) == s);
    CHECK(parse_name(format_name(*r))->path == r->path);
  }
}

TEST_CASE("parse_name reads owner, counter and path", "[core]") {
  auto r = parse_name("/kura_1f_2a[2,3]");
  REQUIRE(r.is_ok());
  CHECK(r->owner == 0x1f);
  CHECK(r->counter == 0x2a);
  CHECK(r->path == std::vector<std::uint64_t>{2, 3});
  CHECK(r->region() == Name{0x1f, 0x2a, {}});
  CHECK(format_region_name(0x1f, 0x2a) == "/kura_1f_2a");

  auto big = parse_name("/kura_ffffffffffffffff_0[9223372036854775807]");
  REQUIRE(big.is_ok());
  CHECK(big->owner == UINT64_MAX);
  CHECK(big->counter == 0);
  CHECK(big->path == std::vector<std::uint64_t>{kMaxIndex});

  auto many = parse_name(name_with_indices(64));
  REQUIRE(many.is_ok());
  CHECK(many->path.size() == 64);
}

TEST_CASE("a name of exactly 1024 characters is valid, 1025 is not", "[core]") {
  // 40 characters of region and '[', 50 indices with 49 commas and ']':
  // 934 digits, as 19-digit indices then whatever is left.
  std::string s = "/kura_ffffffffffffffff_ffffffffffffffff[";
  const std::size_t indices = 50;
  std::size_t digits = kMaxNameLength - s.size() - (indices - 1) - 1;
  for (std::size_t i = 0; i < indices; ++i) {
    std::size_t d = std::min<std::size_t>(19, digits - (indices - 1 - i));
    digits -= d;
    if (i) s += ',';
    s += '1';
    s += std::string(d - 1, '0');
  }
  s += ']';
  REQUIRE(s.size() == kMaxNameLength);
  auto r = parse_name(s);
  REQUIRE(r.is_ok());
  CHECK(format_name(*r) == s);

  // One more character (a digit inserted into a short index keeps the rest
  // of the grammar valid) is over the limit.
  std::string longer = s;
  longer.insert(longer.size() - 1, "0");
  REQUIRE(longer.size() == kMaxNameLength + 1);
  check_invalid(longer);
}

TEST_CASE("malformed names are InvalidName with a message", "[core]") {
  std::vector<std::string> bad = {
      "",
      " /kura_1_2",
      "/kura_1_2 ",
      "/kura_1 _2",
      "/kura_1_2[1, 2]",
      "/kura_1_2[ 1]",
      "/kura_1_2[1 ]",
      "/kura_1F_2",
      "/kura_1_2A",
      "/KURA_1_2",
      "/kura_1_2[]",
      "/kura_1_2[0]",
      "/kura_1_2[01]",
      "/kura_1_2[1,0]",
      "/kura_1_2[1,]",
      "/kura_1_2[,1]",
      "/kura_1_2[1,,2]",
      "/kura_1_2[,]",
      name_with_indices(65),
      std::string("/kura_1_2\0", 10),
      std::string("/kura_1\0_2", 10),
      std::string("/kura_1_2[1\0]", 13),
      "/kura_1_2[1..2]",
      "/kura_1_2..",
      "/kura_1_2[..]",
      "//kura_1_2",
      "/kura_1_2/",
      "/kura_1_2[1]/",
      "kura_1_2",
      "_1_2",
      "/kora_1_2",
      "/kura1_2",
      "/kura__2",
      "/kura_01_2",
      "/kura_1_02",
      "/kura_00_0",
      "/kura_10000000000000000_1",
      "/kura_1_10000000000000000",
      "/kura_1",
      "/kura_12",
      "/kura_1_",
      "/kura_",
      "/kura_1_2[9223372036854775808]",
      "/kura_1_2[18446744073709551616]",
      "/kura_1_2[18446744073709551615]",
      "/kura_1_2[99999999999999999999999]",
      "/kura_1_2[1,9223372036854775808]",
      "/kura_1_2[-1]",
      "/kura_1_2[+1]",
      "/kura_1_2[1",
      "/kura_1_2[1,2",
      "/kura_1_2[",
      "/kura_1_2[1]x",
      "/kura_1_2[1][2]",
      "/kura_1_2]",
      "/kura_1_2(1)",
      "/kura_1_2[1;2]",
      "/kura_1_2[0x1]",
      "/kura_1_2[1e3]",
      "/kura_-1_2",
      "/kura_g_2",
      "/kura_1_2_3",
      "/kura_1_2\n",
      "\t/kura_1_2",
      std::string(1025, 'a'),
      "/kura_1_2[" + std::string(1100, '1') + "]",
  };
  CHECK(bad.size() >= 30);
  for (const auto& s : bad) check_invalid(s);
}

TEST_CASE("index 2^63-1 is the largest accepted index", "[core]") {
  auto ok = parse_name("/kura_1_2[9223372036854775807]");
  REQUIRE(ok.is_ok());
  CHECK(ok->path[0] == 9223372036854775807ull);
  for (const char* s :
       {"/kura_1_2[9223372036854775808]", "/kura_1_2[9223372036854775809]", "/kura_1_2[10000000000000000000]",
        "/kura_1_2[18446744073709551616]", "/kura_1_2[92233720368547758070]"}) {
    check_invalid(s);
  }
}
