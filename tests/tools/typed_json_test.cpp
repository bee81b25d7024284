// Typed JSON both ways, in-process: every dtype, NA, non-finite floats,
// exact 64-bit integers, strings in every encoding, names, attributes, and
// the errors for bad input.
#include "typed_json.hpp"

#include <bit>
#include <catch2/catch.hpp>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <random>
#include <sstream>
#include <string>

#include "kura/core/builder.hpp"
#include "kura/core/view.hpp"

using kura::Code;
using kura::Dtype;
using kura::Encoding;
using kura::Kind;
using kura::String;
using kura::Value;
using kura::tool::Json;

namespace {

Value parse_ok(const std::string& text) {
  auto v = kura::tool::parse_typed_json(text);
  INFO(text);
  if (!v) FAIL(v.status().to_string());
  return std::move(v).value();
}

std::string write_ok(const Value& v) {
  auto s = kura::tool::to_typed_json(v);
  if (!s) FAIL(s.status().to_string());
  return *s;
}

// text -> Value -> region -> text, as parsed JSON.
Json round_trip(const std::string& text) {
  return Json::parse(write_ok(parse_ok(text)));
}

kura::Status parse_error(const std::string& text) {
  auto v = kura::tool::parse_typed_json(text);
  INFO(text);
  REQUIRE_FALSE(v.is_ok());
  return v.status();
}

template <class T>
std::vector<T> elements(const Value& v) {
  REQUIRE(v.kind == Kind::kArray);
  auto p = v.payload();
  std::vector<T> out(p.size() / sizeof(T));
  std::memcpy(out.data(), p.data(), p.size());
  return out;
}

double from_bits(std::uint64_t b) {
  return std::bit_cast<double>(b);
}
std::uint64_t bits(double d) {
  return std::bit_cast<std::uint64_t>(d);
}

}  // namespace

TEST_CASE("typed JSON: every integer dtype at its extremes, exactly", "[tools]") {
  const char* docs[] = {
      R"({"type": "u8", "values": [0, 1, 255]})",
      R"({"type": "i8", "values": [-128, 0, 127]})",
      R"({"type": "u16", "values": [0, 65535]})",
      R"({"type": "i16", "values": [-32768, 32767]})",
      R"({"type": "u32", "values": [0, 4294967295]})",
      R"({"type": "i32", "values": [-2147483648, 0, 2147483647]})",
      R"({"type": "u64", "values": [0, 9007199254740993, 18446744073709551615]})",
      R"({"type": "i64", "values": [-9223372036854775808, -9007199254740993, 9223372036854775807]})",
  };
  for (const char* d : docs) {
    INFO(d);
    CHECK(round_trip(d) == Json::parse(d));
  }
  auto u64 = elements<std::uint64_t>(parse_ok(docs[6]));
  CHECK(u64[1] == 9007199254740993ull);
  CHECK(u64[2] == std::numeric_limits<std::uint64_t>::max());
  auto i64 = elements<std::int64_t>(parse_ok(docs[7]));
  CHECK(i64[0] == std::numeric_limits<std::int64_t>::min());
  CHECK(i64[2] == std::numeric_limits<std::int64_t>::max());
  // The written text holds the digits themselves, not a rounded double.
  CHECK(write_ok(parse_ok(docs[6])).find("18446744073709551615") != std::string::npos);
  CHECK(write_ok(parse_ok(docs[7])).find("-9223372036854775808") != std::string::npos);
}

