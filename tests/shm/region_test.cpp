#include "kura/shm/region.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "kura/core/builder.hpp"
#include "kura/core/verify.hpp"
#include "kura/shm/owner.hpp"
#include "sample.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

namespace {

bool listed(const std::string& name, shm::RegionInfo* out = nullptr) {
  auto l = shm::list();
  REQUIRE(l.is_ok());
  for (const auto& r : *l)
    if (r.name == name) {
      if (out) *out = r;
      return true;
    }
  return false;
}

}  // namespace

TEST_CASE("share copies a value in and map reads it back", "[shm]") {
  test::ShmGuard guard;
  Value v = test::sample_value();
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  auto n = parse_name(s->name());
  REQUIRE(n.is_ok());
  CHECK(n->owner == *owner);
  CHECK(n->path.empty());
  CHECK(test::mode_of(shm_path(s->name())) == 0400);

  auto m = s->map();
  REQUIRE(m.is_ok());
  CHECK(m->name() == s->name());
  CHECK(m->region().bytes().size() == s->size());
  CHECK(m->region().hashed());
  CHECK(test::check_sample(m->node()) == "");
  auto rep = verify(m->node());
  REQUIRE(rep.is_ok());
  CHECK(rep->hashed);

  shm::RegionInfo info;
  REQUIRE(listed(s->name(), &info));
  CHECK(info.size == s->size());
  CHECK(info.owner == *owner);
  CHECK(info.alive);

  const std::string name = s->name();
  REQUIRE(s->release().is_ok());
  CHECK(s->name().empty());
  CHECK(!exists(shm_path(name)));
  CHECK(!listed(name));
  // The mapping taken before the release stays valid.
  CHECK(test::check_sample(m->node()) == "");
  auto again = shm::map(name);
  REQUIRE(!again.is_ok());
  CHECK(again.status().code() == Code::kNotFound);
  CHECK(again.status().sys_errno() == ENOENT);
}

TEST_CASE("share without hashes", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::f64({1, 2});
  shm::ShareOptions o;
  o.hashed = false;
  auto s = shm::share(v, o);
  REQUIRE(s.is_ok());
  auto m = s->map();
  REQUIRE(m.is_ok());
  CHECK(!m->region().hashed());
}

TEST_CASE("map of a path walks to the element and path errors are distinct", "[shm]") {
  test::ShmGuard guard;
  Value v = test::sample_value();
  auto s = shm::share(v);
  REQUIRE(s.is_ok());

  auto sub = shm::map(s->name() + test::kSamplePath);
  REQUIRE(sub.is_ok());
  CHECK(sub->name() == s->name() + test::kSamplePath);
  auto copy = to_value(sub->node());
  REQUIRE(copy.is_ok());
  CHECK(*copy == test::sample_at_path());
  CHECK(sub->node().depth() == 3);

  auto two_three = shm::map(s->name() + "[14,3]");
  REQUIRE(two_three.is_ok());
  CHECK(two_three->node().kind() == Kind::kList);

  auto oor = shm::map(s->name() + "[16]");
  REQUIRE(!oor.is_ok());
  CHECK(oor.status().code() == Code::kOutOfRange);
  auto oor2 = shm::map(s->name() + "[14,5]");
  REQUIRE(!oor2.is_ok());
  CHECK(oor2.status().code() == Code::kOutOfRange);
  auto nal = shm::map(s->name() + "[1,1]");
  REQUIRE(!nal.is_ok());
  CHECK(nal.status().code() == Code::kNotAList);
  // A sub-element keeps the whole mapping alive after the region is gone.
  const std::string name = s->name();
  REQUIRE(s->release().is_ok());
  CHECK(to_value(sub->node()).is_ok());
  auto gone = shm::map(name + "[14]");
  REQUIRE(!gone.is_ok());
  CHECK(gone.status().code() == Code::kNotFound);
}

TEST_CASE("invalid names are refused before the operating system is asked", "[shm]") {
  test::ShmGuard guard;
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  // A real, valid region image planted under a non-canonical file name: if
  // an invalid name ever reached open() it would be found.
  Value v = Value::i32({7});
  auto bytes = build(v, Stamp{}, true);
  REQUIRE(bytes.is_ok());
  const std::string planted = "/kura_0" + test::hex(*owner) + "_1";  // leading zero
  {
    int fd = ::open(shm_path(planted).c_str(), O_WRONLY | O_CREAT | O_EXCL, 0400);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, bytes->data(), bytes->size()) == static_cast<ssize_t>(bytes->size()));
    ::close(fd);
  }
  for (std::string bad : {planted, std::string("/kura_1F_2a"), std::string("/kura_1f_2a[0]"),
                          std::string("/kura_1f_2a[]"), std::string("/kura_1f_2a[1,]"),
                          std::string("/kura_1f_2a/../../etc/passwd"), std::string("kura_1f_2a"),
                          std::string(""), std::string("/kura_1f_2a[01]"), std::string(" /kura_1f_2a")}) {
    INFO("name: '" << bad << "'");
    auto m = shm::map(bad);
    REQUIRE(!m.is_ok());
    CHECK(m.status().code() == Code::kInvalidName);
    CHECK(shm::remove(bad).code() == Code::kInvalidName);
    auto a = shm::adopt(bad);
    REQUIRE(!a.is_ok());
    CHECK(a.status().code() == Code::kInvalidName);
  }
  CHECK(exists(shm_path(planted)));
  auto listing = shm::list();
  REQUIRE(listing.is_ok());
  for (const auto& r : *listing) CHECK(r.name != planted);
  ::unlink(shm_path(planted).c_str());
  // A path is not a region name for remove and adopt.
  CHECK(shm::remove("/kura_1f_2a[1]").code() == Code::kInvalidName);
  auto a = shm::adopt("/kura_" + test::hex(*owner) + "_2a[1]");
  REQUIRE(!a.is_ok());
  CHECK(a.status().code() == Code::kInvalidName);
}

