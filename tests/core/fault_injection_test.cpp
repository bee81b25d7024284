// Out of memory in every core API. The global operator new of this binary
// fails on demand (support/failing_new.hpp): each call is made with 0, 1,
// 2, ... allocations allowed, and must return its usual result or
// OutOfMemory. A noexcept function that let std::bad_alloc escape would
// terminate this binary instead.
#include <catch2/catch.hpp>
#include <functional>
#include <vector>

#include "failing_new.hpp"
#include "kura/core/name.hpp"
#include "test_images.hpp"

using namespace kura;
using kura::test::build_ok;
using kura::test::exhaust;
using kura::test::get;
using kura::test::node_at;
using kura::test::put;

namespace {

using Path = std::vector<std::uint64_t>;

// list(f64 {1}, f64 {2}) with both child offsets at the first child: every
// count and size still fits the region, only the tree rule is broken.
Bytes shared_child_image() {
  Bytes b = build_ok(Value::list({Value::f64({1}), Value::f64({2})}), /*hashed=*/false);
  const NodeHeader list = node_at(b, 64);
  put<std::uint64_t>(b, list.data_offset + 8, get<std::uint64_t>(b, list.data_offset));
  return b;
}

// One strings node of 64 entries that all point at the same 200 bytes.
Bytes shared_string_bytes_image() {
  std::vector<String> xs(64, String{""});
  xs[0].bytes.assign(200, 'x');
  Bytes b = build_ok(Value::strings_of(std::move(xs)), /*hashed=*/false);
  const NodeHeader h = node_at(b, 64);
  for (std::uint64_t i = 1; i < 64; ++i) {
    put<std::uint64_t>(b, h.data_offset + 16 * i, 0);
    put<std::int32_t>(b, h.data_offset + 16 * i + 8, 200);
  }
  return b;
}

}  // namespace

TEST_CASE("parse_name returns OutOfMemory, never aborts, when allocations fail", "[core][oom]") {
  CHECK(exhaust([] { return parse_name("/kura_1f_2a[2,3,9223372036854775807]"); }, Code::kOk) > 0);
  exhaust([] { return parse_name("/kura_1f_2a[0]"); }, Code::kInvalidName);
  exhaust([] { return parse_name("/kura_1F_2a"); }, Code::kInvalidName);
  exhaust([] { return parse_name(""); }, Code::kInvalidName);
}

TEST_CASE("Region and NodeView calls return OutOfMemory, never abort, when allocations fail", "[core][oom]") {
  const Bytes image = build_ok(kura::test::rich_value());
  Bytes bad_magic = image;
  bad_magic[0] = std::byte{'X'};
  Bytes bad_node = image;
  put<std::uint8_t>(bad_node, 64 + 4, 9);  // the root's kind

  exhaust([&] { return Region::open(image); }, Code::kOk);
  exhaust([&] { return Region::open(bad_magic); }, Code::kCorrupt);
  exhaust([&] { return Region::open(std::span<const std::byte>(image).first(63)); }, Code::kCorrupt);

  auto region = Region::open(image);
  REQUIRE(region.is_ok());
  auto broken = Region::open(bad_node);
  REQUIRE(broken.is_ok());
  exhaust([&] { return region->root(); }, Code::kOk);
  exhaust([&] { return broken->root(); }, Code::kCorrupt);
  const Path inner{3, 1}, past{9}, into_array{1, 1}, zero{0};
  exhaust([&] { return region->at(inner); }, Code::kOk);
  exhaust([&] { return region->at(past); }, Code::kOutOfRange);
  exhaust([&] { return region->at(into_array); }, Code::kNotAList);
  exhaust([&] { return region->at(zero); }, Code::kOutOfRange);

  auto root = region->root();
  REQUIRE(root.is_ok());
  exhaust([&] { return root->child("inner"); }, Code::kOk);
  exhaust([&] { return root->child("no such name"); }, Code::kOutOfRange);
  exhaust([&] { return root->child(std::uint64_t{7}); }, Code::kOutOfRange);
  exhaust([&] { return root->names(); }, Code::kOk);
  exhaust([&] { return root->attrs(); }, Code::kOk);
  exhaust([&] { return root->attr("units"); }, Code::kOk);
  exhaust([&] { return root->string(0); }, Code::kInvalidArgument);

  auto x = root->child(std::uint64_t{0});
  REQUIRE(x.is_ok());
  exhaust([&] { return x->array<Dtype::kF64>(); }, Code::kOk);
  exhaust([&] { return x->array<Dtype::kI32>(); }, Code::kInvalidArgument);
  auto strs = root->child(std::uint64_t{1});
  REQUIRE(strs.is_ok());
  exhaust([&] { return strs->string(0); }, Code::kOk);
  exhaust([&] { return strs->string(99); }, Code::kOutOfRange);
  exhaust(
      [&] {
        WalkBudget budget(*root);
        return read_string(*strs, 0, budget);
      },
      Code::kOk);
  exhaust(
      [&] {
        WalkBudget budget(*root);
        return budget.take(*root);
      },
      Code::kOk);
}

TEST_CASE("walk, to_value and verify return OutOfMemory, never abort, when allocations fail", "[core][oom]") {
  const Bytes image = build_ok(kura::test::rich_value());
  auto root = kura::test::root_of(image);
  std::uint64_t visited = 0;
  const std::function<Status(const NodeView&)> count = [&](const NodeView&) {
    ++visited;
    return Status::ok();
  };
  exhaust([&] { return walk(*root, count); }, Code::kOk);
  CHECK(exhaust([&] { return to_value(*root); }, Code::kOk) > 10);
  CHECK(exhaust([&] { return verify(*root); }, Code::kOk) > 0);

  const Bytes shared = shared_child_image();
  auto shared_root = kura::test::root_of(shared);
  exhaust([&] { return verify(*shared_root); }, Code::kCorrupt);
  const Bytes strings = shared_string_bytes_image();
  auto strings_root = kura::test::root_of(strings);
  exhaust([&] { return to_value(*strings_root); }, Code::kCorrupt);
  exhaust([&] { return verify(*strings_root); }, Code::kOk);
}

TEST_CASE("Layout::plan, Writer::write and build return OutOfMemory, never InvalidArgument", "[core][oom]") {
  const Value v = kura::test::rich_value();
  CHECK(exhaust([&] { return Layout::plan(v); }, Code::kOk) > 10);
  const Value duplicate = Value::null().with_attr("k", Value::null()).with_attr("k", Value::null());
  exhaust([&] { return Layout::plan(duplicate); }, Code::kInvalidArgument);
  const Value too_deep = [] {
    Value chain = Value::null();
    for (int i = 0; i < 65; ++i) chain = Value::list({std::move(chain)});
    return chain;
  }();
  exhaust([&] { return Layout::plan(too_deep); }, Code::kInvalidArgument);

  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());
  Bytes dest(layout->size());
  exhaust([&] { return Writer::write(*layout, dest, Stamp{}); }, Code::kOk);
  WriteOptions hashing;
  hashing.hash_copies = true;
  CHECK(exhaust([&] { return Writer::write(*layout, dest, Stamp{}, hashing); }, Code::kOk) > 0);
  Bytes small(64);
  exhaust([&] { return Writer::write(*layout, small, Stamp{}); }, Code::kInvalidArgument);
  CHECK(exhaust([&] { return build(v, Stamp{}, true); }, Code::kOk) > 10);
}
