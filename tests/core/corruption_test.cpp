// Corruption: every field of FORMAT.md sections 3-4 damaged in turn, and
// truncated images. Each damaged image must be reported as Corrupt (or, for
// a path, OutOfRange / NotAList where the spec says so) by every reader that
// reaches the damage; never a crash or a read outside the image (run under
// ASan to see the latter).
#include <algorithm>
#include <catch2/catch.hpp>
#include <functional>
#include <string>

#include "test_images.hpp"

using namespace kura;
using kura::test::build_ok;
using kura::test::get;
using kura::test::node_at;
using kura::test::put;
using kura::test::rehash_region;

namespace {

using Path = std::vector<std::uint64_t>;

constexpr std::uint64_t kHuge = std::uint64_t{1} << 63;

const std::vector<Path>& probe_paths() {
  static const std::vector<Path> paths = {
      {1}, {2}, {3}, {4}, {5}, {6}, {3, 1}, {3, 2}, {3, 3}, {3, 1, 1}, {1, 1}, {9223372036854775807ull}};
  return paths;
}

bool allowed_path_code(Code c) {
  return c == Code::kOk || c == Code::kCorrupt || c == Code::kOutOfRange || c == Code::kNotAList;
}

std::string describe(const Status& s) {
  return s.is_ok() ? "ok" : s.to_string();
}

// Runs every reader over `b`. Region::at on the probe paths and the lookup
// functions on each visited node must each succeed or fail with an allowed
// code. Returns the status of open+root, then of (a) a walk that also
// reads every string entry, (b) to_value and (c) verify.
struct Outcome {
  Status open;  // of Region::open, then root()
  Status walk;
  Status copy;
  Status verify;
};

Outcome read_all(const Bytes& b) {
  Outcome out;
  auto region = Region::open(b);
  if (!region) {
    out.open = region.status();
    return out;
  }
  for (const Path& p : probe_paths()) {
    auto n = region->at(p);
    INFO("at() " << p.size() << " steps: " << (n ? std::string("ok") : n.status().to_string()));
    CHECK(allowed_path_code(n ? Code::kOk : n.status().code()));
  }
  auto root = region->root();
  if (!root) {
    out.open = root.status();
    return out;
  }
  out.walk = walk(*root, [](const NodeView& n) -> Status {
    if (n.kind() == Kind::kStrings) {
      for (std::uint64_t i = 0; i < n.length(); ++i) {
        auto s = n.string(i);
        if (!s) return s.status();
      }
    }
    // Lookups on a visited node must not crash either, whatever they say.
    auto a = n.attr("dim");
    if (!a) CHECK(a.status().code() == Code::kCorrupt);
    auto c = n.child("x");
    if (!c) CHECK(allowed_path_code(c.status().code()));
    (void)n.describe();
    (void)n.data();
    (void)n.tag();
    return Status::ok();
  });
  auto v = to_value(*root);
  if (!v) out.copy = v.status();
  auto rep = verify(*root);
  if (!rep) out.verify = rep.status();
  return out;
}

// The image must be refused as Corrupt: by open/root, or else by every
// whole-value reader. `copy_sees_it` is false for damage to the links of a
// names node: to_value turns a names node into a vector of strings and so
// never follows its own names or attributes (walk and verify do).
void expect_corrupt(const Bytes& b, const std::string& what, bool copy_sees_it = true) {
  INFO("damage: " << what);
  Outcome o = read_all(b);
  INFO("open: " << describe(o.open) << "; walk: " << describe(o.walk) << "; to_value: " << describe(o.copy)
                << "; verify: " << describe(o.verify));
  if (!o.open) {
    CHECK(o.open.code() == Code::kCorrupt);
    CHECK_FALSE(o.open.message().empty());
    return;
  }
  CHECK(o.walk.code() == Code::kCorrupt);
  if (copy_sees_it || !o.copy) CHECK(o.copy.code() == Code::kCorrupt);
  CHECK(o.verify.code() == Code::kCorrupt);
}

void expect_clean(const Bytes& b, const std::string& what) {
  INFO("image: " << what);
  Outcome o = read_all(b);
  INFO("open: " << describe(o.open) << "; walk: " << describe(o.walk) << "; to_value: " << describe(o.copy)
                << "; verify: " << describe(o.verify));
  CHECK(o.open.is_ok());
  CHECK(o.walk.is_ok());
  CHECK(o.copy.is_ok());
  CHECK(o.verify.is_ok());
}

// Region::open alone must refuse the image as Corrupt. Returns the message.
std::string expect_open_corrupt(const Bytes& b, const std::string& what) {
  INFO("damage: " << what);
  auto r = Region::open(b);
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == Code::kCorrupt);
  CHECK_FALSE(r.status().message().empty());
  return r.status().message();
}

// Field offsets inside a node header.
constexpr std::uint64_t kKind = 4, kDtype = 5, kFlags = 6, kLength = 8, kDataOffset = 16, kDataSize = 24,
                        kNamesOffset = 32, kAttrsOffset = 40, kTag = 56;

struct Fixture {
  Bytes image = build_ok(kura::test::rich_value(), /*hashed=*/false);
  std::vector<std::uint64_t> nodes = kura::test::node_offsets(image);
  std::uint64_t size = image.size();

