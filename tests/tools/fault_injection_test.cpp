// Out of memory in the tool's typed JSON reader and writer and its
// printers: with the global operator new failing on demand
// (support/failing_new.hpp), every call returns its usual result or
// OutOfMemory, and never aborts.
#include <catch2/catch.hpp>
#include <istream>
#include <sstream>
#include <streambuf>
#include <string>
#include <string_view>

#include "failing_new.hpp"
#include "kura/core/builder.hpp"
#include "print.hpp"
#include "typed_json.hpp"

using kura::Code;
using kura::test::exhaust;

namespace {

// A read-only stream over a string, made without allocating (unlike
// std::istringstream, which copies its string).
class InputBuffer : public std::streambuf {
 public:
  explicit InputBuffer(std::string_view text) {
    char* p = const_cast<char*>(text.data());
    setg(p, p, p + text.size());
  }
};

const char* kDoc = R"({"type": "list", "values": [
  {"type": "f64", "values": [1.5, null, "NaN"], "names": ["a", "b", "c"]},
  {"type": "c128", "values": [[1, 2]]},
  {"type": "strings", "values": ["x", null, {"latin1": "6Q=="}]},
  {"type": "bytes", "tag": "json", "base64": "e30="},
  {"type": "null", "attrs": {"dim": {"type": "i32", "values": [1, 2]}}}
], "names": ["f", "c", "s", "b", "n"]})";

}  // namespace

TEST_CASE("the typed JSON reader returns OutOfMemory, never aborts, when allocations fail", "[tools][oom]") {
  CHECK(exhaust([] { return kura::tool::parse_typed_json(kDoc); }, Code::kOk) > 20);
  exhaust([] { return kura::tool::parse_typed_json(R"({"type": "i8", "values": [1, 300]})"); },
          Code::kInvalidArgument);
  exhaust([] { return kura::tool::parse_typed_json(R"({"type": "f64", "values": [1,)"); },
          Code::kInvalidArgument);
  exhaust(
      [] {
        InputBuffer buffer(kDoc);
        std::istream in(&buffer);
        return kura::tool::parse_typed_json(in);
      },
      Code::kOk);
}

TEST_CASE("the typed JSON writer and the printers return OutOfMemory, never abort, when allocations fail",
          "[tools][oom]") {
  auto value = kura::tool::parse_typed_json(kDoc);
  REQUIRE(value.is_ok());
  auto image = kura::build(*value, kura::Stamp{}, true);
  REQUIRE(image.is_ok());
  auto region = kura::Region::open(*image);
  REQUIRE(region.is_ok());
  auto root = region->root();
  REQUIRE(root.is_ok());
  CHECK(exhaust([&] { return kura::tool::to_typed_json(*value); }, Code::kOk) > 0);
  exhaust(
      [&] {
        std::ostringstream out;
        return kura::tool::write_typed_json(*root, out);
      },
      Code::kOk);
  for (bool all : {false, true}) {
    exhaust(
        [&] {
          std::ostringstream out;
          return kura::tool::print_value(*root, out, kura::tool::PrintOptions{all});
        },
        Code::kOk);
    exhaust(
        [&] {
          std::ostringstream out;
          return kura::tool::print_tree(*root, out, kura::tool::PrintOptions{all});
        },
        Code::kOk);
  }
}