TEST_CASE("typed JSON: integers out of range or not integers are refused with their path", "[tools]") {
  struct Case {
    const char* doc;
    const char* says;
  } cases[] = {
      {R"({"type": "u8", "values": [1, 256]})", "$.values[1]: 256 does not fit in u8"},
      {R"({"type": "i8", "values": [-129]})", "$.values[0]: -129 does not fit in i8"},
      {R"({"type": "u64", "values": [-1]})", "does not fit in u64"},
      {R"({"type": "i64", "values": [9223372036854775808]})", "does not fit in i64"},
      {R"({"type": "i32", "values": [1.5]})", "$.values[0]: expected an integer for i32, found a float"},
      {R"({"type": "i32", "values": [1, null]})", "$.values[1]: null (NA) is not allowed in an i32 array"},
      {R"({"type": "u16", "values": ["1"]})", "expected an integer for u16, found a string"},
  };
  for (const auto& c : cases) {
    auto s = parse_error(c.doc);
    INFO(s.message());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find(c.says) != std::string::npos);
  }
}

TEST_CASE("typed JSON: f64 NA, NaN and infinities both ways", "[tools]") {
  Value v = parse_ok(R"({"type": "f64", "values": [1.5, null, "NaN", "Inf", "-Inf", -0.0]})");
  auto xs = elements<double>(v);
  REQUIRE(xs.size() == 6);
  CHECK(xs[0] == 1.5);
  CHECK(bits(xs[1]) == kura::kNaRealBits);
  CHECK(std::isnan(xs[2]));
  CHECK_FALSE(kura::tool::is_na_real(xs[2]));
  CHECK(xs[3] == std::numeric_limits<double>::infinity());
  CHECK(xs[4] == -std::numeric_limits<double>::infinity());
  CHECK(bits(xs[5]) == bits(-0.0));
  CHECK(Json::parse(write_ok(v)) ==
        Json::parse(R"({"type": "f64", "values": [1.5, null, "NaN", "Inf", "-Inf", -0.0]})"));

  // Any NaN whose low 32 bits are 1954 is NA (R's rule), whatever its payload.
  double quiet_na = from_bits(0x7FF80000000007A2ull);
  double other_nan = from_bits(0x7FF8000000000001ull);
  Value w = Value::f64({quiet_na, other_nan});
  CHECK(Json::parse(write_ok(w))["values"] == Json::parse(R"([null, "NaN"])"));
  // Negative zero keeps its sign through the text.
  auto back = elements<double>(parse_ok(write_ok(Value::f64({-0.0}))));
  CHECK(bits(back[0]) == bits(-0.0));
}

TEST_CASE("typed JSON: f32 non-finite values, and null refused", "[tools]") {
  Value v = parse_ok(R"({"type": "f32", "values": [0.1, "NaN", "Inf", "-Inf", 3.4028234663852886e38]})");
  auto xs = elements<float>(v);
  CHECK(xs[0] == 0.1f);
  CHECK(std::isnan(xs[1]));
  CHECK(std::isinf(xs[2]));
  CHECK(xs[4] == std::numeric_limits<float>::max());
  CHECK(Json::parse(write_ok(v))["values"][1] == "NaN");
  // Shortest text: 0.1f prints as 0.1, not 0.10000000149011612.
  CHECK(write_ok(v).find("0.1,") != std::string::npos);

  auto s = parse_error(R"({"type": "f32", "values": [1, null]})");
  CHECK(s.message().find("$.values[1]: null (NA) is not allowed in an f32 array") != std::string::npos);
  auto big = parse_error(R"({"type": "f32", "values": [1e300]})");
  CHECK(big.message().find("does not fit in f32") != std::string::npos);
}

TEST_CASE("typed JSON: random doubles and floats read back bit for bit", "[tools]") {
  std::mt19937_64 rng(12345);
  std::vector<double> ds = {5e-324,
                            2.2250738585072014e-308,
                            std::numeric_limits<double>::max(),
                            0.1,
                            1e22,
                            1e21,
                            123456789012345680000.0,
                            -1.0 / 3};
  while (ds.size() < 2000) {
    double d = from_bits(rng());
    if (std::isfinite(d)) ds.push_back(d);
  }
  std::vector<float> fs = {std::numeric_limits<float>::denorm_min(),
                           std::numeric_limits<float>::min(),
                           std::numeric_limits<float>::max(),
                           0.1f,
                           16777217.0f,
                           -0.0f};
  while (fs.size() < 2000) {
    float f = std::bit_cast<float>(static_cast<std::uint32_t>(rng()));
    if (std::isfinite(f)) fs.push_back(f);
  }
  Value v = Value::list({Value::array<Dtype::kF64>(std::span<const double>(ds)),
                         Value::array<Dtype::kF32>(std::span<const float>(fs))});
  Value back = parse_ok(write_ok(v));
  CHECK(back == v);  // arrays compare bit for bit
}