  // Whether the node at `off` is some node's names (or an attribute list's
  // keys).
  bool is_names_node(std::uint64_t off) const {
    for (std::uint64_t p : nodes)
      if (node_at(image, p).names_offset == off) return true;
    return false;
  }
  // Offsets of the nodes in the subtree at `off`.
  std::vector<std::uint64_t> subtree(std::uint64_t off) const {
    auto region = Region::open(image);
    REQUIRE(region.is_ok());
    std::optional<NodeView> found;
    Status s = walk(*region->root(), [&](const NodeView& v) {
      if (v.offset() == off) found = v;
      return Status::ok();
    });
    REQUIRE(found.has_value());
    std::vector<std::uint64_t> out;
    s = walk(*found, [&](const NodeView& v) {
      out.push_back(v.offset());
      return Status::ok();
    });
    REQUIRE(s.is_ok());
    return out;
  }
  // Nodes in the subtree at `off` (itself, names, attributes, children).
  std::uint64_t subtree_size(std::uint64_t off) const { return subtree(off).size(); }

  NodeHeader header(std::uint64_t off) const { return node_at(image, off); }
  // A copy of the image with `edit` applied.
  Bytes with(const std::function<void(Bytes&)>& edit) const {
    Bytes b = image;
    edit(b);
    return b;
  }
  std::uint64_t first_of_kind(Kind k, std::uint64_t skip = 0) const {
    for (std::uint64_t off : nodes)
      if (off != skip && node_at(image, off).kind == static_cast<std::uint8_t>(k)) return off;
    FAIL("no node of that kind");
    return 0;
  }
};

}  // namespace

TEST_CASE("the undamaged images read cleanly", "[core]") {
  Fixture f;
  REQUIRE(f.nodes.size() == 20);
  expect_clean(f.image, "rich, unhashed");
  expect_clean(build_ok(kura::test::rich_value(), true), "rich, hashed");
}

TEST_CASE("region header: magic, version, flags", "[core]") {
  Bytes good = build_ok(kura::test::rich_value(), /*hashed=*/true);
  for (int i = 0; i < 4; ++i) {
    Bytes b = good;
    b[i] ^= std::byte{0x20};
    rehash_region(b);
    expect_open_corrupt(b, "magic byte " + std::to_string(i));
  }
  for (std::uint16_t version : {0, 2, 3, 0x100, 0xFFFF}) {
    Bytes b = good;
    put<std::uint16_t>(b, 4, version);
    rehash_region(b);
    CHECK(expect_open_corrupt(b, "version " + std::to_string(version)).find("unsupported") !=
          std::string::npos);
  }
  for (std::uint16_t flags : {0x0, 0x2, 0x4, 0x5, 0x7, 0x8003, 0xFFFF}) {
    Bytes b = good;
    put<std::uint16_t>(b, 6, flags);
    rehash_region(b);
    expect_open_corrupt(b, "flags " + std::to_string(flags));
  }
  // Unsealed: the message says so.
  Bytes unsealed = good;
  put<std::uint16_t>(unsealed, 6, kRegionHashed);
  rehash_region(unsealed);
  CHECK(expect_open_corrupt(unsealed, "unsealed").find("sealed") != std::string::npos);
  // Clearing `hashed` with a fresh header hash gives a valid unhashed region.
  Bytes unhashed = good;
  put<std::uint16_t>(unhashed, 6, kRegionSealed);
  rehash_region(unhashed);
  expect_clean(unhashed, "hashed flag cleared");
}

TEST_CASE("region header: sizes, root offset, node count", "[core]") {
  Bytes good = build_ok(kura::test::rich_value(), /*hashed=*/true);
  const std::uint64_t size = good.size();
  for (std::uint64_t rs :
       {std::uint64_t{0}, std::uint64_t{64}, size - 64, size - 1, size + 1, size + 64, kHuge, UINT64_MAX}) {
    Bytes b = good;
    put<std::uint64_t>(b, 8, rs);
    rehash_region(b);
    expect_open_corrupt(b, "region_size " + std::to_string(rs));
  }
  for (std::uint64_t ro :
       {std::uint64_t{0}, std::uint64_t{1}, std::uint64_t{32}, std::uint64_t{65}, std::uint64_t{100}, size,
        size - 32, size + 64, kHuge, UINT64_MAX - 63, UINT64_MAX}) {
    Bytes b = good;
    put<std::uint64_t>(b, 16, ro);
    rehash_region(b);
    expect_open_corrupt(b, "root_offset " + std::to_string(ro));
  }
  for (std::uint64_t nc : {size / 64 + 1, std::uint64_t{1} << 40, kHuge, UINT64_MAX}) {
    Bytes b = good;
    put<std::uint64_t>(b, 24, nc);
    rehash_region(b);
    expect_open_corrupt(b, "node_count " + std::to_string(nc));
  }
  // A node_count below the real count opens, but a whole walk runs out.
  for (std::uint64_t nc : {0, 1, 5, 19}) {
    Bytes b = good;
    put<std::uint64_t>(b, 24, nc);
    rehash_region(b);
    expect_corrupt(b, "node_count " + std::to_string(nc));
  }
  // A root_offset that is a valid offset but not a header.
  {
    NodeHeader root = node_at(good, 64);
    Bytes b = good;
    put<std::uint64_t>(b, 16, root.data_offset);
    rehash_region(b);
    expect_corrupt(b, "root_offset at a data block");
  }
}

