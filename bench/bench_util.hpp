// What the benchmark programs share: clocks, the test data and its sum,
// proportional set sizes, round trips timed and their percentiles,
// statistics for repetitions, and the context every
// result file records (region directory, its page size, hash build).
#pragma once

#include <benchmark/benchmark.h>
#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

namespace kura::bench {

// Prints "<program>: <what>" to stderr and exits 1. Benchmarks stop at the
// first thing that is wrong rather than report a figure for it.
[[noreturn]] void die(const std::string& what);

// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the
// machine, so producers and consumers can compare their timestamps.
std::int64_t now_ns() noexcept;

// The data handed over: x[i] = i % 1024 as a double. Every partial sum is
// an integer below 2^53, so any order of summing gives the exact result.
void fill(double* xs, std::size_t n) noexcept;
double expected_sum(std::size_t n) noexcept;
// Sums with eight independent accumulators, so that the sum runs at memory
// speed instead of waiting on each addition.
double sum(const double* xs, std::size_t n) noexcept;

// The proportional set size of process `pid` (0: this one) in bytes, from
// /proc/PID/smaps_rollup; -1 when it cannot be read. Shared pages count
// divided by the number of processes mapping them.
std::int64_t pss_bytes(pid_t pid = 0) noexcept;

// Times `round_trip()` `count` times in each iteration of `state` and
// returns the last iteration's samples, in microseconds, in the order taken.
template <class F>
std::vector<double> time_round_trips(benchmark::State& state, int count, F&& round_trip) {
  std::vector<double> samples;
  samples.reserve(static_cast<std::size_t>(count));
  for (auto _ : state) {
    samples.clear();
    for (int i = 0; i < count; ++i) {
      const std::int64_t t0 = now_ns();
      round_trip();
      samples.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    }
  }
  return samples;
}

// Sorts `samples` (microseconds; not empty) and sets the counters p50_us and
// p99_us of `state` from them. Returns the median.
double latency_counters(benchmark::State& state, std::vector<double>& samples);

// Adds min and max (over repetitions) to a benchmark's statistics, beside
// Google Benchmark's mean, median and stddev.
benchmark::internal::Benchmark* with_range(benchmark::internal::Benchmark* b);

// Records, in the JSON context of this run: the region directory, its file
// system and huge-page setting, the page size regions get there, and the
// XXH3 build in use. Returns "huge" when regions get 2 MiB pages, else "4k".
std::string describe_region_directory();

// Strips "--name=value" options this program understands from argv (before
// benchmark::Initialize sees them) and returns their values by name.
struct Options {
  std::vector<std::string> names;
  std::vector<std::string> values;
  std::string get(const std::string& name, const std::string& fallback) const;
  std::vector<std::uint64_t> list(const std::string& name, const std::string& fallback) const;
};
Options take_options(int& argc, char** argv, const std::vector<std::string>& names);

// This executable's path (/proc/self/exe).
std::string self_exe();

// MemAvailable from /proc/meminfo, in bytes (0 when unknown).
std::uint64_t mem_available() noexcept;

}  // namespace kura::bench