TEST_CASE("typed JSON: c128 pairs with NA in either part", "[tools]") {
  const char* doc = R"({"type": "c128", "values": [[1.5, -2.0], [null, 1.0], [0.0, null], ["NaN", "-Inf"]]})";
  Value v = parse_ok(doc);
  auto zs = elements<std::complex<double>>(v);
  REQUIRE(zs.size() == 4);
  CHECK(zs[0] == std::complex<double>(1.5, -2.0));
  CHECK(bits(zs[1].real()) == kura::kNaRealBits);
  CHECK(bits(zs[2].imag()) == kura::kNaRealBits);
  CHECK(round_trip(doc) == Json::parse(doc));

  CHECK(parse_error(R"({"type": "c128", "values": [[1.0]]})")
            .message()
            .find("$.values[0]: expected a [re, im] pair") != std::string::npos);
  CHECK(parse_error(R"({"type": "c128", "values": [[1.0, true]]})").message().find("$.values[0][1]") !=
        std::string::npos);
}

TEST_CASE("typed JSON: lgl is true, false and null, other values in a region are corrupt", "[tools]") {
  const char* doc = R"({"type": "lgl", "values": [true, false, null]})";
  Value v = parse_ok(doc);
  CHECK(elements<std::int32_t>(v) == std::vector<std::int32_t>{1, 0, kura::kNaInt});
  CHECK(round_trip(doc) == Json::parse(doc));
  CHECK(parse_error(R"({"type": "lgl", "values": [1]})")
            .message()
            .find("expected true, false or null for lgl") != std::string::npos);

  Value bad = Value::array<Dtype::kLgl>({1, 2});
  auto s = kura::tool::to_typed_json(bad);
  REQUIRE_FALSE(s.is_ok());
  CHECK(s.status().code() == Code::kCorrupt);
  CHECK(s.status().message().find("lgl element 2 holds 2") != std::string::npos);
}

