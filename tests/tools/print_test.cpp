// The printers of `kura get` and `kura inspect` and the typed JSON writer,
// in-process: a walk budget bounds what they read and write, whatever the
// region's links and string entries say.
#include "print.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <sstream>
#include <string>

#include "kura/core/builder.hpp"
#include "kura/core/view.hpp"
#include "typed_json.hpp"

using kura::Bytes;
using kura::Code;
using kura::String;
using kura::Value;

namespace {

kura::NodeHeader header_at(const Bytes& b, std::uint64_t offset) {
  kura::NodeHeader h;
  std::memcpy(&h, b.data() + offset, sizeof h);
  return h;
}

// `count` strings whose entries all point at the same `nbytes` bytes: the
// strings node itself, or the names of a list of nulls.
Bytes shared_bytes_image(std::uint64_t count, std::int32_t nbytes, bool names) {
  std::vector<String> xs(count, String{""});
  xs[0].bytes.assign(static_cast<std::size_t>(nbytes), 'x');
  Value v = names ? Value::list(std::vector<Value>(count)).with_names(xs) : Value::strings_of(xs);
  auto image = kura::build(v, kura::Stamp{}, false);
  REQUIRE(image.is_ok());
  Bytes b = std::move(image).value();
  const kura::NodeHeader h = header_at(b, names ? header_at(b, 64).names_offset : 64);
  for (std::uint64_t i = 1; i < count; ++i) {
    const std::uint64_t zero = 0;
    std::memcpy(b.data() + h.data_offset + 16 * i, &zero, 8);
    std::memcpy(b.data() + h.data_offset + 16 * i + 8, &nbytes, 4);
  }
  return b;
}

}  // namespace

TEST_CASE("printers and the typed JSON writer stop when string entries share their bytes", "[tools]") {
  for (bool names : {false, true}) {
    INFO((names ? "names" : "strings"));
    const Bytes b = shared_bytes_image(1000, 1000, names);
    auto region = kura::Region::open(b);
    REQUIRE(region.is_ok());
    auto root = region->root();
    REQUIRE(root.is_ok());
    // 1000 x 1000 bytes would print as a megabyte from a region of ~50 KB.
    std::ostringstream json, all, tree;
    kura::Status j = kura::tool::write_typed_json(*root, json);
    kura::Status v = kura::tool::print_value(*root, all, kura::tool::PrintOptions{true});
    kura::Status t = kura::tool::print_tree(*root, tree, kura::tool::PrintOptions{true});
    CHECK(j.code() == Code::kCorrupt);
    CHECK(v.code() == Code::kCorrupt);
    CHECK(json.str().size() < 2 * b.size());
    CHECK(all.str().size() < 2 * b.size());
    CHECK(tree.str().size() < 4 * b.size());
    if (names) CHECK(t.code() == Code::kCorrupt);
    // A summary reads only the strings it shows.
    std::ostringstream summary;
    CHECK(kura::tool::print_value(*root, summary, kura::tool::PrintOptions{false}).is_ok());
    CHECK(summary.str().size() < 16 * 1024);  // ten children, labelled with their 1000-byte names
  }
}

TEST_CASE("the printers stream: a strings node is written as it is read", "[tools]") {
  Value v =
      Value::strings_of({String{"a"}, String::NA(), String{"caf\xc3\xa9"},
                         String{"\xff", kura::Encoding::kUtf8}, String{"\xe9", kura::Encoding::kLatin1}})
          .with_names({String{"p"}, String{"q"}, String{"r"}, String{"s"}, String{"t"}})
          .with_attr("class", Value::strings_utf8({"x"}));
  auto image = kura::build(v, kura::Stamp{}, true);
  REQUIRE(image.is_ok());
  auto region = kura::Region::open(*image);
  REQUIRE(region.is_ok());
  std::ostringstream out;
  REQUIRE(kura::tool::print_value(*region->root(), out, kura::tool::PrintOptions{false}).is_ok());
  CHECK(out.str() ==
        "strings[5] \"a\" NA \"caf\xc3\xa9\" <1 bytes ff> \"\xc3\xa9\"\n"
        "  names: \"p\" \"q\" \"r\" \"s\" \"t\"\n"
        "  attr \"class\": strings[1] \"x\"\n");
}
