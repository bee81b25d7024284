// map()'s cache of mappings: a second map of a name reuses the mapping, and
// still honours removal and replacement by other processes; bounds, threads
// (fork() is in fork_test.cpp).
#include <sys/stat.h>
#include <sys/wait.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <string>
#include <thread>
#include <vector>

#include "child.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;
using kura::test::exists;
using kura::test::shm_path;

namespace {

// list(f64 [x], list(i32 [tag])): [1] is x, [2,1] is tag.
Value tagged(double x, std::int32_t tag) {
  return Value::list({Value::f64({x}), Value::list({Value::i32({tag})})});
}

double x_at(const shm::Mapped& m) {
  auto a = m.node().array<Dtype::kF64>();
  REQUIRE(a.is_ok());
  REQUIRE(a->size() == 1);
  return (*a)[0];
}

std::int32_t tag_at(const std::string& name) {
  auto m = shm::map(name + "[2,1]");
  INFO(name << ": " << (m.is_ok() ? std::string("ok") : m.status().to_string()));
  REQUIRE(m.is_ok());
  auto a = m->node().array<Dtype::kI32>();
  REQUIRE(a.is_ok());
  return (*a)[0];
}

// Runs `argv` as a process of its own and waits (bounded) for it to succeed.
void run(const std::vector<std::string>& argv) {
  auto child = test::Child::spawn(argv);
  const int status = child.wait();
  INFO(argv[0] << " " << argv.back());
  REQUIRE(WIFEXITED(status));
  REQUIRE(WEXITSTATUS(status) == 0);
}

// Restores the default bounds when a test ends.
struct DefaultLimits {
  ~DefaultLimits() {
    shm::set_map_cache_limits({});
    shm::drop_map_cache();
  }
};

}  // namespace

TEST_CASE("a second map of a name reuses the mapping, for any path in it", "[shm]") {
  test::ShmGuard guard;
  DefaultLimits limits;
  shm::drop_map_cache();
  Value v = tagged(1.5, 7);
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  auto first = shm::map(s->name() + "[1]");
  REQUIRE(first.is_ok());
  const shm::MapCacheStats before = shm::map_cache_stats();
  CHECK(before.mappings == 1);
  CHECK(before.bytes == s->size());
  auto second = shm::map(s->name() + "[1]");
  REQUIRE(second.is_ok());
  CHECK(tag_at(s->name()) == 7);
  const shm::MapCacheStats after = shm::map_cache_stats();
  CHECK(after.hits == before.hits + 2);
  CHECK(after.misses == before.misses);
  // The same mapping: the same bytes.
  CHECK(second->region().bytes().data() == first->region().bytes().data());
  CHECK(x_at(*second) == 1.5);
  // Errors of the path are the path's, whether cached or not.
  CHECK(shm::map(s->name() + "[3]").status().code() == Code::kOutOfRange);
  CHECK(shm::map(s->name() + "[1,1]").status().code() == Code::kNotAList);
  // This process releasing its region drops the entry at once.
  REQUIRE(s->release().is_ok());
  CHECK(shm::map_cache_stats().mappings == 0);
  CHECK(x_at(*second) == 1.5);
}

TEST_CASE("a cached region removed by another process is NotFound while views keep working",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  DefaultLimits limits;
  Value v = tagged(2.5, 8);
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  auto m = shm::map(s->name() + "[1]");
  REQUIRE(m.is_ok());
  REQUIRE(tag_at(s->name()) == 8);  // cached now
  REQUIRE(shm::map_cache_stats().mappings == 1);

  run({"rm", "-f", shm_path(s->name())});
  REQUIRE_FALSE(exists(shm_path(s->name())));
  auto again = shm::map(s->name() + "[2,1]");
  REQUIRE_FALSE(again.is_ok());
  CHECK(again.status().code() == Code::kNotFound);
  // The stale entry is gone with its mapping's reference; the view still reads.
  CHECK(shm::map_cache_stats().mappings == 0);
  CHECK(x_at(*m) == 2.5);
  CHECK(shm::map(s->name()).status().code() == Code::kNotFound);
  REQUIRE(s->release().is_ok());
}

