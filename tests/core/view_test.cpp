// Views: lookups by index, name and attribute key, the distinct errors of
// FORMAT.md section 5, laziness, and verify().
#include <catch2/catch.hpp>
#include <cstring>
#include <functional>
#include <memory>
#include <new>
#include <stdexcept>

#include "test_images.hpp"

using namespace kura;
using kura::test::build_ok;
using kura::test::get;
using kura::test::put;

namespace {

using Path = std::vector<std::uint64_t>;

Region open_ok(const Bytes& b) {
  auto r = Region::open(b);
  INFO((r.is_ok() ? std::string("ok") : r.status().to_string()));
  REQUIRE(r.is_ok());
  return *r;
}

}  // namespace

TEST_CASE("children by index and by name", "[core]") {
  Bytes b = build_ok(kura::test::rich_value());
  Region region = open_ok(b);
  auto root = region.root();
  REQUIRE(root.is_ok());
  CHECK(root->kind() == Kind::kList);
  CHECK(root->length() == 5);
  CHECK(root->depth() == 0);
  CHECK(root->describe() == "list of 5");

  auto s = root->child("s");
  REQUIRE(s.is_ok());
  CHECK(s->kind() == Kind::kStrings);
  CHECK(s->offset() == region.at(Path{2})->offset());
  CHECK(s->depth() == 1);

  auto inner = root->child("inner");
  REQUIRE(inner.is_ok());
  auto a = inner->child("a");
  REQUIRE(a.is_ok());
  CHECK(a->dtype() == Dtype::kI32);
  CHECK(a->describe() == "i32 array of 3");
  // The NA name matches nothing, not even "NA" or "".
  CHECK(inner->child("NA").status().code() == Code::kOutOfRange);
  CHECK(inner->child("").status().code() == Code::kOutOfRange);
  CHECK(root->child("nope").status().code() == Code::kOutOfRange);
  auto by_name = a->child("x");
  CHECK(by_name.status().code() == Code::kNotAList);

  auto names = root->names();
  REQUIRE(names.is_ok());
  REQUIRE(names->has_value());
  CHECK((*names)->length() == 5);
  CHECK((*names)->string(2)->bytes == "inner");
  auto no_names = region.at(Path{1});
  REQUIRE(no_names.is_ok());
  auto nn = no_names->names();
  REQUIRE(nn.is_ok());
  CHECK_FALSE(nn->has_value());
}

TEST_CASE("the first exact match wins for duplicate names", "[core]") {
  Value v = Value::list({Value::f64({1}), Value::f64({2}), Value::f64({3})})
                .with_names({String{"d"}, String{"dd"}, String{"d"}});
  Bytes b = build_ok(v);
  auto root = open_ok(b).root();
  REQUIRE(root.is_ok());
  auto d = root->child("d");
  REQUIRE(d.is_ok());
  CHECK((*d->array<Dtype::kF64>())[0] == 1.0);
  auto dd = root->child("dd");
  REQUIRE(dd.is_ok());
  CHECK((*dd->array<Dtype::kF64>())[0] == 2.0);
}

TEST_CASE("attributes by key", "[core]") {
  Bytes b = build_ok(kura::test::rich_value());
  Region region = open_ok(b);
  auto x = region.at(Path{1});
  REQUIRE(x.is_ok());
  auto dim = x->attr("dim");
  REQUIRE(dim.is_ok());
  REQUIRE(dim->has_value());
  auto dims = (*dim)->array<Dtype::kI32>();
  REQUIRE(dims.is_ok());
  CHECK(dims->size() == 2);
  CHECK((*dims)[0] == 3);
  auto cls = x->attr("class");
  REQUIRE(cls.is_ok());
  REQUIRE(cls->has_value());
  CHECK((*cls)->string(0)->bytes == "matrix");
  // An attribute of an attribute's value.
  auto note = (*cls)->attr("note");
  REQUIRE(note.is_ok());
  REQUIRE(note->has_value());
  CHECK((*(*note)->array<Dtype::kF64>())[0] == 7.0);
  // Depth counts the attribute list and the link to the value.
  CHECK((*cls)->depth() == 3);
  CHECK((*note)->depth() == 5);

  auto missing = x->attr("dimnames");
  REQUIRE(missing.is_ok());
  CHECK_FALSE(missing->has_value());
  auto none = region.at(Path{5});
  REQUIRE(none.is_ok());
  auto no_attrs = none->attrs();
  REQUIRE(no_attrs.is_ok());
  CHECK_FALSE(no_attrs->has_value());
  auto no_attr = none->attr("dim");
  REQUIRE(no_attr.is_ok());
  CHECK_FALSE(no_attr->has_value());

  auto units = region.root()->attr("units");
  REQUIRE(units.is_ok());
  REQUIRE(units->has_value());
  CHECK((*units)->string(0)->bytes == "m");
}

