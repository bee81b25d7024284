// Benchmarks of regions in the region directory of this process (issue 11;
// bench/run.sh runs it once on /dev/shm and once on a tmpfs with huge
// pages):
//
//  - hash/<build>/<bytes>: XXH3-64 by each build this CPU runs (libxxhash,
//    scalar, avx2, avx512), from cache (1 MiB) and from memory (256 MiB).
//  - copy/memcpy_warm, copy/memcpy_fresh: 1 GiB copied into memory already
//    touched, and into fresh memory; copy/share_hashed, copy/share_unhashed:
//    share() of the same 1 GiB (one copy into a new region), with the time
//    to release (unlink) the region as a counter; copy/in_place: the region
//    built in place (the producer computes the values into it), hashed.
//  - lookup/kura_map/<MiB>/<depth>: map() of a name with a path of `depth`
//    indices, such as /kura_.._..[4,1,1,1], and read the f64 there, in
//    regions of 1 MiB to 1 GiB, with map()'s cache off (open, map, unmap
//    each time); lookup/kura_map_cached: the same with the cache on (one
//    fstatat per map); lookup/kura_walk: the same path walked in a region
//    already mapped. lookup/boost_open_find/<MiB>: Boost.Interprocess
//    opens a segment of that size and find()s a named double;
//    lookup/boost_find: find() in a segment already open.
//    lookup/syscall_floor/<call>: one system call (getppid, fstat of a kept
//    descriptor, fstatat of a region's name), the floor of a cached map().
//  - churn/<MiB>: create + fill + publish + release of regions of that size
//    in a loop, with each phase's share of the time as counters.
//
// Options (before Google Benchmark's): --lookup_sizes=1,4,16,64,256,1024
// (MiB) --depths=1,2,4,8 --copy_mib=1024 --churn_mib=64 --hash_mib=1,256 --repetitions=5
// --boost=shm|file --only=hash,copy,lookup,churn.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "boost_segment.hpp"
#include "hash_internal.hpp"
#include "kura/shm/directory.hpp"
#include "kura/shm/region.hpp"

namespace kura::bench {
namespace {

namespace bip = boost::interprocess;
constexpr std::size_t kMiB = std::size_t{1} << 20;

void check(const Status& s) {
  if (!s) die(s.to_string());
}

// --- hashing --------------------------------------------------------------------------

void BM_Hash(benchmark::State& state, const detail::Xxh3* build, std::size_t bytes) {
  static std::vector<unsigned char> data;
  if (data.size() < bytes) {
    data.resize(bytes);
    std::mt19937_64 gen(7);
    for (auto& b : data) b = static_cast<unsigned char>(gen());
  }
  std::uint64_t h = 0;
  for (auto _ : state) {
    h ^= build->hash(data.data(), bytes);
    benchmark::DoNotOptimize(h);
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * bytes));
}

// --- copying 1 GiB ----------------------------------------------------------------------

std::size_t copy_bytes = 1024 * kMiB;

const double* source() {
  static std::vector<double> src = [] {
    std::vector<double> v(copy_bytes / sizeof(double));
    fill(v.data(), v.size());
    return v;
  }();
  return src.data();
}

void* fresh(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap");
  return p;
}

void BM_MemcpyWarm(benchmark::State& state) {
  const double* src = source();
  void* dst = fresh(copy_bytes);
  std::memset(dst, 1, copy_bytes);  // every page touched before the clock
  for (auto _ : state) {
    std::memcpy(dst, src, copy_bytes);
    benchmark::ClobberMemory();
  }
  ::munmap(dst, copy_bytes);
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * copy_bytes));
}

void BM_MemcpyFresh(benchmark::State& state) {
  const double* src = source();
  for (auto _ : state) {
    void* dst = fresh(copy_bytes);  // fresh pages from the kernel, as a new region's are
    std::memcpy(dst, src, copy_bytes);
    benchmark::ClobberMemory();
    state.PauseTiming();
    ::munmap(dst, copy_bytes);
    state.ResumeTiming();
  }
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * copy_bytes));
}

void BM_Share(benchmark::State& state, bool hashed) {
  const double* src = source();
  Value v = Value::array_borrowed(Dtype::kF64, src, copy_bytes / sizeof(double));
  double release_ms = 0;
  for (auto _ : state) {
    auto shared = shm::share(v, {.hashed = hashed});
    if (!shared) die(shared.status().to_string());
    state.PauseTiming();
    const std::int64_t t0 = now_ns();
    check(shared->release());
    release_ms = static_cast<double>(now_ns() - t0) / 1e6;
    state.ResumeTiming();
  }
  state.counters["release_ms"] = release_ms;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * copy_bytes));
}