TEST_CASE("region header: header_hash", "[core]") {
  Bytes good = build_ok(kura::test::rich_value(), /*hashed=*/true);
  // Stale: a field changed, the hash not recomputed.
  for (std::uint64_t off : {8, 16, 24, 32, 40, 44, 48, 55}) {
    Bytes b = good;
    b[off] ^= std::byte{0x01};
    CHECK(expect_open_corrupt(b, "stale hash after changing byte " + std::to_string(off)).find("hash") !=
          std::string::npos);
  }
  // The hash itself damaged.
  for (std::uint64_t off = 56; off < 64; ++off) {
    Bytes b = good;
    b[off] ^= std::byte{0x80};
    expect_open_corrupt(b, "header_hash byte " + std::to_string(off));
  }
  // The informational and reserved fields are free once rehashed.
  Bytes b = good;
  put<std::uint64_t>(b, 32, 999);
  put<std::uint32_t>(b, 40, 7);
  put<std::uint32_t>(b, 44, 0xFFFFFFFFu);
  put<std::uint64_t>(b, 48, 0x0123456789ABCDEFull);
  rehash_region(b);
  expect_clean(b, "informational and reserved fields changed, rehashed");
}

TEST_CASE("truncated images are Corrupt", "[core]") {
  Bytes good = build_ok(kura::test::rich_value(), /*hashed=*/true);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 200; ++n) lengths.push_back(n);
  for (std::size_t n = 256; n < good.size(); n += 64) lengths.push_back(n);
  lengths.push_back(good.size() - 64);
  lengths.push_back(good.size() - 1);
  for (std::size_t n : lengths) {
    Bytes b(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    expect_open_corrupt(b, "truncated to " + std::to_string(n));
    // The same, but with region_size (and node_count, when it no longer
    // fits) rewritten to claim the shorter size: opening may succeed, but
    // the pieces past the end are found missing.
    if (n >= 64) {
      put<std::uint64_t>(b, 8, n);
      put<std::uint64_t>(b, 24, std::min<std::uint64_t>(get<std::uint64_t>(b, 24), n / 64));
      rehash_region(b);
      expect_corrupt(b, "truncated to " + std::to_string(n) + " with a matching region_size");
    }
  }
}

TEST_CASE("node header: magic, kind, dtype, flags, tag", "[core]") {
  Fixture f;
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    const std::string at =
        " of the " + std::string(kind_name(static_cast<Kind>(h.kind))) + " node at " + std::to_string(off);
    for (int i = 0; i < 4; ++i)
      expect_corrupt(f.with([&](Bytes& b) { b[off + i] ^= std::byte{0x01}; }),
                     "magic byte " + std::to_string(i) + at);
    for (std::uint8_t kind : {5, 6, 128, 255})
      expect_corrupt(f.with([&](Bytes& b) { put<std::uint8_t>(b, off + kKind, kind); }),
                     "kind " + std::to_string(kind) + at);
    if (h.kind == static_cast<std::uint8_t>(Kind::kArray)) {
      for (std::uint8_t dtype : {0, 13, 14, 255})
        expect_corrupt(f.with([&](Bytes& b) { put<std::uint8_t>(b, off + kDtype, dtype); }),
                       "dtype " + std::to_string(dtype) + at);
      // A dtype of another width no longer matches data_size.
      std::uint8_t other = dtype_width(static_cast<Dtype>(h.dtype)) == 8 ? 6 : 7;
      expect_corrupt(f.with([&](Bytes& b) { put<std::uint8_t>(b, off + kDtype, other); }),
                     "dtype width" + at);
    } else {
      for (std::uint8_t dtype : {1, 10, 12, 13, 255})
        expect_corrupt(f.with([&](Bytes& b) { put<std::uint8_t>(b, off + kDtype, dtype); }),
                       "dtype " + std::to_string(dtype) + at);
    }
    for (std::uint16_t flags : {1, 2, 0x8000, 0xFFFF})
      expect_corrupt(f.with([&](Bytes& b) { put<std::uint16_t>(b, off + kFlags, flags); }),
                     "flags " + std::to_string(flags) + at);
    if (h.kind != static_cast<std::uint8_t>(Kind::kBytes)) {
      for (int i : {0, 3, 7})
        expect_corrupt(f.with([&](Bytes& b) { put<char>(b, off + kTag + i, 'x'); }),
                       "tag byte " + std::to_string(i) + at);
    } else {
      // Any tag is fine on a bytes node.
      expect_clean(f.with([&](Bytes& b) { std::memcpy(b.data() + off + kTag, "arrowzzz", 8); }),
                   "new tag" + at);
    }
  }
}