TEST_CASE("out of range, not a list and index 0 are distinct errors", "[core]") {
  Bytes b = build_ok(kura::test::rich_value());
  Region region = open_ok(b);
  auto past = region.at(Path{6});
  REQUIRE_FALSE(past.is_ok());
  CHECK(past.status().code() == Code::kOutOfRange);
  CHECK_FALSE(past.status().message().empty());
  CHECK(region.at(Path{3, 3}).status().code() == Code::kOutOfRange);
  CHECK(region.at(Path{kMaxIndex}).status().code() == Code::kOutOfRange);
  CHECK(region.at(Path{0}).status().code() == Code::kOutOfRange);

  auto into_array = region.at(Path{1, 1});
  REQUIRE_FALSE(into_array.is_ok());
  CHECK(into_array.status().code() == Code::kNotAList);
  CHECK(region.at(Path{2, 1}).status().code() == Code::kNotAList);  // strings
  CHECK(region.at(Path{4, 1}).status().code() == Code::kNotAList);  // bytes
  CHECK(region.at(Path{5, 1}).status().code() == Code::kNotAList);  // null
  CHECK(region.at(Path{3, 2, 1}).status().code() == Code::kNotAList);
  // A path that goes past the end before reaching a non-list.
  CHECK(region.at(Path{9, 1}).status().code() == Code::kOutOfRange);

  auto root = region.root();
  REQUIRE(root.is_ok());
  CHECK(root->child(5).status().code() == Code::kOutOfRange);
  CHECK(root->child(UINT64_MAX).status().code() == Code::kOutOfRange);
  CHECK(region.at(Path{1})->child(0).status().code() == Code::kNotAList);

  // Wrong-type accessors are InvalidArgument.
  CHECK(root->array<Dtype::kF64>().status().code() == Code::kInvalidArgument);
  CHECK(region.at(Path{1})->array<Dtype::kF32>().status().code() == Code::kInvalidArgument);
  CHECK(root->string(0).status().code() == Code::kInvalidArgument);

  // A name resolves like its path.
  auto name = parse_name("/kura_1f_2a[3,1]");
  REQUIRE(name.is_ok());
  auto via_name = region.at(*name);
  REQUIRE(via_name.is_ok());
  CHECK(via_name->dtype() == Dtype::kI32);
  CHECK(region.at(name->region())->offset() == 64);
}

TEST_CASE("at() touches only the nodes on its path", "[core]") {
  // 100000 children; after building, the offsets of every child but [2] are
  // overwritten with garbage (and so are the other children's headers).
  // Reaching [2] must still work: only the root, its offset entry 2 and the
  // node itself are read. The header hash covers only the region header, so
  // no re-seal is needed.
  constexpr std::uint64_t kChildren = 100000;
  std::vector<Value> children;
  children.reserve(kChildren);
  for (std::uint64_t i = 0; i < kChildren; ++i) children.push_back(Value::null());
  children[1] = Value::f64({2.5});
  Bytes b = build_ok(Value::list(std::move(children)), /*hashed=*/true);

  Region region = open_ok(b);
  auto root = region.root();
  REQUIRE(root.is_ok());
  std::uint64_t table = root->header().data_offset;
  std::uint64_t second = get<std::uint64_t>(b, table + 8);
  std::uint64_t first = get<std::uint64_t>(b, table);
  for (std::uint64_t i = 0; i < kChildren; ++i) {
    if (i == 1) continue;
    put<std::uint64_t>(b, table + 8 * i, 0xDEADBEEFDEADBEEFull + i);
  }
  // Also trash the header of what was child 1.
  put<std::uint32_t>(b, first, 0x12345678u);

  region = open_ok(b);
  auto leaf = region.at(Path{2});
  INFO((leaf.is_ok() ? std::string("ok") : leaf.status().to_string()));
  REQUIRE(leaf.is_ok());
  CHECK(leaf->offset() == second);
  CHECK((*leaf->array<Dtype::kF64>())[0] == 2.5);
  // The damage is still there for whoever steps on it.
  CHECK(region.at(Path{1}).status().code() == Code::kCorrupt);
  CHECK(region.at(Path{kChildren}).status().code() == Code::kCorrupt);
  CHECK(region.at(Path{kChildren + 1}).status().code() == Code::kOutOfRange);
  CHECK(verify(*region.root()).status().code() == Code::kCorrupt);
}