void BM_InPlace(benchmark::State& state) {
  Value v = Value::array_in_place(Dtype::kF64, copy_bytes / sizeof(double));
  double copied = 0;
  for (auto _ : state) {
    auto pending = shm::Pending::create(v, {.hashed = true});
    if (!pending) die(pending.status().to_string());
    fill(pending->array<double>(v).data(), copy_bytes / sizeof(double));
    copied = static_cast<double>(pending->bytes_copied());
    auto shared = std::move(*pending).publish();
    if (!shared) die(shared.status().to_string());
    state.PauseTiming();
    check(shared->release());
    state.ResumeTiming();
  }
  state.counters["copied_bytes"] = copied;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * copy_bytes));
}

// --- path lookup ----------------------------------------------------------------------

constexpr int kMaxDepth = 8;

// list(chain(0), chain(1), ..., chain(7), <f64 array filling the region>),
// where chain(0) = f64 [42] and chain(k) = list(chain(k - 1)): the name
// with path [d, 1, ..., 1] (d indices) reaches a 42 through d lists.
Value chain(int k) {
  return k == 0 ? Value::f64({42.0}) : Value::list({chain(k - 1)});
}

std::string path_of(int depth) {
  std::string p = "[" + std::to_string(depth);
  for (int i = 1; i < depth; ++i) p += ",1";
  return p + "]";
}

std::vector<std::uint64_t> path_vector(int depth) {
  std::vector<std::uint64_t> p{static_cast<std::uint64_t>(depth)};
  for (int i = 1; i < depth; ++i) p.push_back(1);
  return p;
}

// The region of `mib` MiB, made when first asked for; asking for another
// size releases it (so that only one large region exists at a time).
struct LookupRegion {
  std::size_t mib = 0;
  Value value;
  std::optional<shm::Shared> shared;
};

const shm::Shared& lookup_region(std::size_t mib) {
  static LookupRegion r;
  if (r.shared && r.mib == mib) return *r.shared;
  if (r.shared) check(r.shared->release());
  r.shared.reset();
  std::vector<Value> children;
  for (int k = 0; k < kMaxDepth; ++k) children.push_back(chain(k));
  const std::size_t n = (mib * kMiB - 4096) / sizeof(double);  // 4 KiB for the headers and chains
  children.push_back(Value::array_in_place(Dtype::kF64, n));
  r.value = Value::list(std::move(children));
  auto pending = shm::Pending::create(r.value, {.hashed = false});
  if (!pending) die(pending.status().to_string());
  auto shared = std::move(*pending).publish();
  if (!shared) die(shared.status().to_string());
  r.shared.emplace(std::move(*shared));
  r.mib = mib;
  return *r.shared;
}

double read_scalar(const NodeView& node) {
  auto xs = node.array<Dtype::kF64>();
  if (!xs || xs->size() != 1 || (*xs)[0] != 42.0) die("wrong value at the path");
  return (*xs)[0];
}

// map() + read of the name, with map()'s cache on (`cached`: every map but
// the first reuses the mapping) or off (open, mmap, munmap each time, as
// before the cache). Besides the mean, the median of the iterations' own
// times (p50_us; each timed with two clock reads, about 50 ns here).
void BM_KuraMap(benchmark::State& state, std::size_t mib, int depth, bool cached) {
  const shm::Shared& r = lookup_region(mib);
  const std::string name = r.name() + path_of(depth);
  shm::set_map_cache_limits(cached ? shm::MapCacheLimits{} : shm::MapCacheLimits{.mappings = 0});
  std::vector<std::int64_t> samples;
  samples.reserve(1 << 20);
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    auto m = shm::map(name);
    if (!m) die(m.status().to_string());
    benchmark::DoNotOptimize(read_scalar(m->node()));
    if (samples.size() < samples.capacity()) samples.push_back(now_ns() - t0);
  }
  shm::set_map_cache_limits({});
  shm::drop_map_cache();  // the region may be released next
  std::nth_element(samples.begin(), samples.begin() + samples.size() / 2, samples.end());
  state.counters["p50_us"] = samples.empty() ? 0.0 : static_cast<double>(samples[samples.size() / 2]) / 1e3;
  state.counters["region_bytes"] = static_cast<double>(r.size());
}

