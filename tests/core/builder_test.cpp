// The builder: values round trip through a region image, the layout is the
// canonical one of FORMAT.md section 6, and bad values are refused.
#include <bit>
#include <catch2/catch.hpp>
#include <complex>
#include <limits>
#include <new>
#include <stdexcept>

#include "test_images.hpp"

using namespace kura;
using kura::test::build_ok;
using kura::test::get;

namespace {

Value read_back(const Bytes& b) {
  auto root = kura::test::root_of(b);
  auto v = to_value(*root);
  INFO((v.is_ok() ? std::string("ok") : v.status().to_string()));
  REQUIRE(v.is_ok());
  auto rep = verify(*root);
  INFO((rep.is_ok() ? std::string("ok") : rep.status().to_string()));
  REQUIRE(rep.is_ok());
  CHECK(rep->nodes == root->region_node_count());
  return std::move(v).value();
}

void check_round_trip(const Value& v) {
  for (bool hashed : {false, true}) {
    INFO("hashed " << hashed);
    Bytes b = build_ok(v, hashed);
    CHECK(read_back(b) == v);
  }
}

template <Dtype D>
void round_trip_dtype(std::initializer_list<typename DtypeTraits<D>::type> xs) {
  INFO("dtype " << dtype_name(D));
  Value v = Value::array<D>(xs);
  CHECK(v.length == xs.size());
  check_round_trip(v);
  Bytes b = build_ok(v);
  auto root = kura::test::root_of(b);
  CHECK(root->kind() == Kind::kArray);
  CHECK(root->dtype() == D);
  auto span = root->template array<D>();
  REQUIRE(span.is_ok());
  REQUIRE(span->size() == xs.size());
  if (xs.size() == 0) return;
  CHECK(std::memcmp(span->data(), xs.begin(), xs.size() * sizeof(*xs.begin())) == 0);
  // Zero copy: the span points into the image.
  CHECK(reinterpret_cast<const std::byte*>(span->data()) >= b.data());
  CHECK(reinterpret_cast<const std::byte*>(span->data()) < b.data() + b.size());
}

// `depth` nested lists around `leaf`, so that the leaf is at depth `depth`.
Value nest(Value leaf, unsigned depth) {
  for (unsigned i = 0; i < depth; ++i) leaf = Value::list({std::move(leaf)});
  return leaf;
}

}  // namespace

TEST_CASE("every dtype round trips bit for bit", "[core]") {
  round_trip_dtype<Dtype::kU8>({0, 1, 255});
  round_trip_dtype<Dtype::kI8>({-128, 0, 127});
  round_trip_dtype<Dtype::kU16>({0, 65535, 12345});
  round_trip_dtype<Dtype::kI16>({-32768, 32767, -1});
  round_trip_dtype<Dtype::kU32>({0, UINT32_MAX, 7});
  round_trip_dtype<Dtype::kI32>({INT32_MIN, INT32_MAX, 0});
  round_trip_dtype<Dtype::kU64>({0, UINT64_MAX, 1});
  round_trip_dtype<Dtype::kI64>({INT64_MIN, INT64_MAX, -1});
  round_trip_dtype<Dtype::kF32>({1.5f, -0.0f, std::numeric_limits<float>::infinity()});
  round_trip_dtype<Dtype::kF64>({1.5, -0.0, std::numeric_limits<double>::quiet_NaN(), 1e308});
  round_trip_dtype<Dtype::kC128>({{1.0, -2.0}, {0.0, 0.5}});
  round_trip_dtype<Dtype::kLgl>({0, 1, kNaInt});
  round_trip_dtype<Dtype::kF64>({});
}