TEST_CASE("verify detects a flipped byte in a hashed region", "[core]") {
  Value v = kura::test::rich_value();
  Bytes b = build_ok(v, /*hashed=*/true);
  {
    Region region = open_ok(b);
    auto rep = verify(*region.root());
    REQUIRE(rep.is_ok());
    CHECK(rep->hashed);
    CHECK(rep->nodes == region.header().node_count);
  }
  // Flip one byte of the f64 data block: structure is intact, so to_value
  // and at() succeed, but verify() fails.
  Region region = open_ok(b);
  auto x = region.at(Path{1});
  REQUIRE(x.is_ok());
  Bytes flipped = b;
  flipped[x->header().data_offset + 3] ^= std::byte{0x10};
  Region r2 = open_ok(flipped);
  CHECK(to_value(*r2.root()).is_ok());
  auto rep = verify(*r2.root());
  REQUIRE_FALSE(rep.is_ok());
  CHECK(rep.status().code() == Code::kCorrupt);
  CHECK(rep.status().message().find("hash") != std::string::npos);
  // Verifying only a sibling subtree does not look at the flipped block.
  CHECK(verify(*r2.at(Path{2})).is_ok());
  CHECK(verify(*r2.at(Path{1})).status().code() == Code::kCorrupt);

  // A flipped byte in a string's packed bytes and in a node's hash field.
  auto s = region.at(Path{2});
  REQUIRE(s.is_ok());
  Bytes flipped2 = b;
  flipped2[s->header().data_offset + align64(16 * s->length())] ^= std::byte{0x01};
  CHECK(verify(*open_ok(flipped2).root()).status().code() == Code::kCorrupt);
  Bytes flipped3 = b;
  flipped3[s->offset() + 48] ^= std::byte{0x01};
  CHECK(verify(*open_ok(flipped3).root()).status().code() == Code::kCorrupt);
  // Even a flipped padding byte after a data block is outside every hash,
  // and changes nothing.
  Bytes padding = b;
  padding[x->header().data_offset + 24 + 5] ^= std::byte{0x01};
  CHECK(verify(*open_ok(padding).root()).is_ok());
}

TEST_CASE("an unhashed region verifies structure only and says so", "[core]") {
  Bytes b = build_ok(kura::test::rich_value(), /*hashed=*/false);
  Region region = open_ok(b);
  CHECK_FALSE(region.hashed());
  auto rep = verify(*region.root());
  REQUIRE(rep.is_ok());
  CHECK_FALSE(rep->hashed);
  CHECK(rep->nodes == region.header().node_count);
  // A flipped data byte goes unnoticed without hashes...
  auto x = region.at(Path{1});
  REQUIRE(x.is_ok());
  b[x->header().data_offset] ^= std::byte{0x01};
  auto rep2 = verify(*open_ok(b).root());
  REQUIRE(rep2.is_ok());
  CHECK_FALSE(rep2->hashed);
  // ...but a broken string entry is still found.
  auto s = region.at(Path{2});
  REQUIRE(s.is_ok());
  put<std::uint8_t>(b, s->header().data_offset + 12, 7);  // encoding 7
  CHECK(verify(*open_ok(b).root()).status().code() == Code::kCorrupt);
}