TEST_CASE("typed JSON: strings in every encoding, invalid UTF-8 printed as bytes", "[tools]") {
  const char* doc =
      R"({"type": "strings", "values": ["a", null, "", "caf\u00e9 \u65e5\u672c \ud83c\udf89", "q\"\\\n\u0001", {"latin1": "6Q=="}, {"bytes": "AP8="}]})";
  Value v = parse_ok(doc);
  REQUIRE(v.strings.size() == 7);
  CHECK(v.strings[1].na);
  CHECK(v.strings[3].bytes == "caf\xC3\xA9 \xE6\x97\xA5\xE6\x9C\xAC \xF0\x9F\x8E\x89");
  CHECK(v.strings[5] == String{"\xE9", Encoding::kLatin1, false});
  CHECK(v.strings[6] == String{std::string("\x00\xFF", 2), Encoding::kBytes, false});
  CHECK(round_trip(doc) == Json::parse(doc));

  // A UTF-8 string whose bytes are not UTF-8 never becomes broken JSON.
  Value broken = Value::strings_of(
      {String{"\xFF\xFE", Encoding::kUtf8, false}, String{"\xC0\x80", Encoding::kUtf8, false}});
  std::string text = write_ok(broken);
  Json j = Json::parse(text);  // throws on broken JSON
  CHECK(j["values"] == Json::parse(R"([{"bytes": "//4="}, {"bytes": "wIA="}])"));

  CHECK(
      parse_error(R"({"type": "strings", "values": [1]})").message().find("$.values[0]: expected a string") !=
      std::string::npos);
  CHECK(parse_error(R"({"type": "strings", "values": [{"utf16": "AA=="}]})").message().find("\"utf16\"") !=
        std::string::npos);
  CHECK(
      parse_error(R"({"type": "strings", "values": [{"bytes": "A"}]})").message().find("$.values[0].bytes") !=
      std::string::npos);
}

TEST_CASE("typed JSON: lists, names with NA, attributes, bytes and null keep their order", "[tools]") {
  const char* doc = R"({"type": "list", "values": [
      {"type": "f64", "values": [1.5, 2.5], "names": ["a", null]},
      {"type": "null"},
      {"type": "bytes", "tag": "json", "base64": "eyJhIjoxfQ=="},
      {"type": "bytes", "tag": "", "base64": ""},
      {"type": "list", "values": [{"type": "list", "values": []}], "attrs": {"class": {"type": "strings", "values": ["inner"]}}},
      {"type": "i32", "values": [1, 2, 3, 4, 5, 6], "attrs": {
          "dim": {"type": "i32", "values": [2, 3]},
          "dimnames": {"type": "list", "values": [{"type": "null"}, {"type": "strings", "values": ["x", "y", "z"]}]}}}
    ], "names": ["x", "nothing", "blob", "empty", "nested", "matrix"],
    "attrs": {"class": {"type": "strings", "values": ["data.frame"]}, "zzz": {"type": "null"}, "aaa": {"type": "u8", "values": []}}})";
  Value v = parse_ok(doc);
  REQUIRE(v.kind == Kind::kList);
  REQUIRE(v.children.size() == 6);
  CHECK(v.children[2].kind == Kind::kBytes);
  CHECK(v.children[2].tag == "json");
  REQUIRE(v.attrs.size() == 3);
  CHECK(v.attrs[1].first == "zzz");  // order kept, not sorted
  CHECK(v.children[0].names->at(1).na);
  CHECK(round_trip(doc) == Json::parse(doc));
}

TEST_CASE("typed JSON: malformed documents name where they fail", "[tools]") {
  struct Case {
    const char* doc;
    const char* says;
  } cases[] = {
      {R"({"type": "f64", "values": [1, 2)", "not valid JSON"},
      {"[1, 2", "$: expected a node object such as {\"type\": \"f64\", \"values\": [...]}, found an array"},
      {"{\"type\": \"f64\", \"values\": [1e400]}", "not valid JSON"},
      {"42", "$: expected a node object"},
      {R"({"names": []})", "$: a node needs a \"type\""},
      {R"({"values": []})", "a node's \"type\" must come before its \"values\""},
      {R"({"type": "f128", "values": []})", "$.type: unknown type \"f128\""},
      {R"({"type": "f64"})", "$: a f64 node needs \"values\""},
      {R"({"type": "f64", "values": 1})", "$.values: expected an array"},
      {R"({"type": "f64", "values": [], "extra": 1})", "unexpected key \"extra\""},
      {R"({"type": "null", "values": []})", "unexpected key \"values\""},
      {R"({"type": "f64", "values": [true]})", "$.values[0]: expected a number for f64"},
      {R"({"type": "f64", "values": ["nan"]})", "$.values[0]: the string \"nan\" is not a number"},
      {R"({"type": "f64", "values": [1, 2], "names": ["a"]})", "$.names: 1 names for 2 elements"},
      {R"({"type": "list", "values": [{"type": "null"}, {"type": "i8", "values": [1, 2, 300]}]})",
       "$.values[1].values[2]: 300 does not fit in i8"},
      {R"({"type": "null", "attrs": {"dim": {"type": "i32", "values": [1, null]}}})",
       "$.attrs[\"dim\"].values[1]: null (NA)"},
      {R"({"type": "null", "attrs": []})", "$.attrs: expected an object of nodes"},
      {R"({"type": "null", "attrs": {"": {"type": "null"}}})", "an attribute key may not be empty"},
      {R"({"type": "bytes", "tag": "waytoolongtag", "base64": ""})",
       "$.tag: a tag is at most 8 printable ASCII characters (0x21-0x7E), not 13 bytes"},
      {R"({"type": "bytes", "tag": "x"})", "a bytes node needs \"base64\""},
      {R"({"type": "bytes", "base64": "!!!!"})", "$.base64: base64 text has an invalid character"},
  };
  for (const auto& c : cases) {
    auto s = parse_error(c.doc);
    INFO(s.message());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find(c.says) != std::string::npos);
  }

  std::string deep;
  for (int i = 0; i < 70; ++i) deep += R"({"type": "list", "values": [)";
  deep += R"({"type": "null"})";
  for (int i = 0; i < 70; ++i) deep += "]}";
  CHECK(parse_error(deep).message().find("nested deeper than 64") != std::string::npos);
}

