#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>
#include <string>
#include <vector>

#include "child.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

namespace {

struct Held {
  std::vector<std::string> names;
  std::string owner;  // hex
};

// Reads the output of `--helper hold N` up to "ready".
Held read_held(test::Child& c) {
  Held h;
  for (;;) {
    std::string line = c.read_line();
    if (line == "ready") return h;
    if (line.rfind("owner ", 0) == 0) {
      h.owner = line.substr(6);
    } else {
      REQUIRE(line.rfind("/kura_", 0) == 0);
      h.names.push_back(line);
    }
  }
}

std::uint64_t parse_hex(const std::string& s) {
  return std::stoull(s, nullptr, 16);
}

// The entries of a prune report that belong to one of `owners` (hex) or to
// owner 0: other programs' orphans pruned at the same time do not count.
std::vector<std::string> of_owners(const std::vector<std::string>& removed, std::vector<std::string> owners) {
  owners.push_back("0");
  std::vector<std::string> out;
  for (const auto& r : removed)
    for (const auto& o : owners)
      if (r.rfind("/kura_" + o + "_", 0) == 0 || r.rfind("/kura_" + o + ".", 0) == 0) out.push_back(r);
  return out;
}

}  // namespace

TEST_CASE("prune removes exactly a SIGKILLed owner's regions and lease", "[shm][multiprocess]") {
  test::ShmGuard guard;
  // Orphans of earlier runs would make the report below inexact.
  REQUIRE(shm::prune().is_ok());

  auto dead = test::Child::helper({"hold", "5"});
  auto live = test::Child::helper({"hold", "2"});
  Held d = read_held(dead);
  Held l = read_held(live);
  REQUIRE(d.names.size() == 5);
  REQUIRE(l.names.size() == 2);
  Value v = Value::strings_utf8({"kept"});
  shm::ShareOptions keep;
  keep.keep = true;
  auto kept = shm::share(v, keep);
  REQUIRE(kept.is_ok());

  CHECK(shm::owner_alive(parse_hex(d.owner)));
  int status = dead.kill_and_wait(SIGKILL);
  REQUIRE(WIFSIGNALED(status));
  CHECK(!shm::owner_alive(parse_hex(d.owner)));
  CHECK(shm::owner_alive(parse_hex(l.owner)));
  // A dead owner's lease cannot be held for writing on its behalf.
  auto lease = shm::Lease::hold(parse_hex(d.owner));
  REQUIRE(!lease.is_ok());
  CHECK(lease.status().code() == Code::kNotFound);

  // list() reports the dead owner's regions as orphans, the others as alive.
  auto listing = shm::list();
  REQUIRE(listing.is_ok());
  int orphans = 0;
  for (const auto& r : *listing) {
    bool of_dead = std::find(d.names.begin(), d.names.end(), r.name) != d.names.end();
    if (of_dead) ++orphans;
    CHECK(r.alive == !of_dead);
  }
  CHECK(orphans == 5);

  auto report = shm::prune();
  REQUIRE(report.is_ok());
  std::vector<std::string> expected = d.names;
  expected.push_back("/kura_" + d.owner + ".lock");
  std::sort(expected.begin(), expected.end());
  const std::string me = test::hex(*shm::process_owner());
  CHECK(of_owners(report->removed, {d.owner, l.owner, me}) == expected);
  for (const auto& n : d.names) CHECK(!exists(shm_path(n)));
  for (const auto& n : l.names) {
    CHECK(exists(shm_path(n)));
    CHECK(shm::map(n).is_ok());
  }
  CHECK(exists(shm_path(kept->name())));
  CHECK(exists(shm_path("kura_" + l.owner + ".lock")));

  // A second prune finds nothing.
  auto again = shm::prune();
  REQUIRE(again.is_ok());
  CHECK(of_owners(again->removed, {d.owner, l.owner, me}).empty());

  // The live helper cleans up after itself when it exits normally.
  live.close_input();
  status = live.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  for (const auto& n : l.names) CHECK(!exists(shm_path(n)));
  CHECK(!exists(shm_path("kura_" + l.owner + ".lock")));
  REQUIRE(shm::remove(kept->name()).is_ok());
}

