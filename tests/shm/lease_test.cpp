// Leases under contention, and regions written on another owner's behalf
// (DESIGN.md section 3): a probe is never mistaken for a holder, a hold keeps
// a dead owner's files from prune, and a writer whose owner exits fails
// cleanly.
#include <signal.h>
#include <sys/wait.h>

#include <catch2/catch.hpp>
#include <string>

#include "child.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

namespace {

// Starts a helper that makes an owner and returns it (hex) with the helper.
std::pair<test::Child, std::string> start_owner() {
  auto c = test::Child::helper({"owner-then-exit"});
  std::string line = c.read_line();
  REQUIRE(line.rfind("owner ", 0) == 0);
  return {std::move(c), line.substr(6)};
}

std::uint64_t parse_hex(const std::string& s) {
  return std::stoull(s, nullptr, 16);
}

}  // namespace

TEST_CASE("Lease::hold on a dead owner fails every time while others probe it", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto [owner_proc, owner_hex] = start_owner();
  const std::uint64_t owner = parse_hex(owner_hex);
  owner_proc.kill_and_wait(SIGKILL);
  REQUIRE_FALSE(shm::owner_alive(owner));

  // Two processes hammer the lease meanwhile: one probes (owner_alive, list),
  // one holds. A probe that took a lock could make a hold believe a live
  // holder was there (the defect this test was written for: 178 of 20,000
  // holds succeeded).
  auto prober = test::Child::helper({"probe-loop", owner_hex});
  auto holder = test::Child::helper({"hold-loop", owner_hex});
  REQUIRE(prober.read_line() == "looping");
  REQUIRE(holder.read_line() == "looping");
  int succeeded = 0;
  constexpr int kHolds = 20000;
  for (int i = 0; i < kHolds; ++i) {
    auto l = shm::Lease::hold(owner);
    if (l.is_ok()) {
      ++succeeded;
    } else if (l.status().code() != Code::kNotFound) {
      FAIL("hold " << i << ": " << l.status().to_string());
    }
  }
  prober.close_input();
  holder.close_input();
  const std::string probes = prober.read_line();
  const std::string other = holder.read_line();
  INFO("prober: " << probes << "; other holder: " << other);
  CHECK(succeeded == 0);
  CHECK(other.rfind("held 0 of ", 0) == 0);
  CHECK(WEXITSTATUS(prober.wait()) == 0);
  CHECK(WEXITSTATUS(holder.wait()) == 0);
  REQUIRE(shm::prune(owner).is_ok());
  CHECK_FALSE(exists(shm_path("kura_" + owner_hex + ".lock")));
}

TEST_CASE("a probe takes no lock: a live owner stays alive and holdable under probes",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto [owner_proc, owner_hex] = start_owner();
  const std::uint64_t owner = parse_hex(owner_hex);
  auto prober = test::Child::helper({"probe-loop", owner_hex});
  REQUIRE(prober.read_line() == "looping");
  for (int i = 0; i < 2000; ++i) {
    auto l = shm::Lease::hold(owner);
    REQUIRE(l.is_ok());
    REQUIRE(l->owner_alive());
    // prune never touches a live owner, however often it looks.
    auto p = shm::prune(owner);
    REQUIRE(p.is_ok());
    REQUIRE(p->removed.empty());
  }
  prober.close_input();
  (void)prober.read_line();
  CHECK(WEXITSTATUS(prober.wait()) == 0);
  owner_proc.close_input();
  CHECK(WEXITSTATUS(owner_proc.wait()) == 0);
  CHECK_FALSE(shm::owner_alive(owner));
  CHECK_FALSE(exists(shm_path("kura_" + owner_hex + ".lock")));  // removed by its clean exit
}