TEST_CASE("a well-formed name of a missing region is NotFound", "[shm]") {
  test::ShmGuard guard;
  auto m = shm::map("/kura_1f_2a[2,3]");
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kNotFound);
  CHECK(shm::remove("/kura_1f_2a").code() == Code::kNotFound);
}

TEST_CASE("Pending fills arrays in place, then publishes atomically", "[shm]") {
  test::ShmGuard guard;
  constexpr std::size_t kN = 1 << 20;
  Value v = Value::list({Value::array_in_place(Dtype::kF64, kN), Value::array_in_place(Dtype::kI32, 3),
                         Value::strings_utf8({"copied"})})
                .with_names({String{"xs", Encoding::kUtf8, false}, String{"ys", Encoding::kUtf8, false},
                             String{"label", Encoding::kUtf8, false}});
  auto p = shm::Pending::create(v);
  REQUIRE(p.is_ok());
  // "copied" and the three names, each with its terminating zero; no array bytes.
  CHECK(p->bytes_copied() == 7 + 3 + 3 + 6);
  // Nothing is visible under a region name yet: only a temporary file.
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  std::string temp;
  for (const auto& e : test::shm_entries())
    if (e.rfind("kura_" + test::hex(*owner) + "_", 0) == 0) temp = e;
  REQUIRE(temp.size() > 4);
  CHECK(temp.substr(temp.size() - 4) == ".tmp");
  CHECK(test::mode_of(shm_path(temp)) == 0600);
  auto hidden = shm::map("/" + temp.substr(0, temp.size() - 4));
  REQUIRE(!hidden.is_ok());
  CHECK(hidden.status().code() == Code::kNotFound);
  {
    auto l = shm::list();
    REQUIRE(l.is_ok());
    for (const auto& r : *l) CHECK(r.owner != *owner);
  }

  auto xs = p->array<double>(v.children[0]);
  REQUIRE(xs.size() == kN);
  for (std::size_t i = 0; i < kN; ++i) xs[i] = static_cast<double>(i) * 0.5;
  auto ys = p->array<std::int32_t>(v.children[1]);
  REQUIRE(ys.size() == 3);
  ys[0] = 10;
  ys[1] = kNaInt;
  ys[2] = 30;
  auto s = std::move(p).value().publish();
  REQUIRE(s.is_ok());
  CHECK(!exists(shm_path(temp)));
  CHECK(test::mode_of(shm_path(s->name())) == 0400);

  auto m = shm::map(s->name() + "[1]");
  REQUIRE(m.is_ok());
  auto got = m->node().array<Dtype::kF64>();
  REQUIRE(got.is_ok());
  REQUIRE(got->size() == kN);
  bool all = true;
  for (std::size_t i = 0; i < kN; ++i) all = all && (*got)[i] == static_cast<double>(i) * 0.5;
  CHECK(all);
  auto m2 = shm::map(s->name() + "[2]");
  REQUIRE(m2.is_ok());
  auto y = m2->node().array<Dtype::kI32>();
  REQUIRE(y.is_ok());
  CHECK((*y)[1] == kNaInt);
  auto root = shm::map(s->name());
  REQUIRE(root.is_ok());
  auto rep = verify(root->node());
  CHECK(rep.is_ok());
  auto label = root->node().child(std::string_view("label"));
  REQUIRE(label.is_ok());
  CHECK(label->string(0)->bytes == "copied");
}

TEST_CASE("a Pending dropped unpublished removes its temporary file", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::array_in_place(Dtype::kU8, 4096);
  {
    auto p = shm::Pending::create(v);
    REQUIRE(p.is_ok());
    CHECK(p->bytes_copied() == 0);
    CHECK(guard.new_entries().size() == 1);
    shm::Pending moved = std::move(p).value();
    CHECK(guard.new_entries().size() == 1);
  }
  CHECK(guard.new_entries().empty());
}

