// Out of memory in shm: an error value, never an abort.
#include <catch2/catch.hpp>

#include "failing_new.hpp"
#include "kura/shm/directory.hpp"
#include "private_shm_dir.hpp"

using namespace kura;

TEST_CASE("out of memory at the first use of the region directory is OutOfMemory, and the next use works",
          "[shm]") {
  // Nothing in this process has used kura::shm yet: this is the first use,
  // which reads KURA_SHM_DIR and fixes the directory.
  test::fail_allocations_after(0);
  const Status first = shm::check_directory();
  const bool refused = test::disarm_allocations();
  REQUIRE(refused);
  CHECK(first.code() == Code::kOutOfMemory);
  CHECK(shm::check_directory().is_ok());
  CHECK(shm::directory() == test::shm_dir());
}
