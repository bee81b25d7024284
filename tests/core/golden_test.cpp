// The example of FORMAT.md section 6, built and compared byte for byte with
// the golden file, and the golden file read back.
#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>

#include "kura/core/builder.hpp"
#include "kura/core/verify.hpp"
#include "kura/core/view.hpp"

using namespace kura;

namespace {

Bytes read_golden() {
  std::ifstream in(KURA_TEST_DATA "/example-v1.bin", std::ios::binary);
  REQUIRE(in.good());
  std::vector<char> raw((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  Bytes out(raw.size());
  std::memcpy(out.data(), raw.data(), raw.size());
  return out;
}

Value golden_value() {
  return Value::list({Value::f64({1.5, 2.5}), Value::strings_utf8({"a"})})
      .with_names({String{"x"}, String{"tag"}});
}

}  // namespace

TEST_CASE("builder reproduces the golden region byte for byte", "[core]") {
  Bytes golden = read_golden();
  REQUIRE(golden.size() == 704);
  Value v = golden_value();
  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());
  CHECK(layout->size() == 704);
  CHECK(layout->node_count() == 4);
  auto built = build(v, Stamp{0, 0}, /*hashed=*/true);
  REQUIRE(built.is_ok());
  REQUIRE(built->size() == golden.size());
  for (std::size_t i = 0; i < golden.size(); ++i) {
    INFO("byte " << i);
    REQUIRE(static_cast<int>((*built)[i]) == static_cast<int>(golden[i]));
  }
}

TEST_CASE("the golden region reads back to the same value", "[core]") {
  Bytes golden = read_golden();
  auto region = Region::open(golden);
  REQUIRE(region.is_ok());
  CHECK(region->hashed());
  CHECK(region->header().node_count == 4);
  auto root = region->root();
  REQUIRE(root.is_ok());
  auto value = to_value(*root);
  REQUIRE(value.is_ok());
  CHECK(*value == golden_value());

  auto x = region->at(std::vector<std::uint64_t>{1});
  REQUIRE(x.is_ok());
  auto xs = x->array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  REQUIRE(xs->size() == 2);
  CHECK((*xs)[0] == 1.5);
  CHECK((*xs)[1] == 2.5);

  auto tag = root->child("tag");
  REQUIRE(tag.is_ok());
  auto a = tag->string(0);
  REQUIRE(a.is_ok());
  CHECK(a->bytes == "a");
  CHECK_FALSE(a->na);

  auto report = verify(*root);
  REQUIRE(report.is_ok());
  CHECK(report->nodes == 4);
  CHECK(report->hashed);
}
