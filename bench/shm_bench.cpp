// Benchmarks of regions in shared memory (issue 3):
//
//  - BM_MapReadScalar/<bytes>: map("/kura_..[2,3]") and read that one scalar
//    in regions of 1 MiB .. 1 GiB. Mapping checks only the path, so the time
//    should stay flat as the region grows.
//  - BM_Memcpy1GiB vs BM_Share1GiB: copying 1 GiB into freshly allocated
//    memory, against share() of a 1 GiB f64 array (one copy into a new
//    region, hashed), in the same run.
//  - BM_InPlace1GiB: the same array built in place (the producer writes its
//    values straight into the region); the bytes_copied counter is what the
//    builder copied: 0.
#include <benchmark/benchmark.h>
#include <sys/mman.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <numeric>
#include <vector>

#include "kura/shm/region.hpp"

namespace {

constexpr std::size_t kGiB = std::size_t{1} << 30;
constexpr std::size_t kBigElements = kGiB / sizeof(double);

void die(const kura::Status& s) {
  std::fprintf(stderr, "shm_bench: %s\n", s.to_string().c_str());
  std::exit(1);
}

// list(<f64 array filling the region>, list(1L, 2L, 42.0)): [2,3] is 42.
struct ScalarRegion {
  kura::Value value;
  std::optional<kura::shm::Shared> shared;
};

const std::string& scalar_region_name(std::size_t bytes) {
  static std::map<std::size_t, ScalarRegion> regions;
  static std::map<std::size_t, std::string> names;
  auto it = names.find(bytes);
  if (it != names.end()) return it->second;
  ScalarRegion& r = regions[bytes];
  r.value = kura::Value::list(
      {kura::Value::array_in_place(kura::Dtype::kF64, bytes / sizeof(double)),
       kura::Value::list({kura::Value::i32({1}), kura::Value::i32({2}), kura::Value::f64({42.0})})});
  auto pending = kura::shm::Pending::create(r.value, {.hashed = false});
  if (!pending) die(pending.status());
  auto xs = pending->array<double>(r.value.children[0]);
  std::fill(xs.begin(), xs.end(), 1.0);
  auto shared = std::move(*pending).publish();
  if (!shared) die(shared.status());
  r.shared.emplace(std::move(*shared));
  return names[bytes] = r.shared->name() + "[2,3]";
}

void BM_MapReadScalar(benchmark::State& state) {
  const std::string& name = scalar_region_name(static_cast<std::size_t>(state.range(0)));
  for (auto _ : state) {
    auto mapped = kura::shm::map(name);
    if (!mapped) die(mapped.status());
    auto xs = mapped->node().array<kura::Dtype::kF64>();
    if (!xs || xs->size() != 1 || (*xs)[0] != 42.0) die(kura::corrupt("wrong value at [2,3]"));
    benchmark::DoNotOptimize((*xs)[0]);
  }
  state.counters["region_bytes"] = static_cast<double>(state.range(0));
}
BENCHMARK(BM_MapReadScalar)->RangeMultiplier(4)->Range(1 << 20, 1 << 30)->Unit(benchmark::kMicrosecond);

const std::vector<double>& source() {
  static const std::vector<double> src = [] {
    std::vector<double> v(kBigElements);
    std::iota(v.begin(), v.end(), 0.0);
    return v;
  }();
  return src;
}

void BM_Memcpy1GiB(benchmark::State& state) {
  const auto& src = source();
  for (auto _ : state) {
    void* dst = std::malloc(kGiB);  // fresh pages from the kernel, as a region's are
    if (!dst) die(kura::Status(kura::Code::kIo, "malloc of 1 GiB failed"));
    std::memcpy(dst, src.data(), kGiB);
    benchmark::DoNotOptimize(dst);
    benchmark::ClobberMemory();
    std::free(dst);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kGiB));
}
BENCHMARK(BM_Memcpy1GiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

void BM_Share1GiB(benchmark::State& state) {
  const auto& src = source();
  kura::Value v = kura::Value::array_borrowed(kura::Dtype::kF64, src.data(), src.size());
  for (auto _ : state) {
    auto shared = kura::shm::share(v, {.hashed = true});
    if (!shared) die(shared.status());
    state.PauseTiming();
    if (auto s = shared->release(); !s) die(s);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kGiB));
}
BENCHMARK(BM_Share1GiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

void BM_InPlace1GiB(benchmark::State& state) {
  kura::Value v = kura::Value::array_in_place(kura::Dtype::kF64, kBigElements);
  std::uint64_t copied = 0;
  for (auto _ : state) {
    auto pending = kura::shm::Pending::create(v, {.hashed = true});
    if (!pending) die(pending.status());
    auto xs = pending->array<double>(v);
    std::iota(xs.begin(), xs.end(), 0.0);  // the producer's own work, straight into the region
    copied = pending->bytes_copied();
    auto shared = std::move(*pending).publish();
    if (!shared) die(shared.status());
    state.PauseTiming();
    if (auto s = shared->release(); !s) die(s);
    state.ResumeTiming();
  }
  state.counters["bytes_copied"] = static_cast<double>(copied);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * kGiB));
}
BENCHMARK(BM_InPlace1GiB)->Unit(benchmark::kMillisecond)->UseRealTime()->Iterations(1);

}  // namespace

BENCHMARK_MAIN();
