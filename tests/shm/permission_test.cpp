#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>

#include "child.hpp"
#include "kura/core/builder.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

namespace {

// Writes a valid region image of `v` at `name` with `mode`.
void plant(const std::string& name, const Value& v, mode_t mode) {
  auto bytes = build(v, Stamp{}, true);
  REQUIRE(bytes.is_ok());
  int fd = ::open(shm_path(name).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
  REQUIRE(fd >= 0);
  REQUIRE(::write(fd, bytes->data(), bytes->size()) == static_cast<ssize_t>(bytes->size()));
  REQUIRE(::fchmod(fd, mode) == 0);
  ::close(fd);
}

std::string fresh_name() {
  auto owner = shm::process_owner();
  REQUIRE(owner.is_ok());
  static int n = 0;
  return "/kura_" + test::hex(*owner) + "_" + test::hex(0xabc000 + static_cast<unsigned>(++n));
}

}  // namespace

TEST_CASE("under umask 000 leases are 0600, temporaries 0600, regions 0400", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto c = test::Child::helper({"modes"});
  CHECK(c.read_line() == "lease 600 temp 600 region 400");
  int status = c.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}

TEST_CASE("a symlink planted at a region name is refused", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::i32({1, 2});
  auto real = shm::share(v);
  REQUIRE(real.is_ok());
  const std::string name = fresh_name();
  REQUIRE(::symlink(shm_path(real->name()).c_str(), shm_path(name).c_str()) == 0);
  auto m = shm::map(name);
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kPermission);
  CHECK(m.status().message().find("symbolic link") != std::string::npos);
  auto a = shm::adopt(name);
  REQUIRE(!a.is_ok());
  CHECK(a.status().code() == Code::kPermission);
  // list() shows no symlink as a region.
  auto l = shm::list();
  REQUIRE(l.is_ok());
  CHECK(std::none_of(l->begin(), l->end(), [&](const shm::RegionInfo& r) { return r.name == name; }));
  // Removing the planted link is allowed (it is ours) and leaves its target.
  REQUIRE(shm::remove(name).is_ok());
  CHECK(exists(shm_path(real->name())));
}

TEST_CASE("a region open to group or other is refused", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::f64({3.25});
  const std::string open_name = fresh_name();
  plant(open_name, v, 0644);
  auto m = shm::map(open_name);
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kPermission);
  CHECK(m.status().message().find("0644") != std::string::npos);
  // The same bytes with a private mode map fine.
  const std::string private_name = fresh_name();
  plant(private_name, v, 0400);
  auto ok = shm::map(private_name);
  REQUIRE(ok.is_ok());
  CHECK(ok->node().array<Dtype::kF64>().value()[0] == 3.25);
  REQUIRE(shm::remove(open_name).is_ok());
  REQUIRE(shm::remove(private_name).is_ok());
}

TEST_CASE("another user's region is refused and never removed", "[shm]") {
  test::ShmGuard guard;
  if (::geteuid() != 0) {
    WARN("SKIPPED: needs root to make a file of another user");
    return;
  }
  Value v = Value::f64({1});
  // An owner id with no lease: its regions would be orphans if they were ours.
  const std::string name = "/kura_dead0001_1";
  plant(name, v, 0400);
  REQUIRE(::chown(shm_path(name).c_str(), 65534, 65534) == 0);
  auto m = shm::map(name);
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kPermission);
  CHECK(shm::remove(name).code() == Code::kPermission);
  auto report = shm::prune();
  REQUIRE(report.is_ok());
  CHECK(exists(shm_path(name)));
  auto l = shm::list();
  REQUIRE(l.is_ok());
  CHECK(std::none_of(l->begin(), l->end(), [&](const shm::RegionInfo& r) { return r.name == name; }));
  // Its lease, owned by another user, can never be proved dead.
  const std::string lease = shm_path("kura_dead0001.lock");
  {
    int fd = ::open(lease.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0600);
    REQUIRE(fd >= 0);
    ::close(fd);
  }
  REQUIRE(::chown(lease.c_str(), 65534, 65534) == 0);
  CHECK(shm::owner_alive(0xdead0001));
  auto held = shm::Lease::hold(0xdead0001);
  REQUIRE(!held.is_ok());
  CHECK(held.status().code() == Code::kPermission);
  auto again = shm::prune();
  REQUIRE(again.is_ok());
  CHECK(exists(lease));
  ::unlink(lease.c_str());
  ::unlink(shm_path(name).c_str());
}