void BM_KuraWalk(benchmark::State& state, std::size_t mib, int depth) {
  const shm::Shared& r = lookup_region(mib);
  auto m = r.map();
  if (!m) die(m.status().to_string());
  const auto path = path_vector(depth);
  for (auto _ : state) {
    auto node = m->region().at(path);
    if (!node) die(node.status().to_string());
    benchmark::DoNotOptimize(read_scalar(*node));
  }
  state.counters["region_bytes"] = static_cast<double>(r.size());
}

// What a cached map() cannot do without: one system call. The cheapest
// (getppid), fstat() of a descriptor kept open to the region, and the
// fstatat() of the region's name that a cache hit makes.
enum class Floor { kGetppid, kFstat, kFstatat };

void BM_SyscallFloor(benchmark::State& state, std::size_t mib, Floor which) {
  const shm::Shared& r = lookup_region(mib);
  const std::string path = shm::directory() + r.name();
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) die("cannot open " + path);
  struct stat st;
  for (auto _ : state) {
    switch (which) {
      case Floor::kGetppid: benchmark::DoNotOptimize(::syscall(SYS_getppid)); break;
      case Floor::kFstat: benchmark::DoNotOptimize(::fstat(fd, &st)); break;
      case Floor::kFstatat:
        benchmark::DoNotOptimize(::fstatat(AT_FDCWD, path.c_str(), &st, AT_SYMLINK_NOFOLLOW));
        break;
    }
  }
  ::close(fd);
}

BoostSegment segment;  // chosen in main()

struct Raw {
  double v;
  Raw() {}  // NOLINT: deliberately leaves v uninitialised
};

// A Boost segment of `mib` MiB holding a named array that fills it and a
// named double 42, made when first asked for (one at a time).
template <class Segment>
void boost_segment(std::size_t mib) {
  static std::size_t made = 0;
  if (made == mib) return;
  segment.remove();
  Segment seg(bip::create_only, segment.name.c_str(), mib * kMiB + 64 * 1024);
  seg.template construct<Raw>("big")[(mib * kMiB - 64 * 1024) / sizeof(double)]();
  *seg.template construct<double>("scalar")() = 42.0;
  made = mib;
}

template <class Segment>
void BM_BoostOpenFind(benchmark::State& state, std::size_t mib) {
  boost_segment<Segment>(mib);
  for (auto _ : state) {
    Segment seg(bip::open_only, segment.name.c_str());
    auto found = seg.template find<double>("scalar");
    if (found.first == nullptr || *found.first != 42.0) die("boost find");
    benchmark::DoNotOptimize(*found.first);
  }
  state.counters["region_bytes"] = static_cast<double>(mib * kMiB);
}

template <class Segment>
void BM_BoostFind(benchmark::State& state, std::size_t mib) {
  boost_segment<Segment>(mib);
  Segment seg(bip::open_only, segment.name.c_str());
  for (auto _ : state) {
    auto found = seg.template find<double>("scalar");
    if (found.first == nullptr || *found.first != 42.0) die("boost find");
    benchmark::DoNotOptimize(*found.first);
  }
  state.counters["region_bytes"] = static_cast<double>(mib * kMiB);
}

// --- churn ------------------------------------------------------------------------------

void BM_Churn(benchmark::State& state, std::size_t mib) {
  const std::size_t n = mib * kMiB / sizeof(double);
  Value v = Value::array_in_place(Dtype::kF64, n);
  double create = 0, filling = 0, publish = 0, release = 0;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    auto pending = shm::Pending::create(v, {.hashed = false});
    if (!pending) die(pending.status().to_string());
    const std::int64_t t1 = now_ns();
    fill(pending->array<double>(v).data(), n);
    const std::int64_t t2 = now_ns();
    auto shared = std::move(*pending).publish();
    if (!shared) die(shared.status().to_string());
    const std::int64_t t3 = now_ns();
    check(shared->release());
    const std::int64_t t4 = now_ns();
    create += static_cast<double>(t1 - t0);
    filling += static_cast<double>(t2 - t1);
    publish += static_cast<double>(t3 - t2);
    release += static_cast<double>(t4 - t3);
  }
  const double it = static_cast<double>(state.iterations()) * 1e6;
  state.counters["create_ms"] = create / it;
  state.counters["fill_ms"] = filling / it;
  state.counters["publish_ms"] = publish / it;
  state.counters["release_ms"] = release / it;
  state.SetBytesProcessed(static_cast<std::int64_t>(state.iterations() * mib * kMiB));
}

