// kura_shm_tests: Catch2 in a private region directory, or a helper process
// (in the directory of the test that started it) when started with --helper.
#define CATCH_CONFIG_RUNNER
#include <unistd.h>

#include <catch2/catch.hpp>
#include <climits>
#include <cstring>

#include "child.hpp"
#include "private_shm_dir.hpp"

namespace kura::test {
int run_helper(int argc, char** argv);  // helpers.cpp
}

int main(int argc, char** argv) {
  char exe[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    kura::test::set_self_exe(exe);
  }
  if (argc >= 3 && std::strcmp(argv[1], "--helper") == 0) return kura::test::run_helper(argc - 2, argv + 2);
  const std::string dir = kura::test::make_private_shm_dir();
  int failed = Catch::Session().run(argc, argv);
  if (!kura::test::check_and_remove_private_shm_dir(dir) && failed == 0) failed = 1;
  return failed;
}