TEST_CASE("node header: length and data_size", "[core]") {
  Fixture f;
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    const Kind kind = static_cast<Kind>(h.kind);
    const std::string at = " of the " + std::string(kind_name(kind)) + " node at " + std::to_string(off);
    auto set = [&](std::uint64_t field, std::uint64_t v) {
      return f.with([&](Bytes& b) { put<std::uint64_t>(b, off + field, v); });
    };
    if (kind != Kind::kStrings) {
      expect_corrupt(set(kLength, h.length + 1), "length + 1" + at);
      if (h.length) expect_corrupt(set(kLength, h.length - 1), "length - 1" + at);
    } else {
      expect_corrupt(set(kLength, h.data_size / 16 + 1), "length past the entries" + at);
      expect_corrupt(set(kLength, std::uint64_t{1} << 60), "length 2^60" + at);
    }
    expect_corrupt(set(kLength, UINT64_MAX), "length 2^64-1" + at);
    expect_corrupt(set(kLength, kHuge), "length 2^63" + at);
    if (h.data_size) {
      if (kind != Kind::kStrings) expect_corrupt(set(kDataSize, h.data_size + 8), "data_size + 8" + at);
      expect_corrupt(set(kDataSize, h.data_size - 1), "data_size - 1" + at);
      expect_corrupt(set(kDataSize, 0), "data_size 0" + at);
      expect_corrupt(set(kDataSize, f.size), "data_size = region size" + at);
      expect_corrupt(set(kDataSize, UINT64_MAX), "data_size 2^64-1" + at);
      expect_corrupt(set(kDataSize, UINT64_MAX - h.data_offset + 1),
                     "data_offset + data_size wraps to 0" + at);
    } else {
      expect_corrupt(set(kDataSize, 8), "data_size 8 with data_offset 0" + at);
    }
  }
}

TEST_CASE("node header: data_offset", "[core]") {
  Fixture f;
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    const std::string at =
        " of the " + std::string(kind_name(static_cast<Kind>(h.kind))) + " node at " + std::to_string(off);
    auto set = [&](std::uint64_t v) {
      return f.with([&](Bytes& b) { put<std::uint64_t>(b, off + kDataOffset, v); });
    };
    if (h.data_size) {
      for (std::uint64_t d : {h.data_offset + 1, h.data_offset + 8, h.data_offset + 32, h.data_offset - 1})
        expect_corrupt(set(d), "data_offset unaligned " + std::to_string(d) + at);
      // The last aligned offset whose block runs past the end, and beyond.
      const std::uint64_t last = (f.size - h.data_size + 64) & ~std::uint64_t{63};
      for (std::uint64_t d :
           {last, f.size, f.size + 64, kHuge, UINT64_MAX - 63, UINT64_MAX & ~std::uint64_t{63}})
        expect_corrupt(set(d), "data_offset past the end " + std::to_string(d) + at);
      expect_corrupt(set(0), "data_offset 0 with data_size > 0" + at);
    } else {
      // A null node's data_offset must be 0.
      expect_corrupt(set(64), "data_offset 64 on a null node" + at);
      expect_corrupt(set(kHuge), "data_offset 2^63 on a null node" + at);
    }
  }
}

TEST_CASE("node header: names_offset and attrs_offset", "[core]") {
  Fixture f;
  const std::uint64_t a_list_with_attrs = 64;
  const std::uint64_t an_array = f.first_of_kind(Kind::kArray);
  const std::uint64_t a_null = f.first_of_kind(Kind::kNull);
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    const std::string at =
        " of the " + std::string(kind_name(static_cast<Kind>(h.kind))) + " node at " + std::to_string(off);
    const bool copy = !f.is_names_node(off);
    for (std::uint64_t field : {kNamesOffset, kAttrsOffset}) {
      const std::string which = field == kNamesOffset ? "names_offset " : "attrs_offset ";
      auto set = [&](std::uint64_t v) {
        return f.with([&](Bytes& b) { put<std::uint64_t>(b, off + field, v); });
      };
      for (std::uint64_t v :
           {std::uint64_t{1}, std::uint64_t{32}, std::uint64_t{63}, std::uint64_t{100}, std::uint64_t{64 + 8},
            f.size, f.size - 32, f.size + 64, kHuge, UINT64_MAX, UINT64_MAX & ~std::uint64_t{63}})
        expect_corrupt(set(v), which + std::to_string(v) + at, copy);
      expect_corrupt(set(off), which + "pointing at the node itself" + at, copy);
      if (off != 64) expect_corrupt(set(64), which + "pointing at the root (an ancestor)" + at, copy);
      // Wrong kinds: names must be strings, attrs a named list.
      if (off != an_array) expect_corrupt(set(an_array), which + "at an array" + at, copy);
      expect_corrupt(set(a_null), which + "at a null" + at, copy);
      // A data block is not a node header.
      expect_corrupt(set(f.header(an_array).data_offset), which + "at a data block" + at, copy);
    }
    // Names at a strings node of the wrong length.
    for (std::uint64_t s : f.nodes) {
      NodeHeader sh = f.header(s);
      if (sh.kind != static_cast<std::uint8_t>(Kind::kStrings) || sh.length == h.length || s == off) continue;
      expect_corrupt(f.with([&](Bytes& b) { put<std::uint64_t>(b, off + kNamesOffset, s); }),
                     "names_offset at a strings node of length " + std::to_string(sh.length) + at, copy);
      break;
    }
    // Attrs at a list that has attributes of its own (the root).
    if (off != 64)
      expect_corrupt(f.with([&](Bytes& b) { put<std::uint64_t>(b, off + kAttrsOffset, a_list_with_attrs); }),
                     "attrs_offset at a list with attributes" + at, copy);
    // An attribute list must have names.
    if (h.kind == static_cast<std::uint8_t>(Kind::kList) && h.names_offset && off != 64) {
      bool is_attr_list = false;
      for (std::uint64_t p : f.nodes) is_attr_list = is_attr_list || f.header(p).attrs_offset == off;
      if (is_attr_list)
        expect_corrupt(f.with([&](Bytes& b) { put<std::uint64_t>(b, off + kNamesOffset, 0); }),
                       "an attribute list without names" + at);
    }
  }
}

