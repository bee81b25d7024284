#include "bench_util.hpp"

#include <unistd.h>

#include <algorithm>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <fstream>
#include <sstream>

#include "kura/core/hash.hpp"
#include "kura/shm/directory.hpp"

namespace kura::bench {

void die(const std::string& what) {
  std::fprintf(stderr, "%s: %s\n", program_invocation_short_name, what.c_str());
  std::exit(1);
}

std::int64_t now_ns() noexcept {
  timespec t;
  ::clock_gettime(CLOCK_MONOTONIC, &t);
  return static_cast<std::int64_t>(t.tv_sec) * 1000000000 + t.tv_nsec;
}

void fill(double* xs, std::size_t n) noexcept {
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i & 1023);
}

double expected_sum(std::size_t n) noexcept {
  const std::uint64_t full = n / 1024, rest = n % 1024;
  return static_cast<double>(full * (1023 * 1024 / 2) + (rest == 0 ? 0 : rest * (rest - 1) / 2));
}

double sum(const double* xs, std::size_t n) noexcept {
  double a[8] = {};
  std::size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (int k = 0; k < 8; ++k) a[k] += xs[i + k];
  for (; i < n; ++i) a[0] += xs[i];
  return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}

std::int64_t pss_bytes(pid_t pid) noexcept {
  char path[64];
  if (pid == 0) {
    std::snprintf(path, sizeof path, "/proc/self/smaps_rollup");
  } else {
    std::snprintf(path, sizeof path, "/proc/%d/smaps_rollup", static_cast<int>(pid));
  }
  FILE* f = std::fopen(path, "r");
  if (f == nullptr) return -1;
  char line[256];
  std::int64_t kb = -1;
  while (std::fgets(line, sizeof line, f) != nullptr) {
    if (std::strncmp(line, "Pss:", 4) == 0) {
      kb = std::strtoll(line + 4, nullptr, 10);
      break;
    }
  }
  std::fclose(f);
  return kb < 0 ? -1 : kb * 1024;
}

double latency_counters(benchmark::State& state, std::vector<double>& samples) {
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] = samples[samples.size() / 2];
  state.counters["p99_us"] = samples[samples.size() * 99 / 100];
  return samples[samples.size() / 2];
}

benchmark::internal::Benchmark* with_range(benchmark::internal::Benchmark* b) {
  return b
      ->ComputeStatistics("min",
                          [](const std::vector<double>& v) { return *std::min_element(v.begin(), v.end()); })
      ->ComputeStatistics("max",
                          [](const std::vector<double>& v) { return *std::max_element(v.begin(), v.end()); });
}

std::string describe_region_directory() {
  auto info = shm::directory_info();
  if (!info) die("region directory: " + info.status().to_string());
  benchmark::AddCustomContext("region_dir", info->path);
  benchmark::AddCustomContext("region_fs", info->fs_type);
  benchmark::AddCustomContext("region_huge", std::string(shm::huge_pages_name(info->huge)));
  benchmark::AddCustomContext("region_page_size", std::to_string(info->page_size));
  benchmark::AddCustomContext("hash_build", std::string(hash_implementation()));
  const std::string label = info->huge == shm::HugePages::kNever ? "4k" : "huge";
  benchmark::AddCustomContext("dir_label", label);
  return label;
}

std::string Options::get(const std::string& name, const std::string& fallback) const {
  for (std::size_t i = 0; i < names.size(); ++i)
    if (names[i] == name) return values[i];
  return fallback;
}

std::vector<std::uint64_t> Options::list(const std::string& name, const std::string& fallback) const {
  std::vector<std::uint64_t> out;
  std::istringstream in(get(name, fallback));
  std::string item;
  while (std::getline(in, item, ','))
    if (!item.empty()) out.push_back(std::strtoull(item.c_str(), nullptr, 10));
  return out;
}

Options take_options(int& argc, char** argv, const std::vector<std::string>& names) {
  Options o;
  int out = 1;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    bool taken = false;
    for (const std::string& n : names) {
      const std::string prefix = "--" + n + "=";
      if (a.rfind(prefix, 0) == 0) {
        o.names.push_back(n);
        o.values.push_back(a.substr(prefix.size()));
        taken = true;
      }
    }
    if (!taken) argv[out++] = argv[i];
  }
  argc = out;
  argv[argc] = nullptr;
  return o;
}

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) die("cannot read /proc/self/exe");
  return std::string(buf, static_cast<std::size_t>(n));
}

std::uint64_t mem_available() noexcept {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kb;
  std::string unit;
  while (in >> key >> kb >> unit)
    if (key == "MemAvailable:") return kb * 1024;
  return 0;
}

}  // namespace kura::bench