TEST_CASE("typed JSON: a tag is at most 8 printable ASCII characters", "[tools]") {
  struct Case {
    const char* doc;
    const char* says;
  } cases[] = {
      {R"({"type": "bytes", "tag": "123456789", "base64": ""})", "$.tag: a tag is at most 8 printable ASCII"},
      {R"({"type": "bytes", "tag": "a b", "base64": ""})",
       "$.tag: a tag is at most 8 printable ASCII characters "
       "(0x21-0x7E); byte 2 is 0x20"},
      {R"({"type": "bytes", "tag": "\u00ff", "base64": ""})", "byte 1 is 0xc3"},
      {R"({"type": "bytes", "tag": "js\u0000n", "base64": ""})", "byte 3 is 0x00"},
      {R"({"type": "bytes", "tag": "\u007f", "base64": ""})", "byte 1 is 0x7f"},
      {R"({"type": "bytes", "tag": "tab\t", "base64": ""})", "byte 4 is 0x09"},
      {R"({"type": "list", "values": [{"type": "null"}, {"type": "bytes", "tag": "\u0001", "base64": ""}]})",
       "$.values[1].tag: a tag is at most 8 printable ASCII"},
      {R"({"type": "null", "attrs": {"raw": {"type": "bytes", "tag": "\u00e9", "base64": ""}}})",
       "$.attrs[\"raw\"].tag: a tag is"},
  };
  for (const auto& c : cases) {
    auto s = parse_error(c.doc);
    INFO(s.message());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find(c.says) != std::string::npos);
  }
  // The edges of the range, and no tag at all.
  CHECK(parse_ok(R"({"type": "bytes", "tag": "!~!~!~!~", "base64": ""})").tag == "!~!~!~!~");
  CHECK(parse_ok(R"({"type": "bytes", "tag": "", "base64": ""})").tag.empty());
  CHECK(parse_ok(R"({"type": "bytes", "base64": ""})").tag.empty());
}