TEST_CASE("a writer killed before publishing exposes nothing and prune removes its temporary",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto w = test::Child::helper({"pending"});
  std::string owner_line = w.read_line();
  REQUIRE(owner_line.rfind("owner ", 0) == 0);
  const std::string owner = owner_line.substr(6);
  REQUIRE(w.read_line() == "ready");
  w.kill_and_wait(SIGKILL);

  std::vector<std::string> temps;
  for (const auto& e : test::shm_entries())
    if (e.rfind("kura_" + owner + "_", 0) == 0) temps.push_back(e);
  REQUIRE(temps.size() == 1);
  const std::string temp = temps[0];
  REQUIRE(temp.size() > 4);
  REQUIRE(temp.substr(temp.size() - 4) == ".tmp");
  // The name it would have been published under does not open.
  const std::string would_be = "/" + temp.substr(0, temp.size() - 4);
  auto m = shm::map(would_be);
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kNotFound);
  auto listing = shm::list();
  REQUIRE(listing.is_ok());
  for (const auto& r : *listing) CHECK(r.owner != parse_hex(owner));

  auto report = shm::prune();
  REQUIRE(report.is_ok());
  std::vector<std::string> expected{"/" + temp, "/kura_" + owner + ".lock"};
  std::sort(expected.begin(), expected.end());
  CHECK(of_owners(report->removed, {owner, test::hex(*shm::process_owner())}) == expected);
  CHECK(!exists(shm_path(temp)));
}

TEST_CASE("a full region directory is NoSpace at create time and leaves no file", "[shm][multiprocess]") {
  test::ShmGuard guard;
  // A 1 MiB tmpfs over the region directory.
  auto run = test::helper_on_private_tmpfs("tmpfs", "size=1m", {"nospace"}, "the NoSpace path");
  if (!run) return;
  const auto& lines = run->lines;
  const int status = run->status;
  INFO("helper said: " << lines[0]);
  REQUIRE(lines[0].rfind("nospace ", 0) == 0);
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  const std::string msg = lines[0].substr(8);
  CHECK(msg.find("cannot create region of 2.0 MiB") != std::string::npos);
  CHECK(msg.find(test::shm_dir() + " has 1.0 MiB free") != std::string::npos);
  CHECK(msg.find("--shm-size") != std::string::npos);
}

namespace {

// The temporaries of `owner` (hex) in the region directory that are not in `before`.
std::vector<std::string> new_temporaries(const std::set<std::string>& before, const std::string& owner) {
  std::vector<std::string> out;
  for (const auto& e : test::shm_entries())
    if (!before.count(e) && e.rfind("kura_" + owner + "_", 0) == 0 && e.size() > 4 &&
        e.substr(e.size() - 4) == ".tmp")
      out.push_back(e);
  return out;
}

}  // namespace

TEST_CASE("prune removes the temporary of a SIGKILLed writer while the owner it wrote for lives",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  // With a child forked by the writer that outlives it: the child must not
  // keep the writer's lock on the temporary.
  const bool with_heir = GENERATE(false, true);
  INFO((with_heir ? "the writer forked a child that outlives it" : "the writer forked nothing"));
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  const std::string me_hex = test::hex(*me);
  Value v = Value::f64({1, 2, 3});
  auto earlier = shm::share(v);  // a region of the owner, published before
  REQUIRE(earlier.is_ok());
  const std::set<std::string> before = test::shm_entries();

  std::vector<std::string> args{"write-for", me_hex, "8"};
  if (with_heir) args.push_back("fork");
  auto writer = test::Child::helper(args);
  pid_t heir = -1;
  if (with_heir) {
    const std::string line = writer.read_line();
    REQUIRE(line.rfind("heir ", 0) == 0);
    heir = static_cast<pid_t>(std::stol(line.substr(5)));
  }
  REQUIRE(writer.read_line() == "writing");  // the temporary exists from here on
  const std::vector<std::string> temps = new_temporaries(before, me_hex);
  REQUIRE(temps.size() == 1);
  const std::string temp = temps[0];

  const int status = writer.kill_and_wait(SIGKILL);
  REQUIRE(WIFSIGNALED(status));
  if (with_heir) REQUIRE(::kill(heir, 0) == 0);
  REQUIRE(shm::owner_alive(*me));
  auto report = shm::prune(*me);
  REQUIRE(report.is_ok());
  CHECK(report->removed == std::vector<std::string>{"/" + temp});
  CHECK_FALSE(exists(shm_path(temp)));
  // Nothing else of the live owner went.
  CHECK(shm::owner_alive(*me));
  CHECK(exists(shm_path("kura_" + me_hex + ".lock")));
  CHECK(exists(shm_path(earlier->name())));
  auto m = shm::map(earlier->name());
  REQUIRE(m.is_ok());
  CHECK((*m->node().array<Dtype::kF64>())[2] == 3.0);
  if (with_heir) ::kill(heir, SIGKILL);
  CHECK(earlier->release().is_ok());
}

