// A private region directory for each test process.
//
// Every test binary's main() calls make_private_shm_dir() before anything
// else: it creates <base>/kura-test.XXXXXX (base: $KURA_SHM_DIR when set,
// else /dev/shm) and points KURA_SHM_DIR at it, so this process and every
// process it starts (helpers, the kura tool) keep their regions and leases
// there. Tests running in parallel (ctest -j8) then never see each other's
// files, and a machine-wide prune in one test cannot touch another's.
// check_and_remove_private_shm_dir() fails the run when a region, a
// temporary or an unheld lease was left behind, then removes the directory.
#pragma once

#include <string>

namespace kura::test {

// Creates the private directory and sets KURA_SHM_DIR; returns its path.
// Exits the process with a message when it cannot.
std::string make_private_shm_dir();

// Lists what was left in `dir` on stderr and returns false when anything
// other than a held lease is there; removes `dir` and its files either way.
bool check_and_remove_private_shm_dir(const std::string& dir);

// The region directory of this process (KURA_SHM_DIR).
const std::string& shm_dir();

// The path of a region name ("/kura_..") or file name ("kura_..") in it.
std::string shm_path(const std::string& name);

}  // namespace kura::test