TEST_CASE("NA_real_ keeps its exact bits and lgl NA stays INT32_MIN", "[core]") {
  double na = std::bit_cast<double>(kNaRealBits);
  Value v = Value::list({Value::f64({1.0, na, 3.0}), Value::array<Dtype::kLgl>({1, kNaInt, 0})});
  check_round_trip(v);
  Bytes b = build_ok(v);
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  auto x = region->at(std::vector<std::uint64_t>{1});
  REQUIRE(x.is_ok());
  auto xs = x->array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  CHECK(std::bit_cast<std::uint64_t>((*xs)[1]) == kNaRealBits);
  CHECK((std::bit_cast<std::uint64_t>((*xs)[1]) & 0xFFFFFFFFu) == 1954);
  auto l = region->at(std::vector<std::uint64_t>{2});
  REQUIRE(l.is_ok());
  auto ls = l->array<Dtype::kLgl>();
  REQUIRE(ls.is_ok());
  CHECK((*ls)[1] == INT32_MIN);
  // The raw bytes at the data block hold NA_real_ as written.
  CHECK(get<std::uint64_t>(b, x->header().data_offset + 8) == kNaRealBits);
}

TEST_CASE("strings with NA, empty strings and all three encodings round trip", "[core]") {
  Value v = Value::strings_of(
      {String{"plain"}, String::NA(), String{""}, String{"caf\xe9", Encoding::kLatin1},
       String{std::string("a\0b", 3), Encoding::kBytes}, String{"\xe2\x82\xac"}, String{""}});
  check_round_trip(v);
  Bytes b = build_ok(v);
  auto root = kura::test::root_of(b);
  REQUIRE(root->length() == 7);
  auto s1 = root->string(1);
  REQUIRE(s1.is_ok());
  CHECK(s1->na);
  auto s2 = root->string(2);
  REQUIRE(s2.is_ok());
  CHECK_FALSE(s2->na);
  CHECK(s2->bytes.empty());
  auto s3 = root->string(3);
  REQUIRE(s3.is_ok());
  CHECK(s3->encoding == Encoding::kLatin1);
  auto s4 = root->string(4);
  REQUIRE(s4.is_ok());
  CHECK(s4->encoding == Encoding::kBytes);
  CHECK(s4->bytes == std::string_view("a\0b", 3));
  // Every non-NA string is zero-terminated in place.
  CHECK(s4->bytes.data()[3] == '\0');
  // data_size is align64(16 * length) plus each non-NA string's nbytes + 1.
  CHECK(root->header().data_size == align64(16 * 7) + 6 + 1 + 5 + 4 + 4 + 1);
  auto past = root->string(7);
  REQUIRE_FALSE(past.is_ok());
  CHECK(past.status().code() == Code::kOutOfRange);
}

TEST_CASE("empty arrays, lists, strings and bytes, and null round trip", "[core]") {
  check_round_trip(Value::null());
  check_round_trip(Value::list({}));
  check_round_trip(Value::strings_of({}));
  check_round_trip(Value::array<Dtype::kI64>({}));
  check_round_trip(Value::bytes("", {}));
  check_round_trip(Value::strings_of({String{""}}));
  check_round_trip(Value::strings_of({String::NA()}));
  check_round_trip(Value::list({Value::null(), Value::list({}), Value::strings_of({}), Value::f64({})}));

  Bytes b = build_ok(Value::list({}));
  CHECK(b.size() == 128);
  auto root = kura::test::node_at(b, 64);
  CHECK(root.length == 0);
  CHECK(root.data_offset == 0);
  CHECK(root.data_size == 0);
}

TEST_CASE("bytes nodes keep their tag and payload", "[core]") {
  std::string payload = std::string("X\0\xff\x01rds", 7);
  Value v = Value::bytes("rds3", kura::test::as_bytes_of(payload));
  check_round_trip(v);
  Value full = Value::bytes("12345678", kura::test::as_bytes_of(payload));
  check_round_trip(full);
  Bytes b = build_ok(full);
  auto root = kura::test::root_of(b);
  CHECK(root->kind() == Kind::kBytes);
  CHECK(root->tag() == "12345678");
  CHECK(root->length() == 7);
  CHECK(std::memcmp(root->data().data(), payload.data(), 7) == 0);
  CHECK(v.tag == "rds3");
}