TEST_CASE("a held lease keeps a dead owner's files from prune until it is dropped", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto [owner_proc, owner_hex] = start_owner();
  const std::uint64_t owner = parse_hex(owner_hex);
  Value v = Value::f64({1, 2, 3});
  auto lease = shm::Lease::hold(owner);
  REQUIRE(lease.is_ok());
  auto pending = shm::Pending::create(*lease, v);
  REQUIRE(pending.is_ok());
  lease = Status(Code::kNotFound, "dropped");  // the caller's Lease goes; the Pending keeps its own copy

  owner_proc.kill_and_wait(SIGKILL);
  CHECK_FALSE(shm::owner_alive(owner));
  auto p = shm::prune(owner);
  REQUIRE(p.is_ok());
  CHECK(p->removed.empty());  // someone writes for it: not provably abandoned
  // A new hold on the dead owner still fails: the owner is dead.
  auto again = shm::Lease::hold(owner);
  REQUIRE_FALSE(again.is_ok());
  CHECK(again.status().code() == Code::kNotFound);

  // Publishing for a dead owner publishes nothing.
  auto shared = std::move(pending).value().publish();
  REQUIRE_FALSE(shared.is_ok());
  CHECK(shared.status().code() == Code::kNotFound);
  CHECK(shared.status().message().find("exited") != std::string::npos);
  auto after = shm::prune(owner);
  REQUIRE(after.is_ok());
  CHECK(after->removed == std::vector<std::string>{"/kura_" + owner_hex + ".lock"});
}

TEST_CASE("a writer whose owner exits cleanly mid-write fails with NotFound and leaves nothing",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto [owner_proc, owner_hex] = start_owner();
  const std::uint64_t owner = parse_hex(owner_hex);
  Value v = Value::list({Value::array_in_place(Dtype::kF64, 4096), Value::strings_utf8({"result"})});
  auto lease = shm::Lease::hold(owner);
  REQUIRE(lease.is_ok());
  auto pending = shm::Pending::create(*lease, v);
  REQUIRE(pending.is_ok());
  auto xs = pending->array<double>(v.children[0]);
  for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i);

  // The owner exits normally: its clean-up removes every file of its owner,
  // our temporary file included.
  owner_proc.send("exit");
  CHECK(WEXITSTATUS(owner_proc.wait()) == 0);
  CHECK_FALSE(lease->owner_alive());

  auto shared = std::move(pending).value().publish();
  REQUIRE_FALSE(shared.is_ok());
  CHECK(shared.status().code() == Code::kNotFound);
  INFO(shared.status().to_string());
  CHECK(shared.status().message().find("owner " + owner_hex + " exited") != std::string::npos);
  for (const auto& e : test::shm_entries()) CHECK(e.rfind("kura_" + owner_hex, 0) != 0);
}

TEST_CASE("a region written for a live owner is theirs: the writer never unlinks it", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto [owner_proc, owner_hex] = start_owner();
  const std::uint64_t owner = parse_hex(owner_hex);
  Value v = Value::f64({4, 5});
  std::string name;
  {
    auto lease = shm::Lease::hold(owner);
    REQUIRE(lease.is_ok());
    auto s = shm::share(*lease, v);
    REQUIRE(s.is_ok());
    name = s->name();
    CHECK(name.rfind("/kura_" + owner_hex + "_", 0) == 0);
    CHECK(s->release().is_ok());
  }
  CHECK(exists(shm_path(name)));
  auto m = shm::map(name);
  REQUIRE(m.is_ok());
  // The owner's clean exit removes it.
  owner_proc.send("exit");
  CHECK(WEXITSTATUS(owner_proc.wait()) == 0);
  CHECK_FALSE(exists(shm_path(name)));
  CHECK(m->node().array<Dtype::kF64>()->back() == 5.0);  // a mapping outlives the unlink
}

TEST_CASE("a Lease that was moved from cannot be written for", "[shm]") {
  test::ShmGuard guard;
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  auto lease = shm::Lease::hold(*me);
  REQUIRE(lease.is_ok());
  shm::Lease moved = std::move(lease).value();
  CHECK(moved.owner_alive());
  shm::Lease empty = std::move(moved);
  Value v = Value::f64({1});
  auto p = shm::Pending::create(moved, v);  // NOLINT: use after move is the point
  REQUIRE_FALSE(p.is_ok());
  CHECK(p.status().code() == Code::kInvalidArgument);
  auto written = shm::share(empty, v);
  REQUIRE(written.is_ok());
  // Written with a lease on our own owner: ours to adopt (the writer's handle never unlinks it).
  auto adopted = shm::adopt(written->name());
  REQUIRE(adopted.is_ok());
  CHECK(adopted->release().is_ok());
}
