#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <set>

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