TEST_CASE("names and nested attributes round trip", "[core]") {
  Value v = kura::test::rich_value();
  check_round_trip(v);
  // Attributes on an attribute's value, three levels down.
  Value deep = Value::f64({1});
  deep.with_attr("a",
                 Value::f64({2}).with_attr("b", Value::f64({3}).with_attr("c", Value::strings_utf8({"z"}))));
  check_round_trip(deep);
  // Names on attribute values and on the attribute list's children.
  Value named = Value::i32({1, 2}).with_names({String{"p"}, String{"q"}});
  named.with_attr("levels", Value::list({Value::null()}).with_names({String{"only"}}));
  check_round_trip(named);
}

TEST_CASE("the layout is canonical: aligned, pre-ordered, counted", "[core]") {
  Value v = kura::test::rich_value();
  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());
  Bytes b = build_ok(v);
  CHECK(layout->size() == b.size());
  CHECK(b.size() % 64 == 0);
  RegionHeader rh;
  std::memcpy(&rh, b.data(), 64);
  CHECK(std::memcmp(rh.magic, "KURA", 4) == 0);
  CHECK(rh.version == 1);
  CHECK(rh.flags == (kRegionSealed | kRegionHashed));
  CHECK(rh.region_size == b.size());
  CHECK(rh.root_offset == 64);
  CHECK(rh.node_count == layout->node_count());
  CHECK(rh.created_ns == 123);
  CHECK(rh.creator_pid == 456);
  CHECK(rh.reserved0 == 0);
  CHECK(rh.reserved1 == 0);
  CHECK(rh.header_hash == region_header_hash(std::span<const std::byte>(b).first(56)));

  // rich_value: root, its names, its attrs list + keys + "m", the f64 array,
  // its attrs list + keys, dim, class, class's attrs list + keys + note, the
  // strings, the inner list, its names, i32, null, bytes, null.
  CHECK(rh.node_count == 20);

  auto offsets = kura::test::node_offsets(b);
  REQUIRE(offsets.size() == rh.node_count);
  // Pre-order walk order is layout order, and pieces follow one another with
  // no gaps: each header starts where the previous node's pieces ended.
  std::uint64_t expect = 64;
  for (std::uint64_t off : offsets) {
    INFO("node at " << off);
    CHECK(off % 64 == 0);
    CHECK(off == expect);
    NodeHeader h = kura::test::node_at(b, off);
    CHECK(std::memcmp(h.magic, "KNOD", 4) == 0);
    CHECK(h.data_offset % 64 == 0);
    expect = off + 64;
    if (h.data_size) {
      CHECK(h.data_offset == off + 64);
      expect = h.data_offset + align64(h.data_size);
    } else {
      CHECK(h.data_offset == 0);
    }
    CHECK(h.names_offset % 64 == 0);
    CHECK(h.attrs_offset % 64 == 0);
  }
  CHECK(expect == b.size());

  // The same value always gives the same bytes.
  Bytes again = build_ok(v);
  CHECK(again == b);
}

TEST_CASE("padding and reserved bytes are zero", "[core]") {
  Value v = Value::list({Value::array<Dtype::kU8>({1, 2, 3}), Value::strings_utf8({"abc"})});
  Bytes b = build_ok(v, /*hashed=*/false);
  // u8 array data block: 3 bytes then 61 zero bytes.
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  auto a = region->at(std::vector<std::uint64_t>{1});
  REQUIRE(a.is_ok());
  for (std::uint64_t i = 3; i < 64; ++i) CHECK(get<std::uint8_t>(b, a->header().data_offset + i) == 0);
  CHECK(a->header().hash == 0);
  CHECK(get<std::uint64_t>(b, 48) == 0);
}