TEST_CASE("attribute lists: without names, with attributes, with an NA key", "[core]") {
  // x's attributes point at a list that has no names.
  Value v = Value::list({Value::f64({1}).with_attr("k", Value::null()), Value::list({Value::null()})});
  Bytes good = build_ok(v, false);
  expect_clean(good, "attrs test value");
  auto offsets = kura::test::node_offsets(good);
  // Pre-order: root 64, f64, its attrs list, keys, null, the second list, null.
  REQUIRE(offsets.size() == 7);
  const std::uint64_t x = offsets[1], attr_list = offsets[2], plain_list = offsets[5];
  {
    Bytes b = good;
    put<std::uint64_t>(b, x + kAttrsOffset, plain_list);
    expect_corrupt(b, "attrs at a list without names");
  }
  {
    // The attribute list given attributes of its own (its own keys node
    // reused as a fake attribute list is also wrong-kind).
    Bytes b = good;
    put<std::uint64_t>(b, attr_list + kAttrsOffset, attr_list);
    expect_corrupt(b, "attribute list with attrs_offset set");
  }
  {
    // The key is NA: only a converting reader cares (walk and verify check
    // structure, keys are checked by to_value).
    const std::uint64_t keys = node_at(good, attr_list).names_offset;
    Bytes b = good;
    put<std::int32_t>(b, node_at(good, keys).data_offset + 8, -1);
    auto region = Region::open(b);
    REQUIRE(region.is_ok());
    auto copy = to_value(*region->root());
    REQUIRE_FALSE(copy.is_ok());
    CHECK(copy.status().code() == Code::kCorrupt);
    // And attr() with any key does not find it, or crash.
    auto x_node = region->at(Path{1});
    REQUIRE(x_node.is_ok());
    auto k = x_node->attr("k");
    REQUIRE(k.is_ok());
    CHECK_FALSE(k->has_value());
  }
}

TEST_CASE("list child offsets", "[core]") {
  Fixture f;
  const std::uint64_t an_array = f.first_of_kind(Kind::kArray);
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    if (h.kind != static_cast<std::uint8_t>(Kind::kList)) continue;
    for (std::uint64_t i = 0; i < h.length; ++i) {
      const std::uint64_t slot = h.data_offset + 8 * i;
      const std::uint64_t child = get<std::uint64_t>(f.image, slot);
      const std::string at = " in child " + std::to_string(i + 1) + " of the list at " + std::to_string(off);
      auto set = [&](std::uint64_t v) { return f.with([&](Bytes& b) { put<std::uint64_t>(b, slot, v); }); };
      for (std::uint64_t v : {std::uint64_t{0}, child + 1, child + 8, child + 32, child - 1, f.size,
                              f.size - 32, f.size + 64, kHuge, UINT64_MAX, UINT64_MAX & ~std::uint64_t{63}})
        expect_corrupt(set(v), "child offset " + std::to_string(v) + at);
      expect_corrupt(set(off), "child offset pointing at its own list" + at);
      expect_corrupt(set(64), "child offset pointing at the root" + at);
      expect_corrupt(set(f.header(an_array).data_offset), "child offset at a data block" + at);
      // Pointing at another node makes two links to it. Walks find that by
      // counting (FORMAT.md 5.3) when the shared subtree is larger than the
      // one it replaces: a walk meets more nodes than node_count.
      const std::uint64_t replaced = f.subtree_size(child);
      for (std::uint64_t other : f.nodes) {
        if (other == child || other == off || other == 64 || f.subtree_size(other) <= replaced) continue;
        expect_corrupt(set(other), "child offset shared with node " + std::to_string(other) + at);
        break;
      }
      // verify() finds every such link, whatever the counts (FORMAT.md 5.4:
      // the tree rule). A node below the child it replaces is not shared:
      // its only link went with that child.
      const std::vector<std::uint64_t> below = f.subtree(child);
      for (std::uint64_t other : f.nodes) {
        if (std::find(below.begin(), below.end(), other) != below.end()) continue;
        INFO("child offset shared with node " << other << at);
        Bytes b = set(other);
        auto region = Region::open(b);
        REQUIRE(region.is_ok());
        CHECK(verify(*region->root()).status().code() == Code::kCorrupt);
      }
    }
  }
  // Region::at reports the damage on the path it walks.
  Bytes b = f.with([&](Bytes& img) {
    NodeHeader inner = node_at(img, get<std::uint64_t>(img, node_at(img, 64).data_offset + 16));
    put<std::uint64_t>(img, inner.data_offset, 64);  // [3,1] -> the root
  });
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  auto cyc = region->at(Path{3, 1});
  REQUIRE_FALSE(cyc.is_ok());
  CHECK(cyc.status().code() == Code::kCorrupt);
  CHECK(cyc.status().message().find("ancestor") != std::string::npos);
  CHECK(region->at(Path{3, 2}).is_ok());
}