TEST_CASE("a region replaced under its name by another process is mapped afresh", "[shm][multiprocess]") {
  test::ShmGuard guard;
  DefaultLimits limits;
  Value old_value = tagged(3.5, 1);
  Value new_value = tagged(4.5, 2);
  auto old_region = shm::share(old_value);
  REQUIRE(old_region.is_ok());
  auto replacement = shm::share(new_value);
  REQUIRE(replacement.is_ok());
  REQUIRE(old_region->size() == replacement->size());  // only the inode tells them apart
  auto old_view = shm::map(old_region->name() + "[1]");
  REQUIRE(old_view.is_ok());
  REQUIRE(tag_at(old_region->name()) == 1);

  // Another process moves the replacement over the old name (rename(2)).
  run({"mv", "-f", shm_path(replacement->name()), shm_path(old_region->name())});
  const shm::MapCacheStats before = shm::map_cache_stats();
  CHECK(tag_at(old_region->name()) == 2);
  CHECK(shm::map_cache_stats().misses == before.misses + 1);
  auto new_view = shm::map(old_region->name() + "[1]");
  REQUIRE(new_view.is_ok());
  CHECK(x_at(*new_view) == 4.5);
  CHECK(x_at(*old_view) == 3.5);
  CHECK(shm::map_cache_stats().hits == before.hits + 1);
  REQUIRE(old_region->release().is_ok());   // removes the name, now the replacement's file
  REQUIRE(replacement->release().is_ok());  // its own name is already gone
}

TEST_CASE("the cache keeps to its bounds, and a region over the byte bound is never cached", "[shm]") {
  test::ShmGuard guard;
  DefaultLimits limits;
  std::vector<Value> values;
  std::vector<shm::Shared> regions;
  for (int i = 0; i < 4; ++i) values.push_back(tagged(i, i));
  for (const Value& v : values) {
    auto s = shm::share(v);
    REQUIRE(s.is_ok());
    regions.push_back(std::move(s).value());
  }
  shm::set_map_cache_limits({.mappings = 2, .bytes = std::uint64_t{1} << 30});
  for (int round = 0; round < 3; ++round)
    for (int i = 0; i < 4; ++i) CHECK(tag_at(regions[i].name()) == i);
  CHECK(shm::map_cache_stats().mappings == 2);
  CHECK(shm::map_cache_stats().bytes == regions[2].size() + regions[3].size());

  shm::set_map_cache_limits({.mappings = 64, .bytes = regions[0].size() - 1});
  CHECK(shm::map_cache_stats().mappings == 0);
  CHECK(tag_at(regions[0].name()) == 0);
  CHECK(shm::map_cache_stats().mappings == 0);

  shm::set_map_cache_limits({.mappings = 0});
  CHECK(tag_at(regions[1].name()) == 1);
  CHECK(shm::map_cache_stats().mappings == 0);
  for (auto& r : regions) REQUIRE(r.release().is_ok());
}

TEST_CASE("threads map, evict and drop cached regions at once", "[shm]") {
  test::ShmGuard guard;
  DefaultLimits limits;
  constexpr int kRegions = 3;
  constexpr int kThreads = 4;
  constexpr int kMaps = 400;
  std::vector<Value> values;
  std::vector<shm::Shared> regions;
  for (int i = 0; i < kRegions; ++i) values.push_back(tagged(10 + i, 100 + i));
  for (const Value& v : values) {
    auto s = shm::share(v);
    REQUIRE(s.is_ok());
    regions.push_back(std::move(s).value());
  }
  const std::uint64_t hits_before = shm::map_cache_stats().hits;
  std::atomic<int> wrong{0};
  std::atomic<bool> done{false};
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (int k = 0; k < kMaps; ++k) {
        const int i = (t + k) % kRegions;
        auto m = shm::map(regions[i].name() + "[2,1]");
        auto a = m ? m->node().array<Dtype::kI32>() : Result<std::span<const std::int32_t>>(m.status());
        if (!a || (*a)[0] != 100 + i) ++wrong;
      }
    });
  // Meanwhile the bounds change and the cache is emptied, over and over.
  std::thread churn([&] {
    for (int k = 0; !done; ++k) {
      shm::set_map_cache_limits({.mappings = static_cast<std::size_t>(k % 3)});
      if (k % 5 == 0) shm::drop_map_cache();
      std::this_thread::yield();
    }
  });
  for (auto& th : threads) th.join();
  done = true;
  churn.join();
  CHECK(wrong == 0);
  shm::set_map_cache_limits({});
  for (int i = 0; i < kRegions; ++i) CHECK(tag_at(regions[i].name()) == 100 + i);
  for (int i = 0; i < kRegions; ++i) CHECK(tag_at(regions[i].name()) == 100 + i);
  CHECK(shm::map_cache_stats().hits >= hits_before + kRegions);
  for (auto& r : regions) REQUIRE(r.release().is_ok());
}
