// The main() of the Catch2 test binaries: a private region directory for the
// process (private_shm_dir.hpp), the tests, then a check that nothing was
// left in it.
#define CATCH_CONFIG_RUNNER
#include <catch2/catch.hpp>

#include "private_shm_dir.hpp"

int main(int argc, char** argv) {
  const std::string dir = kura::test::make_private_shm_dir();
  int failed = Catch::Session().run(argc, argv);
  if (!kura::test::check_and_remove_private_shm_dir(dir) && failed == 0) failed = 1;
  return failed;
}