TEST_CASE("string entries", "[core]") {
  Fixture f;
  int checked = 0;
  for (std::uint64_t off : f.nodes) {
    const NodeHeader h = f.header(off);
    if (h.kind != static_cast<std::uint8_t>(Kind::kStrings)) continue;
    const std::uint64_t packed_start = align64(16 * h.length);
    const std::uint64_t packed_size = h.data_size - packed_start;
    for (std::uint64_t i = 0; i < h.length; ++i) {
      const std::uint64_t e = h.data_offset + 16 * i;
      const auto entry_offset = get<std::uint64_t>(f.image, e);
      const auto nbytes = get<std::int32_t>(f.image, e + 8);
      const std::string at =
          " in entry " + std::to_string(i + 1) + " of the strings node at " + std::to_string(off);
      for (std::int32_t nb : {-2, -100, INT32_MIN})
        expect_corrupt(f.with([&](Bytes& b) { put<std::int32_t>(b, e + 8, nb); }),
                       "nbytes " + std::to_string(nb) + at);
      for (std::uint8_t enc : {3, 4, 255})
        expect_corrupt(f.with([&](Bytes& b) { put<std::uint8_t>(b, e + 12, enc); }),
                       "encoding " + std::to_string(enc) + at);
      // Padding is ignored on read.
      expect_clean(f.with([&](Bytes& b) { put<std::uint8_t>(b, e + 13, 0xFF); }), "entry padding set" + at);
      if (nbytes == -1) continue;
      ++checked;
      for (std::uint64_t o :
           {packed_size, packed_size - static_cast<std::uint64_t>(nbytes), packed_size + 1000, kHuge,
            UINT64_MAX, UINT64_MAX - static_cast<std::uint64_t>(nbytes)})
        expect_corrupt(f.with([&](Bytes& b) { put<std::uint64_t>(b, e, o); }),
                       "entry offset " + std::to_string(o) + at);
      for (std::int32_t nb :
           {static_cast<std::int32_t>(packed_size), static_cast<std::int32_t>(packed_size) + 1000, INT32_MAX})
        expect_corrupt(f.with([&](Bytes& b) { put<std::int32_t>(b, e + 8, nb); }),
                       "nbytes " + std::to_string(nb) + at);
      // The terminator overwritten.
      const std::uint64_t term =
          h.data_offset + packed_start + entry_offset + static_cast<std::uint64_t>(nbytes);
      expect_corrupt(f.with([&](Bytes& b) { put<char>(b, term, 'Z'); }), "terminator missing" + at);
    }
  }
  CHECK(checked >= 10);
}

TEST_CASE("lengths whose byte size overflows 64 bits", "[core]") {
  Fixture f;
  auto region = Region::open(f.image);
  REQUIRE(region.is_ok());
  const std::uint64_t x = region->at(Path{1})->offset();   // f64 array of 3
  const std::uint64_t root = 64;                           // list of 5
  const std::uint64_t s = region->at(Path{2})->offset();   // strings of 5
  const std::uint64_t by = region->at(Path{4})->offset();  // bytes of 5
  struct Case {
    std::uint64_t node;
    std::uint64_t length;
    std::uint64_t data_size;  // what length * width wraps to
    const char* what;
  };
  const Case cases[] = {
      {x, std::uint64_t{1} << 61, 0, "f64 length 2^61 (8 * 2^61 wraps to 0)"},
      {x, (std::uint64_t{1} << 61) + 3, 24, "f64 length 2^61 + 3 (wraps to 24)"},
      {root, (std::uint64_t{1} << 61) + 5, 40, "list length 2^61 + 5 (wraps to 40)"},
      {root, std::uint64_t{1} << 61, 0, "list length 2^61 (wraps to 0)"},
      {s, std::uint64_t{1} << 60, 0, "strings length 2^60 (16 * 2^60 wraps to 0)"},
      {s, (std::uint64_t{1} << 60) + 8, 128, "strings length 2^60 + 8 (entries wrap to 128)"},
      {by, UINT64_MAX, UINT64_MAX, "bytes length 2^64-1"},
  };
  for (const Case& c : cases) {
    Bytes b = f.with([&](Bytes& img) {
      put<std::uint64_t>(img, c.node + kLength, c.length);
      put<std::uint64_t>(img, c.node + kDataSize, c.data_size);
      if (c.data_size == 0) put<std::uint64_t>(img, c.node + kDataOffset, 0);
    });
    expect_corrupt(b, c.what);
  }
  // A c128 array: 16 * (2^60 + 1) wraps to 16.
  Bytes c = build_ok(Value::array<Dtype::kC128>({{1.0, 2.0}}), false);
  put<std::uint64_t>(c, 64 + kLength, (std::uint64_t{1} << 60) + 1);
  expect_corrupt(c, "c128 length 2^60 + 1 (wraps to 16)");
}

TEST_CASE("depth past 64 in an image is Corrupt", "[core]") {
  // Chain of 64 lists ending in an empty list E at depth 64, plus a spare
  // null and a u64 array whose block is reused as E's child table.
  Value chain = Value::list({});
  for (int i = 0; i < 63; ++i) chain = Value::list({std::move(chain)});
  Value v = Value::list({std::move(chain), Value::null(), Value::array<Dtype::kU64>({0})});
  Bytes b = build_ok(v, false);
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  std::vector<std::uint64_t> path(64, 1);
  auto e = region->at(path);
  REQUIRE(e.is_ok());
  REQUIRE(e->depth() == 64);
  REQUIRE(e->length() == 0);
  const std::uint64_t null_off = region->at(Path{2})->offset();
  const std::uint64_t table = region->at(Path{3})->header().data_offset;
  put<std::uint64_t>(b, table, null_off);
  put<std::uint64_t>(b, e->offset() + kLength, 1);
  put<std::uint64_t>(b, e->offset() + kDataOffset, table);
  put<std::uint64_t>(b, e->offset() + kDataSize, 8);
  region = Region::open(b);
  REQUIRE(region.is_ok());
  path.push_back(1);
  auto deep = region->at(path);
  REQUIRE_FALSE(deep.is_ok());
  CHECK(deep.status().code() == Code::kCorrupt);
  CHECK(deep.status().message().find("deeper") != std::string::npos);
  CHECK(walk(*region->root(), [](const NodeView&) { return Status::ok(); }).code() == Code::kCorrupt);
  CHECK(to_value(*region->root()).status().code() == Code::kCorrupt);
  CHECK(verify(*region->root()).status().code() == Code::kCorrupt);
}