TEST_CASE("walk visits in canonical order and stops on a visitor error", "[core]") {
  Bytes b = build_ok(kura::test::rich_value());
  Region region = open_ok(b);
  std::vector<std::uint64_t> offsets;
  Status s = walk(*region.root(), [&](const NodeView& n) {
    offsets.push_back(n.offset());
    return Status::ok();
  });
  REQUIRE(s.is_ok());
  CHECK(offsets.size() == region.header().node_count);
  CHECK(std::is_sorted(offsets.begin(), offsets.end()));
  int calls = 0;
  Status stop = walk(*region.root(), [&](const NodeView&) {
    return ++calls == 3 ? Status(Code::kPermission, "stop here") : Status::ok();
  });
  CHECK(stop.code() == Code::kPermission);
  CHECK(calls == 3);
}

TEST_CASE("an exception thrown by a walk visitor comes back as a status", "[core]") {
  Bytes b = build_ok(kura::test::rich_value());
  Region region = open_ok(b);
  auto root = region.root();
  REQUIRE(root.is_ok());
  int calls = 0;
  Status failed = walk(*root, [&](const NodeView&) -> Status {
    if (++calls == 4) throw std::runtime_error("the visitor gave up");
    return Status::ok();
  });
  CHECK(calls == 4);
  CHECK(failed.code() == Code::kInvalidArgument);
  CHECK(failed.message().find("the visitor gave up") != std::string::npos);
  CHECK(walk(*root, [](const NodeView&) -> Status { throw std::bad_alloc(); }).code() == Code::kOutOfMemory);
  Status odd = walk(*root, [](const NodeView&) -> Status { throw 42; });
  CHECK(odd.code() == Code::kInvalidArgument);
  CHECK(odd.message().find("not a std::exception") != std::string::npos);
  // An empty std::function throws std::bad_function_call when called.
  CHECK(walk(*root, std::function<Status(const NodeView&)>()).code() == Code::kInvalidArgument);
}

TEST_CASE("read_string hands out a private copy and charges the budget", "[core]") {
  Bytes b = build_ok(Value::list({Value::strings_of({String{"caf\xc3\xa9"}, String::NA(),
                                                     String{"\xe9", Encoding::kLatin1}, String{""}}),
                                  Value::f64({1})}));
  Region region = open_ok(b);
  auto strs = region.at(Path{1});
  REQUIRE(strs.is_ok());
  WalkBudget budget(*strs);
  auto first = read_string(*strs, 0, budget);
  REQUIRE(first.is_ok());
  CHECK(*first == String{"caf\xc3\xa9"});
  // The copy is the caller's: changing the region afterwards leaves it be.
  auto in_place = strs->string(0);
  REQUIRE(in_place.is_ok());
  const std::uint64_t at =
      static_cast<std::uint64_t>(in_place->bytes.data() - reinterpret_cast<const char*>(b.data()));
  b[at] = std::byte{'X'};
  b[at + 3] = std::byte{0xFF};
  CHECK(in_place->bytes == "Xaf\xff\xa9");
  CHECK(first->bytes == "caf\xc3\xa9");
  auto na = read_string(*strs, 1, budget);
  REQUIRE(na.is_ok());
  CHECK(na->na);
  auto latin1 = read_string(*strs, 2, budget);
  REQUIRE(latin1.is_ok());
  CHECK(*latin1 == String{"\xe9", Encoding::kLatin1, false});
  auto empty = read_string(*strs, 3, budget);
  REQUIRE(empty.is_ok());
  CHECK(*empty == String{""});
  // The errors of NodeView::string.
  CHECK(read_string(*strs, 4, budget).status().code() == Code::kOutOfRange);
  auto array = region.at(Path{2});
  REQUIRE(array.is_ok());
  CHECK(read_string(*array, 0, budget).status().code() == Code::kInvalidArgument);
  // Each string read is charged: the same one read over and over spends the
  // region's size in string bytes, and then it is Corrupt.
  WalkBudget again(*strs);
  std::uint64_t reads = 0;
  Status last = Status::ok();
  while (last.is_ok()) {
    auto s = read_string(*strs, 0, again);
    if (s)
      ++reads;
    else
      last = s.status();
  }
  CHECK(last.code() == Code::kCorrupt);
  CHECK(reads == b.size() / (std::string_view("caf\xc3\xa9").size() + 1));
}

