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

TEST_CASE("a FIFO planted at a region name or a lease path never blocks a reader", "[shm][multiprocess]") {
  test::ShmGuard guard;
  // An owner id nobody uses, with a region of it and a FIFO as its lease; and
  // a FIFO under a region-shaped name.
  const std::string owner = "f1f0f1f0";
  Value v = Value::i32({1});
  auto image = build(v, Stamp{}, true);
  REQUIRE(image.is_ok());
  const std::string region = "/kura_" + owner + "_1";
  plant(region, v, 0400);
  const std::string fifo_lease = shm_path("kura_" + owner + ".lock");
  REQUIRE(::mkfifo(fifo_lease.c_str(), 0600) == 0);
  const std::string fifo_region = "/kura_" + owner + "_2";
  REQUIRE(::mkfifo(shm_path(fifo_region).c_str(), 0600) == 0);

  // Each helper runs every entry point on one name; a blocking open would
  // leave it silent and read_line would fail after its bounded wait.
  for (const std::string& name : {region, fifo_region}) {
    INFO("name " << name);
    auto c = test::Child::helper({"touch-all", name});
    const bool is_fifo = name == fifo_region;
    CHECK(c.read_line(10000) == (is_fifo ? "map permission denied" : "map ok"));
    CHECK(c.read_line(10000) == "adopt permission denied");  // another owner's region, or a FIFO
    CHECK(c.read_line(10000) == "alive yes");                // a FIFO lease proves nothing
    CHECK(c.read_line(10000) == "hold permission denied");
    CHECK(c.read_line(10000) == "list ok");
    CHECK(c.read_line(10000) == "prune-owner ok 0");
    CHECK(c.read_line(10000) == "prune ok");
    CHECK(WEXITSTATUS(c.wait()) == 0);
  }
  // Nothing was removed: the FIFOs and the region stay for their owner (or
  // the user) to deal with.
  CHECK(exists(shm_path(region)));
  CHECK(exists(fifo_lease));
  CHECK(exists(shm_path(fifo_region)));
  ::unlink(shm_path(region).c_str());
  ::unlink(fifo_lease.c_str());
  ::unlink(shm_path(fifo_region).c_str());
}