bool wanted(const std::string& only, const char* group) {
  return only == ",all," || only.find("," + std::string(group) + ",") != std::string::npos;
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura;
  using namespace kura::bench;
  Options opt = take_options(
      argc, argv,
      {"lookup_sizes", "depths", "copy_mib", "churn_mib", "hash_mib", "repetitions", "boost", "only"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  const std::string label = describe_region_directory();
  segment.choose(opt, label, "kura-bench-lookup");
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  const std::string only = "," + opt.get("only", "all") + ",";
  copy_bytes = std::strtoull(opt.get("copy_mib", "1024").c_str(), nullptr, 10) * kMiB;
  auto reg = [&](const std::string& name, auto&&... args) {
    auto* b = benchmark::RegisterBenchmark(name.c_str(), std::forward<decltype(args)>(args)...);
    return with_range(b->Repetitions(reps));
  };

  if (wanted(only, "hash")) {
    for (const detail::Xxh3* build : detail::xxh3_builds()) {
      for (std::uint64_t mib : opt.list("hash_mib", "1,256")) {
        const std::size_t bytes = mib * kMiB;
        reg("hash/" + std::string(build->name) + "/" + std::to_string(bytes / kMiB), BM_Hash, build, bytes)
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  if (wanted(only, "copy")) {
    const std::string mib = std::to_string(copy_bytes / kMiB);
    reg("copy/memcpy_warm/" + mib, BM_MemcpyWarm)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    reg("copy/memcpy_fresh/" + mib, BM_MemcpyFresh)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    reg("copy/share_hashed/" + mib, BM_Share, true)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    reg("copy/share_unhashed/" + mib, BM_Share, false)
        ->Iterations(1)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    reg("copy/in_place/" + mib, BM_InPlace)->Iterations(1)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  if (wanted(only, "lookup")) {
    const std::vector<std::uint64_t> sizes = opt.list("lookup_sizes", "1,4,16,64,256,1024");
    for (auto [floor, which] : {std::pair{"getppid", Floor::kGetppid}, std::pair{"fstat", Floor::kFstat},
                                std::pair{"fstatat", Floor::kFstatat}})
      reg(std::string("lookup/syscall_floor/") + floor, BM_SyscallFloor, sizes.front(), which)
          ->Unit(benchmark::kMicrosecond);
    for (std::uint64_t mib : sizes) {
      for (std::uint64_t depth : opt.list("depths", "1,2,4,8")) {
        const std::string suffix = std::to_string(mib) + "/" + std::to_string(depth);
        reg("lookup/kura_map/" + suffix, BM_KuraMap, mib, static_cast<int>(depth), false)
            ->Unit(benchmark::kMicrosecond);
        reg("lookup/kura_map_cached/" + suffix, BM_KuraMap, mib, static_cast<int>(depth), true)
            ->Unit(benchmark::kMicrosecond);
        reg("lookup/kura_walk/" + suffix, BM_KuraWalk, mib, static_cast<int>(depth))
            ->Unit(benchmark::kMicrosecond);
      }
      const std::string suffix = std::to_string(mib);
      if (!segment.file) {
        reg("lookup/boost_open_find/" + suffix, BM_BoostOpenFind<bip::managed_shared_memory>, mib)
            ->Unit(benchmark::kMicrosecond);
        reg("lookup/boost_find/" + suffix, BM_BoostFind<bip::managed_shared_memory>, mib)
            ->Unit(benchmark::kMicrosecond);
      } else {
        reg("lookup/boost_open_find/" + suffix, BM_BoostOpenFind<bip::managed_mapped_file>, mib)
            ->Unit(benchmark::kMicrosecond);
        reg("lookup/boost_find/" + suffix, BM_BoostFind<bip::managed_mapped_file>, mib)
            ->Unit(benchmark::kMicrosecond);
      }
    }
  }
  if (wanted(only, "churn")) {
    const std::uint64_t mib = std::strtoull(opt.get("churn_mib", "64").c_str(), nullptr, 10);
    reg("churn/" + std::to_string(mib), BM_Churn, mib)
        ->Iterations(20)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  std::atexit([] { segment.remove(); });
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