TEST_CASE("a value that cannot be laid out is InvalidArgument and creates nothing", "[shm]") {
  test::ShmGuard guard;
  Value bad = Value::list({Value::i32({1})}).with_names({});  // one name missing
  auto s = shm::share(bad);
  REQUIRE(!s.is_ok());
  CHECK(s.status().code() == Code::kInvalidArgument);
  CHECK(guard.new_entries().empty());
}

TEST_CASE("adopt, disown and release", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::f64({1.5});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  const std::uint64_t size = s->size();
  std::string name = s->disown();
  CHECK(s->name().empty());
  CHECK(s->release().is_ok());  // empty: nothing to do
  CHECK(exists(shm_path(name)));
  {
    auto m = s->map();
    REQUIRE(!m.is_ok());
    CHECK(m.status().code() == Code::kInvalidArgument);
  }
  auto a = shm::adopt(name);
  REQUIRE(a.is_ok());
  CHECK(a->name() == name);
  CHECK(a->size() == size);
  {
    // Moving a handle moves ownership; the moved-from handle unlinks nothing.
    shm::Shared moved = std::move(a).value();
    CHECK(exists(shm_path(name)));
    shm::Shared other = std::move(moved);
    CHECK(moved.name().empty());
    CHECK(exists(shm_path(name)));
  }
  CHECK(!exists(shm_path(name)));
  auto missing = shm::adopt(name);
  REQUIRE(!missing.is_ok());
  CHECK(missing.status().code() == Code::kNotFound);

  // Another owner's region cannot be adopted.
  shm::ShareOptions keep;
  keep.keep = true;
  auto kept = shm::share(v, keep);
  REQUIRE(kept.is_ok());
  auto foreign = shm::adopt(kept->name());
  REQUIRE(!foreign.is_ok());
  CHECK(foreign.status().code() == Code::kPermission);
  REQUIRE(shm::remove(kept->name()).is_ok());
}

TEST_CASE("kept regions outlive their handle until removed by name", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::strings_utf8({"kept"});
  shm::ShareOptions o;
  o.keep = true;
  std::string name;
  {
    auto s = shm::share(v, o);
    REQUIRE(s.is_ok());
    name = s->name();
    auto n = parse_name(name);
    REQUIRE(n.is_ok());
    CHECK(n->owner == shm::kKeptOwner);
    CHECK(s->release().is_ok());
  }
  CHECK(exists(shm_path(name)));
  CHECK(test::mode_of(shm_path(name)) == 0400);
  shm::RegionInfo info;
  REQUIRE(listed(name, &info));
  CHECK(info.owner == 0);
  CHECK(info.alive);
  CHECK(shm::owner_alive(shm::kKeptOwner));
  auto prune = shm::prune();
  REQUIRE(prune.is_ok());
  CHECK(std::find(prune->removed.begin(), prune->removed.end(), name) == prune->removed.end());
  auto m = shm::map(name + "[1]");
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kNotAList);
  REQUIRE(shm::remove(name).is_ok());
  CHECK(!exists(shm_path(name)));
  CHECK(shm::remove(name).code() == Code::kNotFound);
}

TEST_CASE("space reports the size of the region directory", "[shm]") {
  test::ShmGuard guard;
  auto sp = shm::space();
  REQUIRE(sp.is_ok());
  CHECK(sp->total > 0);
  CHECK(sp->free <= sp->total);
}

TEST_CASE("a region written on behalf of an owner is left for that owner to adopt", "[shm]") {
  test::ShmGuard guard;
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  Value v = Value::f64({1.0, 2.0});
  std::string name;
  {
    auto lease = shm::Lease::hold(*owner);
    REQUIRE(lease.is_ok());
    auto s = shm::share(*lease, v);
    REQUIRE(s.is_ok());
    name = s->name();
  }  // the writer's handle goes: the region stays, it is the owner's
  CHECK(exists(shm_path(name)));
  auto adopted = shm::adopt(name);
  REQUIRE(adopted.is_ok());
  REQUIRE(adopted->release().is_ok());
  CHECK_FALSE(exists(shm_path(name)));
}

TEST_CASE("a view taken from a temporary Mapped keeps the region mapped", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::list({Value::f64({1.5, 2.5}), Value::strings_utf8({"a", "b"})});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  // The Mapped (and the Result holding it) die at the end of each
  // full-expression; the views do not dangle.
  NodeView root = shm::map(s->name()).value().node();
  NodeView strings = (*shm::map(s->name() + "[2]")).node();
  Region region = shm::map(s->name())->region();
  // Released and unlinked: only the views hold the mappings now.
  REQUIRE(s->release().is_ok());
  auto first = root.child(0);
  REQUIRE(first.is_ok());
  CHECK((*first->array<Dtype::kF64>())[1] == 2.5);
  auto b = strings.string(1);
  REQUIRE(b.is_ok());
  CHECK(b->bytes == "b");
  auto again = region.at(std::vector<std::uint64_t>{1});
  REQUIRE(again.is_ok());
  CHECK(again->length() == 2);
}
