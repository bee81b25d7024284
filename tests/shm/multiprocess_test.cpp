#include <sys/wait.h>

#include <catch2/catch.hpp>

#include "child.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "sample.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

TEST_CASE("a value shared by one process reads back in another", "[shm][multiprocess]") {
  test::ShmGuard guard;
  SECTION("helper shares, this process maps") {
    auto writer = test::Child::helper({"share-sample"});
    const std::string name = writer.read_line();
    REQUIRE(name.rfind("/kura_", 0) == 0);
    {
      auto m = shm::map(name);
      REQUIRE(m.is_ok());
      CHECK(test::check_sample(m->node()) == "");
      auto sub = shm::map(name + test::kSamplePath);
      REQUIRE(sub.is_ok());
      auto copy = to_value(sub->node());
      REQUIRE(copy.is_ok());
      CHECK(*copy == test::sample_at_path());
      auto strings = shm::map(name + "[13]");
      REQUIRE(strings.is_ok());
      CHECK(strings->node().string(1)->na);
      // The writer releases while we still hold mappings.
      writer.close_input();
      int status = writer.wait();
      CHECK(WIFEXITED(status));
      CHECK(WEXITSTATUS(status) == 0);
      CHECK(!exists(shm_path(name)));
      CHECK(test::check_sample(m->node()) == "");
    }
    auto gone = shm::map(name);
    REQUIRE(!gone.is_ok());
    CHECK(gone.status().code() == Code::kNotFound);
  }
  SECTION("this process shares, helper maps") {
    Value v = test::sample_value();
    auto s = shm::share(v);
    REQUIRE(s.is_ok());
    auto reader = test::Child::helper({"check-sample", s->name()});
    CHECK(reader.read_line() == "ok");
    int status = reader.wait();
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
  }
}

TEST_CASE("unlinking a region does not disturb a reader looping over it", "[shm][multiprocess]") {
  test::ShmGuard guard;
  constexpr std::size_t kN = 1 << 21;  // 16 MiB of f64
  Value v = Value::array_in_place(Dtype::kF64, kN);
  auto p = shm::Pending::create(v);
  REQUIRE(p.is_ok());
  auto xs = p->array<double>(v);
  for (std::size_t i = 0; i < kN; ++i) xs[i] = static_cast<double>(i);
  auto s = std::move(p).value().publish();
  REQUIRE(s.is_ok());
  const std::string name = s->name();

  auto reader = test::Child::helper({"reader", name, std::to_string(kN)});
  REQUIRE(reader.read_line() == "looping");
  REQUIRE(s->release().is_ok());
  CHECK(!exists(shm_path(name)));
  reader.send("unlinked");
  std::string result = reader.read_line(60000);
  INFO("reader said: " << result);
  CHECK(result.rfind("ok ", 0) == 0);
  int status = reader.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  auto m = shm::map(name);
  REQUIRE(!m.is_ok());
  CHECK(m.status().code() == Code::kNotFound);
}