TEST_CASE("a leaf at depth 64 builds and reads, and depth 65 is refused", "[core]") {
  Value v64 = nest(Value::f64({42.0}), 64);
  Bytes b = build_ok(v64);
  auto region = Region::open(b);
  REQUIRE(region.is_ok());
  std::vector<std::uint64_t> path(64, 1);
  auto leaf = region->at(path);
  INFO((leaf.is_ok() ? std::string("ok") : leaf.status().to_string()));
  REQUIRE(leaf.is_ok());
  CHECK(leaf->depth() == 64);
  CHECK(leaf->kind() == Kind::kArray);
  CHECK((*leaf->array<Dtype::kF64>())[0] == 42.0);
  auto root = region->root();
  REQUIRE(root.is_ok());
  std::uint64_t seen = 0;
  unsigned deepest = 0;
  Status s = walk(*root, [&](const NodeView& n) {
    ++seen;
    deepest = std::max(deepest, n.depth());
    return Status::ok();
  });
  REQUIRE(s.is_ok());
  CHECK(seen == 65);
  CHECK(deepest == 64);
  auto rep = verify(*root);
  REQUIRE(rep.is_ok());
  CHECK(rep->nodes == 65);
  auto back = to_value(*root);
  REQUIRE(back.is_ok());
  CHECK(*back == v64);

  // One more level is refused by the planner.
  Value v65 = nest(Value::f64({42.0}), 65);
  auto plan = Layout::plan(v65);
  REQUIRE_FALSE(plan.is_ok());
  CHECK(plan.status().code() == Code::kInvalidArgument);
  auto built = build(v65, Stamp{}, true);
  REQUIRE_FALSE(built.is_ok());
  CHECK(built.status().code() == Code::kInvalidArgument);

  // A list at depth 64 may be empty, but any child is at depth 65.
  CHECK(Layout::plan(nest(Value::list({}), 64)).is_ok());
  CHECK(Layout::plan(nest(Value::list({Value::null()}), 64)).status().code() == Code::kInvalidArgument);
}

TEST_CASE("names and attributes count as links for the depth limit", "[core]") {
  // Names of a node at depth 64 would sit at depth 65.
  Value named = Value::f64({1.0}).with_names({String{"a"}});
  auto plan = Layout::plan(nest(named, 64));
  REQUIRE_FALSE(plan.is_ok());
  CHECK(plan.status().code() == Code::kInvalidArgument);
  CHECK(Layout::plan(nest(named, 63)).is_ok());

  // Attributes of a node at depth 64: the attribute list would be at 65.
  Value attributed = Value::f64({1.0}).with_attr("k", Value::null());
  CHECK(Layout::plan(nest(attributed, 64)).status().code() == Code::kInvalidArgument);
  // At depth 63 the attribute list is at 64 but its keys and values at 65.
  CHECK(Layout::plan(nest(attributed, 63)).status().code() == Code::kInvalidArgument);
  CHECK(Layout::plan(nest(attributed, 62)).is_ok());

  // A depth-62 node with attributes builds and reads back, all 64 levels.
  Value v = nest(attributed, 62);
  Bytes b = build_ok(v);
  auto root = kura::test::root_of(b);
  auto rep = verify(*root);
  REQUIRE(rep.is_ok());
  auto back = to_value(*root);
  REQUIRE(back.is_ok());
  CHECK(*back == v);
}

TEST_CASE("Writer::array fills an in-place array with no copy", "[core]") {
  Value v = Value::list({Value::array_in_place(Dtype::kF64, 1000), Value::array_in_place(Dtype::kI32, 3),
                         Value::array_in_place(Dtype::kI32, 0)});
  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());
  Bytes dest(layout->size(), std::byte{0xAB});
  auto w = Writer::write(*layout, dest, Stamp{});
  REQUIRE(w.is_ok());
  auto xs = w->array<double>(v.children[0]);
  REQUIRE(xs.size() == 1000);
  // The span lies inside the destination: filling it writes the region.
  CHECK(reinterpret_cast<std::byte*>(xs.data()) >= dest.data());
  CHECK(reinterpret_cast<std::byte*>(xs.data() + xs.size()) <= dest.data() + dest.size());
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i) * 0.5;
  auto is = w->array<std::int32_t>(v.children[1]);
  REQUIRE(is.size() == 3);
  is[0] = 7;
  is[1] = kNaInt;
  is[2] = -7;
  CHECK(w->array<std::int32_t>(v.children[2]).empty());
  // Before sealing, a reader refuses the region.
  auto unsealed = Region::open(dest);
  REQUIRE_FALSE(unsealed.is_ok());
  CHECK(unsealed.status().code() == Code::kCorrupt);
  w->seal(/*hashed=*/true);

  auto root = kura::test::root_of(dest);
  REQUIRE(verify(*root).is_ok());
  auto a = root->child(0);
  REQUIRE(a.is_ok());
  auto as = a->array<Dtype::kF64>();
  REQUIRE(as.is_ok());
  REQUIRE(as->size() == 1000);
  CHECK((*as)[999] == 499.5);
  CHECK(as->data() == xs.data());
  auto b = root->child(1);
  REQUIRE(b.is_ok());
  CHECK((*b->array<Dtype::kI32>())[1] == kNaInt);
  // Padding after the in-place block was zeroed by write() even though the
  // destination started out as 0xAB everywhere.
  std::uint64_t pad = a->header().data_offset + a->header().data_size;
  for (std::uint64_t i = pad; i < align64(pad); ++i) CHECK(get<std::uint8_t>(dest, i) == 0);
}