TEST_CASE("typed JSON: keys in any order, except that type comes before values", "[tools]") {
  // Sorted keys, as a writer that sorts them gives.
  Value sorted = parse_ok(
      R"({"attrs": {"dim": {"type": "i32", "values": [2]}}, "names": ["a", "b"], "type": "f64", "values": [1, 2]})");
  Value usual = parse_ok(
      R"({"type": "f64", "values": [1, 2], "names": ["a", "b"], "attrs": {"dim": {"type": "i32", "values": [2]}}})");
  CHECK(sorted == usual);
  CHECK(parse_ok(R"({"base64": "AP8=", "tag": "raw", "type": "bytes"})") ==
        parse_ok(R"({"type": "bytes", "tag": "raw", "base64": "AP8="})"));
  CHECK(parse_ok(R"({"names": ["x"], "type": "list", "values": [{"type": "null"}]})").names->at(0).bytes ==
        "x");

  struct Case {
    const char* doc;
    const char* says;
  } cases[] = {
      {R"({"values": [1], "type": "f64"})", "$: \"values\" comes before \"type\""},
      {R"({"type": "list", "values": [{"values": [], "type": "list"}]})",
       "$.values[0]: \"values\" comes before"},
      {R"({"tag": "x", "type": "f64", "values": []})", "$: unexpected key \"tag\" in a f64 node"},
      {R"({"base64": "", "type": "strings", "values": []})",
       "$: unexpected key \"base64\" in a strings node"},
      {R"({"type": "f64", "type": "f64", "values": []})", "$: duplicate key \"type\""},
      {R"({"type": "f64", "values": [], "values": []})", "$: duplicate key \"values\""},
      {R"({"type": "null", "attrs": {"k": {"type": "null"}, "k": {"type": "null"}}})",
       "$.attrs[\"k\"]: duplicate attribute key"},
      {R"({"zzz": 1, "type": "null"})", "$: unexpected key \"zzz\" in a node"},
  };
  for (const auto& c : cases) {
    auto s = parse_error(c.doc);
    INFO(s.message());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find(c.says) != std::string::npos);
  }
}

TEST_CASE("typed JSON: every error names its path", "[tools]") {
  struct Case {
    const char* doc;
    const char* says;
  } cases[] = {
      {R"({"type": "list", "values": [{"type": "null"}, {"type": "null"}, {"type": "null", "attrs": {"dim": {"type": "i32", "values": [1.5]}}}]})",
       "$.values[2].attrs[\"dim\"].values[0]: expected an integer for i32, found a float"},
      {R"({"type": "strings", "values": ["a", {}]})", "$.values[1]: expected a string, null, "},
      {R"({"type": "strings", "values": [{"latin1": "AA==", "bytes": "AA=="}]})", "more than one key"},
      {R"({"type": "strings", "values": ["a", {"latin1": 1}]})", "$.values[1].latin1: expected base64 text"},
      {R"({"type": "strings", "values": [[]]})", "$.values[0]: expected a string, null"},
      {R"({"type": "f64", "values": [1], "names": [null, 2]})", "$.names[1]: expected a string"},
      {R"({"type": "f64", "values": [1], "names": {}})",
       "$.names: expected an array of strings, found an object"},
      {R"({"type": "c128", "values": [[1, 2, 3]]})", "$.values[0]: expected a [re, im] pair for c128"},
      {R"({"type": "c128", "values": [[1, [2]]]})",
       "$.values[0][1]: expected a number for c128, found an array"},
      {R"({"type": "c128", "values": [1]})",
       "$.values[0]: expected a [re, im] pair for c128, found an integer"},
      {R"({"type": "f64", "values": [[1]]})", "$.values[0]: expected a number for f64, found an array"},
      {R"({"type": "lgl", "values": [{}]})",
       "$.values[0]: expected true, false or null for lgl, found an object"},
      {R"({"type": "list", "values": [1]})", "$.values[0]: expected a node object"},
      {R"({"type": "list", "values": {}})", "$.values: expected an array, found an object"},
      {R"({"type": "null", "attrs": {"k": 1}})", "$.attrs[\"k\"]: expected a node object"},
      {R"({"type": 5})", "$.type: expected a string, found an integer"},
      {R"({"type": "bytes", "base64": 5})", "$.base64: expected base64 text, found an integer"},
      {R"({"type": "bytes", "tag": [], "base64": ""})", "$.tag: expected a string, found an array"},
      {R"({"type": "list", "values": [{"type": "bytes", "base64": "AP8=", "names": ["a"]}]})",
       "$.values[0].names: 1 names for 2 elements"},
      {R"({"type": "null"} x)", "not valid JSON"},
      {"", "not valid JSON"},
  };
  for (const auto& c : cases) {
    auto s = parse_error(c.doc);
    INFO(s.message());
    CHECK(s.code() == Code::kInvalidArgument);
    CHECK(s.message().find(c.says) != std::string::npos);
  }
}