TEST_CASE("prune leaves the temporary of a writer that is still writing", "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  const std::string me_hex = test::hex(*me);
  const std::set<std::string> before = test::shm_entries();
  auto writer = test::Child::helper({"write-for", me_hex, "4"});
  REQUIRE(writer.read_line() == "writing");
  const std::vector<std::string> temps = new_temporaries(before, me_hex);
  REQUIRE(temps.size() == 1);
  const std::string temp = temps[0];

  auto mine = shm::prune(*me);
  REQUIRE(mine.is_ok());
  CHECK(mine->removed.empty());
  auto all = shm::prune();
  REQUIRE(all.is_ok());
  for (const auto& r : all->removed) CHECK(r.rfind("/kura_" + me_hex, 0) != 0);
  CHECK(exists(shm_path(temp)));

  // The writer finishes undisturbed; the region is ours.
  writer.send("publish");
  const std::string name = writer.read_line();
  REQUIRE(name.rfind("/kura_" + me_hex + "_", 0) == 0);
  CHECK_FALSE(exists(shm_path(temp)));
  auto adopted = shm::adopt(name);
  REQUIRE(adopted.is_ok());
  auto m = adopted->map();
  REQUIRE(m.is_ok());
  auto bytes = m->node().array<Dtype::kU8>();
  REQUIRE(bytes.is_ok());
  REQUIRE(bytes->size() == std::size_t{4} << 20);
  CHECK((*bytes)[0] == 0x5a);
  CHECK((*bytes)[bytes->size() - 1] == 0xa5);
  CHECK(adopted->release().is_ok());
  writer.close_input();
  CHECK(WEXITSTATUS(writer.wait()) == 0);
}

TEST_CASE("a prune running meanwhile never takes a region's temporary from its writer",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  auto me = shm::process_owner();
  REQUIRE(me.is_ok());
  auto pruner = test::Child::helper({"prune-loop", test::hex(*me)});
  REQUIRE(pruner.read_line() == "looping");
  auto lease = shm::Lease::hold(*me);
  REQUIRE(lease.is_ok());
  constexpr int kRegions = 1000;
  for (int i = 0; i < kRegions; ++i) {
    Value v = Value::i32({i, i + 1});
    // In turn as the owner itself and as a writer holding the owner's lease.
    const bool for_lease = i % 2 == 1;
    auto s = for_lease ? shm::share(*lease, v) : shm::share(v);
    if (!s) FAIL("publish " << i << ": " << s.status().to_string());
    Status released;
    if (for_lease) {
      auto adopted = shm::adopt(s->name());
      if (!adopted) FAIL("adopt " << i << ": " << adopted.status().to_string());
      released = adopted->release();
    } else {
      released = s->release();
    }
    if (!released) FAIL("release " << i << " (pruned while published?): " << released.to_string());
  }
  pruner.close_input();
  const std::string line = pruner.read_line();
  INFO("pruner: " << line);
  CHECK(line.rfind("prunes ", 0) == 0);
  CHECK(WEXITSTATUS(pruner.wait()) == 0);
}