TEST_CASE("borrowed arrays are copied into the region", "[core]") {
  std::vector<std::int64_t> src = {5, 6, 7, 8};
  Value v = Value::array_borrowed(Dtype::kI64, src.data(), src.size());
  Bytes b = build_ok(v);
  src[0] = 99;  // the region holds its own copy
  auto root = kura::test::root_of(b);
  CHECK((*root->array<Dtype::kI64>())[0] == 5);
  auto back = to_value(*root);
  REQUIRE(back.is_ok());
  CHECK(*back == Value::array<Dtype::kI64>({5, 6, 7, 8}));
}

TEST_CASE("Writer::write refuses a destination of the wrong size or alignment", "[core]") {
  Value v = Value::f64({1, 2, 3});
  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());
  Bytes small(layout->size() - 64);
  auto w1 = Writer::write(*layout, small, Stamp{});
  REQUIRE_FALSE(w1.is_ok());
  CHECK(w1.status().code() == Code::kInvalidArgument);
  Bytes big(layout->size() + 64);
  auto w2 = Writer::write(*layout, big, Stamp{});
  REQUIRE_FALSE(w2.is_ok());
  CHECK(w2.status().code() == Code::kInvalidArgument);
  Bytes shifted(layout->size() + 64);
  for (std::size_t shift : {1, 8, 32}) {
    auto w3 = Writer::write(*layout, std::span<std::byte>(shifted).subspan(shift, layout->size()), Stamp{});
    REQUIRE_FALSE(w3.is_ok());
    CHECK(w3.status().code() == Code::kInvalidArgument);
    CHECK_FALSE(w3.status().message().empty());
  }
  Bytes exact(layout->size());
  CHECK(Writer::write(*layout, exact, Stamp{}).is_ok());
}

