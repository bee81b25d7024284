// Helpers shared by the core tests: sample values, raw field access to a
// region image, and a reader that exercises every entry point on an image.
#pragma once

#include <catch2/catch.hpp>
#include <cstdint>
#include <cstring>
#include <vector>

#include "kura/core/builder.hpp"
#include "kura/core/hash.hpp"
#include "kura/core/verify.hpp"
#include "kura/core/view.hpp"

namespace kura::test {

inline std::span<const std::byte> as_bytes_of(const std::string& s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

// A value using every feature: nested lists, strings of all encodings with
// NA and "", names, attributes (one of them decorated itself), bytes, null.
inline Value rich_value() {
  Value inner = Value::list({Value::i32({1, 2, 3}), Value::null()}).with_names({String{"a"}, String::NA()});
  Value strs =
      Value::strings_of({String{"utf8 \xc3\xa9"}, String::NA(), String{""},
                         String{"latin1 \xe9", Encoding::kLatin1}, String{"\x01\x02", Encoding::kBytes}});
  Value arr = Value::f64({1.5, -2.0, 0.0});
  arr.with_attr("dim", Value::i32({3, 1}))
      .with_attr("class", Value::strings_utf8({"matrix", "array"}).with_attr("note", Value::f64({7})));
  std::string blob = "hello";
  return Value::list({arr, strs, inner, Value::bytes("json", as_bytes_of(blob)), Value::null()})
      .with_names({String{"x"}, String{"s"}, String{"inner"}, String{"b"}, String{"n"}})
      .with_attr("units", Value::strings_utf8({"m"}));
}

inline Bytes build_ok(const Value& v, bool hashed = true) {
  auto r = build(v, Stamp{123, 456}, hashed);
  INFO((r.is_ok() ? std::string("ok") : r.status().to_string()));
  REQUIRE(r.is_ok());
  return std::move(r).value();
}

template <class T>
T get(const Bytes& b, std::uint64_t off) {
  REQUIRE(off + sizeof(T) <= b.size());
  T v;
  std::memcpy(&v, b.data() + off, sizeof v);
  return v;
}

template <class T>
void put(Bytes& b, std::uint64_t off, T v) {
  REQUIRE(off + sizeof(T) <= b.size());
  std::memcpy(b.data() + off, &v, sizeof v);
}

// Recomputes the region header hash after a header field was changed, so
// that the check under test (not the hash) is what fails.
inline void rehash_region(Bytes& b) {
  put<std::uint64_t>(b, 56, region_header_hash(std::span<const std::byte>(b).first(56)));
}

inline NodeHeader node_at(const Bytes& b, std::uint64_t off) {
  NodeHeader h;
  REQUIRE(off + 64 <= b.size());
  std::memcpy(&h, b.data() + off, 64);
  return h;
}

// Offsets of every node header in canonical (pre-order) layout order,
// found by walking a valid image.
inline std::vector<std::uint64_t> node_offsets(const Bytes& b) {
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  auto root = region->root();
  REQUIRE(root.is_ok());
  std::vector<std::uint64_t> out;
  Status s = walk(*root, [&](const NodeView& n) {
    out.push_back(n.offset());
    return Status::ok();
  });
  REQUIRE(s.is_ok());
  return out;
}

// Opens `b` and runs every reader over it: root, walk, to_value, verify,
// names/attrs of the root, and a few paths. Returns the first failure, or ok
// when everything succeeded. Never crashes on any input (that is the point).
// The root of an image that must open; fails the test otherwise. The result
// is always ok; it stays a Result so that `root->` reads as elsewhere.
inline Result<NodeView> root_of(const Bytes& b) {
  auto region = Region::open(b);
  INFO((region.is_ok() ? std::string("ok") : region.status().to_string()));
  REQUIRE(region.is_ok());
  auto root = region->root();
  REQUIRE(root.is_ok());
  return root;
}

inline Status read_everything(const Bytes& b, std::vector<std::vector<std::uint64_t>> paths = {}) {
  auto region = Region::open(b);
  if (!region) return region.status();
  auto root = region->root();
  if (!root) return root.status();
  Status first = Status::ok();
  auto note = [&](const Status& s) {
    if (!s && first) first = s;
  };
  note(walk(*root, [](const NodeView& n) -> Status {
    if (n.kind() == Kind::kStrings) {
      for (std::uint64_t i = 0; i < n.length(); ++i) {
        auto s = n.string(i);
        if (!s) return s.status();
      }
    }
    return Status::ok();
  }));
  auto v = to_value(*root);
  if (!v) note(v.status());
  auto rep = verify(*root);
  if (!rep) note(rep.status());
  auto names = root->names();
  if (!names) note(names.status());
  auto attrs = root->attrs();
  if (!attrs) note(attrs.status());
  if (paths.empty()) paths = {{1}, {2}, {3}, {3, 1}, {3, 2}, {4}, {5}};
  for (const auto& p : paths) {
    auto n = region->at(p);
    if (!n) note(n.status());
  }
  return first;
}

}  // namespace kura::test