TEST_CASE("Region::open refuses misaligned memory", "[core]") {
  // Alignment is checked before anything is read.
  Bytes b = build_ok(Value::list({Value::f64({1}), Value::f64({2})}));
  auto r = Region::open(std::span<const std::byte>(b).subspan(8, 64));
  REQUIRE_FALSE(r.is_ok());
  CHECK(r.status().code() == Code::kInvalidArgument);
}

TEST_CASE("to_value of a subtree copies only that subtree", "[core]") {
  Value v = kura::test::rich_value();
  Bytes b = build_ok(v);
  Region region = open_ok(b);
  for (std::uint64_t i = 1; i <= 5; ++i) {
    INFO("child " << i);
    auto c = region.at(Path{i});
    REQUIRE(c.is_ok());
    auto cv = to_value(*c);
    REQUIRE(cv.is_ok());
    CHECK(*cv == v.children[i - 1]);
  }
}

TEST_CASE("at() and stepping with child() agree on every flipped byte", "[core]") {
  // at() walks with its own loop (no view per step); child() opens a view
  // per step. Both must check the same things and say the same, whatever
  // byte of the region is damaged.
  const Bytes good = build_ok(kura::test::rich_value());
  const std::vector<Path> paths = {{}, {1}, {2}, {3}, {3, 1}, {3, 2}, {4}, {5}, {3, 1, 1}, {6}, {0}};
  int compared = 0;
  for (std::size_t at = 64; at < good.size(); ++at) {
    for (std::uint8_t mask : {std::uint8_t{0x01}, std::uint8_t{0x80}, std::uint8_t{0xFF}}) {
      Bytes b = good;
      b[at] ^= std::byte{mask};
      auto region = Region::open(b);
      REQUIRE(region.is_ok());  // only the region header is hashed
      for (const Path& path : paths) {
        auto walked = region->at(path);
        Result<NodeView> stepped = region->root();
        for (std::uint64_t index : path) {
          if (!stepped.is_ok()) break;
          stepped = index == 0 ? Result<NodeView>(Status(Code::kOutOfRange, "index 0 (indices are 1-based)"))
                               : stepped->child(index - 1);
        }
        INFO("byte " << at << " ^ " << int(mask) << ", path of " << path.size());
        REQUIRE(walked.is_ok() == stepped.is_ok());
        if (walked.is_ok()) {
          CHECK(walked->offset() == stepped->offset());
          CHECK(walked->depth() == stepped->depth());
          CHECK(std::memcmp(&walked->header(), &stepped->header(), sizeof(NodeHeader)) == 0);
        } else {
          CHECK(walked.status().code() == stepped.status().code());
          CHECK(walked.status().message() == stepped.status().message());
        }
        ++compared;
      }
    }
  }
  CHECK(compared > 10000);
}

TEST_CASE("a walk references the keep-alive once, and a moved view hands its reference over", "[core]") {
  const Bytes b = build_ok(kura::test::rich_value());
  auto owner = std::make_shared<int>(0);
  auto region = Region::open(b, owner);
  REQUIRE(region.is_ok());
  const long base = owner.use_count();  // ours and the Region's
  {
    auto leaf = region->at(Path{3, 1});
    REQUIRE(leaf.is_ok());
    CHECK(owner.use_count() == base + 1);
    NodeView moved = std::move(leaf).value();
    CHECK(owner.use_count() == base + 1);
    NodeView from = moved;
    NodeView to = std::move(from);
    CHECK(owner.use_count() == base + 2);
    // What is left behind reads nothing.
    CHECK(from.kind() == Kind::kNull);  // NOLINT(bugprone-use-after-move): the state a move leaves
    CHECK(from.data().empty());
    CHECK(from.child(0).status().code() == Code::kNotAList);
    CHECK(to.offset() == moved.offset());
    NodeView copy = moved;
    CHECK(owner.use_count() == base + 3);
    auto missing = region->at(Path{3, 9});
    CHECK(missing.status().code() == Code::kOutOfRange);
    CHECK(owner.use_count() == base + 3);
  }
  CHECK(owner.use_count() == base);
}