TEST_CASE("every single-byte flip of a small image is handled", "[core]") {
  // Not every flip is damage (padding, data bytes of an unhashed region),
  // but none may crash, and in a hashed region every flip inside a header or
  // a data block is found by verify().
  Bytes good = build_ok(kura::test::rich_value(), true);
  for (std::size_t i = 0; i < good.size(); ++i) {
    for (std::uint8_t mask : {0x01, 0x80}) {
      Bytes b = good;
      b[i] ^= std::byte{mask};
      Outcome o = read_all(b);
      if (!o.open) CHECK(o.open.code() == Code::kCorrupt);
      if (!o.walk) CHECK(o.walk.code() == Code::kCorrupt);
      if (!o.copy) CHECK(o.copy.code() == Code::kCorrupt);
      if (!o.verify) CHECK(o.verify.code() == Code::kCorrupt);
    }
  }
}

TEST_CASE("links that share one node cannot make a walk do more than O(region size) work", "[core]") {
  // list(<32 KiB f64 array>, <1-element f64 array>), then the second child
  // offset is pointed at the first child: a DAG, not a tree. Its node count
  // (3) stays within node_count, but the walk would read the big block twice.
  std::vector<double> big(4096, 1.0);
  Value v = Value::list({Value::array_borrowed(Dtype::kF64, big.data(), big.size()), Value::f64({2.0})});
  Bytes b = build_ok(v, /*hashed=*/false);
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  const NodeHeader list = node_at(b, region->header().root_offset);
  const auto first = get<std::uint64_t>(b, list.data_offset);
  put<std::uint64_t>(b, list.data_offset + 8, first);

  auto root = region->root();
  REQUIRE(root.is_ok());
  auto second = root->child(1);  // a single step is fine: it is no ancestor
  REQUIRE(second.is_ok());
  CHECK(second->length() == 4096);

  Status walked = walk(*root, [](const NodeView&) { return Status::ok(); });
  CHECK(walked.code() == Code::kCorrupt);
  CHECK(to_value(*root).status().code() == Code::kCorrupt);
  CHECK(verify(*root).status().code() == Code::kCorrupt);
}

TEST_CASE("a bytes tag that is not printable ASCII padded with zeros is Corrupt in every reader", "[core]") {
  Fixture f;
  const std::uint64_t blob = f.first_of_kind(Kind::kBytes);  // [4], tagged "json"
  const std::pair<const char*, std::size_t> tags[] = {
      {"js\xffn", 4}, {"\xff", 1},        {"js\0n", 4},
      {"\0json", 5},  {" json", 5},       {"json\x7f", 5},
      {"\x01", 1},    {"json\0\0\0x", 8}, {"\x80\x80\x80\x80\x80\x80\x80\x80", 8}};
  for (const auto& [tag, size] : tags) {
    const std::string what = "tag \"" + std::string(tag, size) + "\"";
    Bytes b = f.with([&](Bytes& img) {
      std::memset(img.data() + blob + kTag, 0, 8);
      std::memcpy(img.data() + blob + kTag, tag, size);
    });
    expect_corrupt(b, what);
    auto region = Region::open(b);
    REQUIRE(region.is_ok());
    auto at = region->at(Path{4});
    INFO(what);
    REQUIRE_FALSE(at.is_ok());
    CHECK(at.status().code() == Code::kCorrupt);
    CHECK(at.status().message().find("tag") != std::string::npos);
  }
  // Printable at both ends of the range, and all zeros (no tag), are fine.
  for (const char* tag : {"!~", "~~~~~~~~", ""}) {
    Bytes b = f.with([&](Bytes& img) {
      std::memset(img.data() + blob + kTag, 0, 8);
      std::memcpy(img.data() + blob + kTag, tag, std::strlen(tag));
    });
    expect_clean(b, "tag \"" + std::string(tag) + "\"");
  }
}

namespace {

// Field offsets of the list at 64 and of its children, for the tree rule.
struct TwoChildren {
  Bytes image;
  std::uint64_t list_block;  // the root's child offsets
  std::uint64_t first;
  std::uint64_t second;