TEST_CASE("typed JSON: a stream reads like a string", "[tools]") {
  std::string doc = R"({"type": "list", "values": [{"type": "i32", "values": [)";
  for (int i = 0; i < 20000; ++i) doc += (i ? ", " : "") + std::to_string(i - 10000);
  doc += R"(]}, {"type": "strings", "values": ["a", null]}], "names": ["n", "s"]})";
  std::istringstream in(doc);
  auto from_stream = kura::tool::parse_typed_json(in);
  REQUIRE(from_stream.is_ok());
  CHECK(*from_stream == parse_ok(doc));
  CHECK(from_stream->children[0].length == 20000);
  std::istringstream bad(R"({"type": "f64", "values": [1, "x"]})");
  auto err = kura::tool::parse_typed_json(bad);
  REQUIRE_FALSE(err.is_ok());
  CHECK(err.status().message().find("$.values[1]: the string \"x\" is not a number") != std::string::npos);
}

TEST_CASE("typed JSON: a value read from a region at a path", "[tools]") {
  Value v = parse_ok(
      R"({"type": "list", "values": [{"type": "f64", "values": [1.5]}, {"type": "strings", "values": ["a"]}]})");
  auto image = kura::build(v, kura::Stamp{}, true);
  REQUIRE(image.is_ok());
  auto region = kura::Region::open(std::span<const std::byte>(image->data(), image->size()));
  REQUIRE(region.is_ok());
  std::uint64_t path[] = {2};
  auto node = region->at(std::span<const std::uint64_t>(path));
  REQUIRE(node.is_ok());
  std::ostringstream out;
  REQUIRE(kura::tool::write_typed_json(*node, out).is_ok());
  CHECK(Json::parse(out.str()) == Json::parse(R"({"type": "strings", "values": ["a"]})"));
}

TEST_CASE("base64: RFC 4648 vectors and strict decoding", "[tools]") {
  const std::pair<const char*, const char*> vectors[] = {{"", ""},
                                                         {"f", "Zg=="},
                                                         {"fo", "Zm8="},
                                                         {"foo", "Zm9v"},
                                                         {"foob", "Zm9vYg=="},
                                                         {"fooba", "Zm9vYmE="},
                                                         {"foobar", "Zm9vYmFy"}};
  for (auto [plain, coded] : vectors) {
    std::string p(plain);
    auto bytes = std::as_bytes(std::span<const char>(p.data(), p.size()));
    CHECK(kura::tool::base64_encode(bytes) == coded);
    auto back = kura::tool::base64_decode(coded);
    REQUIRE(back.is_ok());
    CHECK(std::string(reinterpret_cast<const char*>(back->data()), back->size()) == p);
  }
  for (const char* bad : {"Zg=", "Zg", "Z===", "Zh==", "Zm9=", "Zm 9", "=Zm9"})
    CHECK_FALSE(kura::tool::base64_decode(bad).is_ok());
}

TEST_CASE("UTF-8 validation", "[tools]") {
  using kura::valid_utf8;
  CHECK(valid_utf8(""));
  CHECK(valid_utf8("plain"));
  CHECK(valid_utf8("\xC3\xA9\xE6\x97\xA5\xF0\x9F\x8E\x89\xF4\x8F\xBF\xBF"));
  CHECK_FALSE(valid_utf8("\xC0\x80"));          // overlong
  CHECK_FALSE(valid_utf8("\xE0\x80\xAF"));      // overlong
  CHECK_FALSE(valid_utf8("\xED\xA0\x80"));      // surrogate
  CHECK_FALSE(valid_utf8("\xF4\x90\x80\x80"));  // above U+10FFFF
  CHECK_FALSE(valid_utf8("\xC3"));              // truncated
  CHECK_FALSE(valid_utf8("\x80"));              // lone continuation
  CHECK_FALSE(valid_utf8("\xFF"));
}
