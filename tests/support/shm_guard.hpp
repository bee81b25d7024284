// ShmGuard: a test fixture that fails the test if it leaves anything behind
// in the region directory (the test process's private one, see
// private_shm_dir.hpp).
//
//   TEST_CASE("...", "[shm]") {
//     kura::test::ShmGuard guard;   // first, so it is checked last
//     ...
//   }
//
// The constructor makes sure the test process's own owner and lease exist
// (they live as long as the process) and snapshots every kura_* entry of
// the region directory. The destructor fails the test for every kura_* entry that was not
// there before, names it, and removes it so one leak does not fail the next
// test too.
#pragma once

#include <dirent.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstdio>
#include <exception>
#include <set>
#include <string>
#include <vector>

#include "kura/shm/owner.hpp"
#include "private_shm_dir.hpp"

namespace kura::test {

// The names of every kura_* entry in the region directory.
inline std::set<std::string> shm_entries() {
  std::set<std::string> out;
  if (DIR* dir = ::opendir(shm_dir().c_str())) {
    while (dirent* de = ::readdir(dir)) {
      std::string n = de->d_name;
      if (n.rfind("kura_", 0) == 0) out.insert(n);
    }
    ::closedir(dir);
  }
  return out;
}

class ShmGuard {
 public:
  ShmGuard() {
    auto owner = kura::shm::process_owner();
    if (!owner) FAIL("cannot create this process's owner: " << owner.status().to_string());
    before_ = shm_entries();
  }
  ShmGuard(const ShmGuard&) = delete;
  ShmGuard& operator=(const ShmGuard&) = delete;

  // kura_* entries created since the snapshot and still present.
  std::vector<std::string> new_entries() const {
    std::vector<std::string> out;
    for (const std::string& n : shm_entries())
      if (!before_.count(n)) out.push_back(n);
    return out;
  }

  ~ShmGuard() {
    const std::vector<std::string> left = new_entries();
    if (left.empty()) return;
    std::string list;
    for (const std::string& n : left) list += " " + shm_path(n);
    if (std::uncaught_exceptions() > 0) {
      // The test already failed; say what it left and tidy up.
      std::fprintf(stderr, "ShmGuard: the failed test also left in the region directory:%s (removed)\n",
                   list.c_str());
    } else {
      FAIL_CHECK("the test left files in the region directory:" << list << " (removed now)");
    }
    for (const std::string& n : left) ::unlink(shm_path(n).c_str());
  }

 private:
  std::set<std::string> before_;
};

}  // namespace kura::test