  explicit TwoChildren(const Value& v) : image(build_ok(v, /*hashed=*/false)) {
    list_block = node_at(image, 64).data_offset;
    first = get<std::uint64_t>(image, list_block);
    second = get<std::uint64_t>(image, list_block + 8);
  }
};

// `b` reads cleanly everywhere but verify(), which finds the tree rule
// broken: `says` is part of its message.
void expect_only_verify_sees_it(const Bytes& b, const std::string& what, const std::string& says) {
  INFO(what);
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  auto root = region->root();
  REQUIRE(root.is_ok());
  CHECK(walk(*root, [](const NodeView&) { return Status::ok(); }).is_ok());
  CHECK(to_value(*root).is_ok());
  auto rep = verify(*root);
  REQUIRE_FALSE(rep.is_ok());
  INFO(rep.status().message());
  CHECK(rep.status().code() == Code::kCorrupt);
  CHECK(rep.status().message().find(says) != std::string::npos);
}

}  // namespace

TEST_CASE("verify checks the tree rule: nothing reached twice, no two pieces overlap", "[core]") {
  SECTION("a child shared by two links") {
    TwoChildren t(Value::list({Value::f64({1}), Value::f64({2})}));
    put<std::uint64_t>(t.image, t.list_block + 8, t.first);
    expect_only_verify_sees_it(t.image, "both children at one node", "reached by two links");
  }
  SECTION("two data blocks that are the same bytes") {
    TwoChildren t(Value::list({Value::f64({1, 2}), Value::f64({3, 4})}));
    put<std::uint64_t>(t.image, t.second + kDataOffset, node_at(t.image, t.first).data_offset);
    expect_only_verify_sees_it(t.image, "one data block for two arrays", "overlap");
  }
  SECTION("a data block inside another one") {
    std::vector<double> big(16, 1.0);
    TwoChildren t(Value::list({Value::array_borrowed(Dtype::kF64, big.data(), big.size()), Value::f64({2})}));
    put<std::uint64_t>(t.image, t.second + kDataOffset, node_at(t.image, t.first).data_offset + 64);
    expect_only_verify_sees_it(t.image, "the second block in the second half of the first", "overlap");
  }
  SECTION("a names node shared by two nodes") {
    TwoChildren t(Value::list({Value::f64({1, 2}).with_names({String{"a"}, String{"b"}}),
                               Value::f64({3, 4}).with_names({String{"c"}, String{"d"}})}));
    put<std::uint64_t>(t.image, t.second + kNamesOffset, node_at(t.image, t.first).names_offset);
    expect_only_verify_sees_it(t.image, "one names node for two arrays", "reached by two links");
  }
  SECTION("a node header inside another node's data block") {
    // A bytes node whose payload holds, at 64, a valid null node header; the
    // list's second child is pointed there instead of at its own null.
    NodeHeader null_header{};
    std::memcpy(null_header.magic, "KNOD", 4);
    std::string payload(128, '\0');
    std::memcpy(payload.data() + 64, &null_header, sizeof null_header);
    TwoChildren t(Value::list({Value::bytes("raw", kura::test::as_bytes_of(payload)), Value::null()}));
    put<std::uint64_t>(t.image, t.list_block + 8, node_at(t.image, t.first).data_offset + 64);
    expect_only_verify_sees_it(t.image, "a header in a bytes payload", "overlap");
  }
  SECTION("a valid tree passes, hashed or not") {
    for (bool hashed : {false, true}) {
      const Bytes b = build_ok(kura::test::rich_value(), hashed);
      CHECK(verify(*kura::test::root_of(b)).is_ok());
    }
  }
}

TEST_CASE("string entries that share their bytes cannot make a copy do more than O(region size) work",
          "[core]") {
  // 2000 strings whose entries all point at the same 2000 bytes: about 96 KiB
  // of region that would copy out as 4 MB.
  constexpr std::uint64_t kCount = 2000, kLong = 2000;
  auto shared_bytes = [&](Value v, bool names) {
    Bytes b = build_ok(v, /*hashed=*/false);
    const std::uint64_t strings = names ? node_at(b, 64).names_offset : 64;
    const NodeHeader h = node_at(b, strings);
    for (std::uint64_t i = 1; i < kCount; ++i) {
      put<std::uint64_t>(b, h.data_offset + 16 * i, 0);
      put<std::int32_t>(b, h.data_offset + 16 * i + 8, static_cast<std::int32_t>(kLong));
    }
    return b;
  };
  std::vector<String> xs(kCount, String{""});
  xs[0].bytes.assign(kLong, 'x');
  std::vector<Value> nulls(kCount);
  const Bytes strings = shared_bytes(Value::strings_of(xs), false);
  const Bytes names = shared_bytes(Value::list(nulls).with_names(xs), true);
  for (const Bytes* b : {&strings, &names}) {
    auto root = kura::test::root_of(*b);
    // Structure is fine: every entry lies inside its block (FORMAT.md 4.2).
    CHECK(verify(*root).is_ok());
    auto copy = to_value(*root);
    REQUIRE_FALSE(copy.is_ok());
    CHECK(copy.status().code() == Code::kCorrupt);
    CHECK(copy.status().message().find("share their bytes") != std::string::npos);
  }
  // read_string charges before it copies: what it hands out is bounded by the
  // region's size, whatever the entries say.
  auto root = kura::test::root_of(strings);
  WalkBudget budget(*root);
  std::uint64_t copied = 0, i = 0;
  Status last = Status::ok();
  for (; i < kCount; ++i) {
    auto s = read_string(*root, i, budget);
    if (!s) {
      last = s.status();
      break;
    }
    copied += s->bytes.size() + 1;
  }
  CHECK(last.code() == Code::kCorrupt);
  CHECK(copied <= strings.size());
  CHECK(i < kCount);
}