TEST_CASE("Layout::plan refuses values it cannot lay out", "[core]") {
  auto refused = [](const Value& v) {
    auto p = Layout::plan(v);
    REQUIRE_FALSE(p.is_ok());
    CHECK(p.status().code() == Code::kInvalidArgument);
    CHECK_FALSE(p.status().message().empty());
  };
  // Payload not matching length * width.
  Value short_payload = Value::f64({1, 2});
  short_payload.length = 3;
  refused(short_payload);
  Value odd = Value::array_bytes(Dtype::kF64, std::vector<std::byte>(12));
  refused(odd);
  // Unknown dtypes.
  refused(Value::array_in_place(Dtype::kNone, 1));
  refused(Value::array_in_place(static_cast<Dtype>(13), 1));
  // Names of the wrong count.
  refused(Value::f64({1, 2}).with_names({String{"a"}}));
  refused(Value::list({}).with_names({String{"a"}}));
  // Empty or duplicate attribute keys.
  refused(Value::null().with_attr("", Value::null()));
  refused(Value::null().with_attr("k", Value::null()).with_attr("k", Value::null()));
  // Tags: on a non-bytes node, with a zero byte inside, longer than 8
  // characters (Value::bytes keeps it whole; the plan refuses it), not
  // printable ASCII (FORMAT.md 5.2: 0x21-0x7E).
  Value tagged = Value::f64({1});
  tagged.tag = "json";
  refused(tagged);
  refused(Value::bytes(std::string_view("a\0b", 3), {}));
  refused(Value::bytes("123456789", {}));
  refused(Value::bytes("\xff", {}));
  refused(Value::bytes("a b", {}));
  refused(Value::bytes("tab\t", {}));
  // A dtype on a node that is not an array.
  Value dtyped = Value::list({});
  dtyped.dtype = Dtype::kF64;
  refused(dtyped);
  Value bytes_dtype = Value::bytes("x", {});
  bytes_dtype.dtype = Dtype::kU8;
  refused(bytes_dtype);
  // Lengths that disagree with the content.
  Value list_len = Value::list({Value::null()});
  list_len.length = 2;
  refused(list_len);
  Value str_len = Value::strings_utf8({"a"});
  str_len.length = 0;
  refused(str_len);
  Value null_len = Value::null();
  null_len.length = 1;
  refused(null_len);
  // Sizes past what a region can hold, without overflow.
  refused(Value::array_in_place(Dtype::kF64, std::uint64_t{1} << 61));
  refused(Value::array_in_place(Dtype::kC128, UINT64_MAX));
  refused(Value::array_borrowed(Dtype::kI32, nullptr, 4));
  // An unknown kind.
  Value weird;
  weird.kind = static_cast<Kind>(9);
  refused(weird);
  // The problem is found deep in the tree too.
  refused(Value::list({Value::list({short_payload})}));
  refused(Value::null().with_attr("k", Value::null().with_attr("", Value::null())));
}

TEST_CASE("the documented limits of Layout::plan hold at their edges", "[core]") {
  // Region size: at most 2^62 bytes. An in-place u8 array at the root sits
  // after the region header and its own header (128 bytes), so its largest
  // length is 2^62 - 128; planning touches no array data, so nothing of that
  // size is allocated.
  constexpr std::uint64_t kMax = std::uint64_t{1} << 62;
  auto at_limit = Layout::plan(Value::array_in_place(Dtype::kU8, kMax - 128));
  REQUIRE(at_limit.is_ok());
  CHECK(at_limit->size() == kMax);
  for (std::uint64_t length : {kMax - 127, kMax - 64, kMax, kMax + 1, UINT64_MAX}) {
    INFO("length " << length);
    auto over = Layout::plan(Value::array_in_place(Dtype::kU8, length));
    REQUIRE_FALSE(over.is_ok());
    CHECK(over.status().code() == Code::kInvalidArgument);
    CHECK(over.status().message().find("2^62") != std::string::npos);
  }
  // The same limit reached by a sum: two arrays that fit alone but not
  // together.
  auto sum = Layout::plan(Value::list(
      {Value::array_in_place(Dtype::kU8, kMax / 2), Value::array_in_place(Dtype::kU8, kMax / 2)}));
  REQUIRE_FALSE(sum.is_ok());
  CHECK(sum.status().code() == Code::kInvalidArgument);

  // Tags: up to 8 characters, each 0x21-0x7E.
  CHECK(Layout::plan(Value::bytes("!~!~!~!~", {})).is_ok());
  CHECK(Layout::plan(Value::bytes("", {})).is_ok());
  for (const char* bad : {"123456789", " rds", "rds\x7f", "\x20"}) {
    INFO("tag \"" << bad << "\"");
    auto p = Layout::plan(Value::bytes(bad, {}));
    REQUIRE_FALSE(p.is_ok());
    CHECK(p.status().code() == Code::kInvalidArgument);
    CHECK(p.status().message().find("tag") != std::string::npos);
  }
}

TEST_CASE("a copy hook and hashing while copying give the same bytes as a plain build", "[core]") {
  // Three 1.5 MiB arrays: more than one copy chunk each.
  std::vector<double> big(3 << 17);
  for (std::size_t i = 0; i < big.size(); ++i) big[i] = static_cast<double>(i) * 0.5;
  Value v = Value::list({Value::array_borrowed(Dtype::kF64, big.data(), big.size()),
                         Value::strings_utf8({"a", "bc"}), Value::array_in_place(Dtype::kI32, 3),
                         Value::bytes("json", std::as_bytes(std::span<const double>(big)))})
                .with_names({String{"x"}, String{"s"}, String{"filled"}, String{"raw"}})
                .with_attr("unit", Value::array_borrowed(Dtype::kF64, big.data(), 7));
  auto layout = Layout::plan(v);
  REQUIRE(layout.is_ok());

  // Writes into `out`, fills the in-place array, seals; returns bytes_copied.
  auto write_into = [&](Bytes& out, const WriteOptions& options) {
    auto w = Writer::write(*layout, out, Stamp{1, 2}, options);
    REQUIRE(w.is_ok());
    auto filled = w->array<std::int32_t>(v.children[2]);
    filled[0] = 7, filled[1] = 8, filled[2] = 9;
    w->seal(true);
    return w->bytes_copied();
  };
  Bytes plain(layout->size());
  const std::uint64_t plain_copied = write_into(plain, {});

  Bytes out(layout->size());
  std::uint64_t hook_bytes = 0;
  WriteOptions hooked;
  hooked.hash_copies = true;
  hooked.copy = [&](std::uint64_t offset, std::span<const std::byte> bytes) {
    std::memcpy(out.data() + offset, bytes.data(), bytes.size());
    hook_bytes += bytes.size();
    return Status::ok();
  };
  const std::uint64_t hooked_copied = write_into(out, hooked);
  CHECK(out == plain);
  CHECK(hook_bytes == 2 * big.size() * sizeof(double) + 7 * sizeof(double));
  CHECK(plain_copied == hooked_copied);
  // Plus the string bytes with their terminators: "a", "bc", the four names
  // and the key "unit".
  CHECK(hooked_copied == hook_bytes + (2 + 3) + (2 + 2 + 7 + 4) + 5);

  WriteOptions failing;
  failing.copy = [](std::uint64_t, std::span<const std::byte>) { return Status(Code::kNoSpace, "full"); };
  Bytes scratch(layout->size());
  auto w = Writer::write(*layout, scratch, Stamp{}, failing);
  REQUIRE_FALSE(w.is_ok());
  CHECK(w.status().code() == Code::kNoSpace);

  // A hook that throws stops the write with a status instead.
  WriteOptions throwing;
  throwing.copy = [](std::uint64_t, std::span<const std::byte>) -> Status {
    throw std::runtime_error("the hook failed");
  };
  auto thrown = Writer::write(*layout, scratch, Stamp{}, throwing);
  REQUIRE_FALSE(thrown.is_ok());
  CHECK(thrown.status().code() == Code::kInvalidArgument);
  CHECK(thrown.status().message().find("the hook failed") != std::string::npos);
  throwing.copy = [](std::uint64_t, std::span<const std::byte>) -> Status { throw std::bad_alloc(); };
  auto oom = Writer::write(*layout, scratch, Stamp{}, throwing);
  REQUIRE_FALSE(oom.is_ok());
  CHECK(oom.status().code() == Code::kOutOfMemory);
}

TEST_CASE("layouts are move-only and the writer refuses an empty one", "[core]") {
  static_assert(!std::is_copy_constructible_v<Layout>);
  static_assert(std::is_move_constructible_v<Layout>);
  Layout empty;
  Bytes none;
  auto w = Writer::write(empty, none, Stamp{});
  REQUIRE_FALSE(w.is_ok());
  CHECK(w.status().code() == Code::kInvalidArgument);
}

TEST_CASE("strings of an unknown encoding are refused when planned", "[core]") {
  Value v = Value::strings_of({String{"x", static_cast<Encoding>(3), false}});
  auto layout = Layout::plan(v);
  REQUIRE_FALSE(layout.is_ok());
  CHECK(layout.status().code() == Code::kInvalidArgument);
}
