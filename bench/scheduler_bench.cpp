// The dispatcher's scheduler (ipc/scheduler.hpp) alone, in one process, no
// I/O: the costs that froze the dispatcher before issue 15 (a client that
// disconnected with 320,000 queued tasks: 50 s of O(n) removals; 160,000
// per-task timers firing together: over 10 s).
//
// Benchmarks (real time, manual: only the part named is timed):
//   scheduler/remove_1m/in_order   1,000,000 tasks queued over 3 functions,
//   scheduler/remove_1m/shuffled   then all removed, in submit order or in a
//                                shuffled one (the worst case for caches);
//                                the time is the removal of all of them;
//                                counters: submit_ms (queueing them),
//                                remove_ns (per task)
//   scheduler/deadlines_160k     160,000 deadlines set over 30 s, then all
//                                popped in slices of 4096; the time is both;
//                                counters: set_ms, pop_ms, slice_max_ms (the
//                                longest slice: what one loop turn would stall)
//   scheduler/cycle_10k_idle     10,000 idle workers; 100,000 times: submit a
//                                task, pump (it starts), the worker finishes
//                                and is free, pump (nothing moves); the time
//                                is all cycles; counter: cycle_ns (per cycle)
//
// Options (before Google Benchmark's): --repetitions=5.
#include <algorithm>
#include <chrono>
#include <cstdlib>
#include <numeric>
#include <random>
#include <vector>

#include "bench_util.hpp"
#include "scheduler.hpp"

namespace kura::bench {
namespace {

using ipc::detail::Deadlines;
using ipc::detail::FnId;
using ipc::detail::Scheduler;
using ipc::detail::TaskKey;
using ipc::detail::WorkerKey;
using Clock = std::chrono::steady_clock;

double seconds_since(Clock::time_point t0) {
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void BM_RemoveMillion(benchmark::State& state, bool shuffled) {
  constexpr TaskKey kTasks = 1000000;
  std::vector<TaskKey> order(kTasks);
  std::iota(order.begin(), order.end(), TaskKey{1});
  if (shuffled) std::shuffle(order.begin(), order.end(), std::mt19937_64(42));
  for (auto _ : state) {
    Scheduler s(0);
    const FnId fns[] = {s.intern("a"), s.intern("b"), s.intern("c")};
    auto t0 = Clock::now();
    for (TaskKey t = 1; t <= kTasks; ++t)
      if (s.submit(t, fns[t % 3], 256, false) != Scheduler::Admit::kQueued) die("a task was not queued");
    const double submit_s = seconds_since(t0);
    t0 = Clock::now();
    for (TaskKey t : order)
      if (s.remove(t) != Scheduler::Where::kQueued) die("a task was not found queued");
    const double remove_s = seconds_since(t0);
    if (s.queued_count() != 0 || s.queued_bytes() != 0) die("tasks left after removing all");
    state.SetIterationTime(remove_s);
    state.counters["submit_ms"] = submit_s * 1e3;
    state.counters["remove_ns"] = remove_s * 1e9 / kTasks;
  }
}

void BM_Deadlines(benchmark::State& state) {
  constexpr std::uint64_t kKeys = 160000;
  constexpr std::size_t kSlice = 4096;
  std::mt19937_64 rng(7);
  std::vector<std::uint64_t> at(kKeys);
  for (auto& a : at) a = rng() % 30000;
  for (auto _ : state) {
    Deadlines d;
    auto t0 = Clock::now();
    for (std::uint64_t k = 0; k < kKeys; ++k) d.set(k + 1, at[k]);
    const double set_s = seconds_since(t0);
    double slice_max_s = 0;
    std::uint64_t popped = 0;
    t0 = Clock::now();
    while (d.size() > 0) {
      const auto s0 = Clock::now();
      popped += d.pop_due(30000, kSlice).size();
      slice_max_s = std::max(slice_max_s, seconds_since(s0));
    }
    const double pop_s = seconds_since(t0);
    if (popped != kKeys) die("deadlines lost");
    state.SetIterationTime(set_s + pop_s);
    state.counters["set_ms"] = set_s * 1e3;
    state.counters["pop_ms"] = pop_s * 1e3;
    state.counters["slice_max_ms"] = slice_max_s * 1e3;
  }
}

void BM_CycleManyIdle(benchmark::State& state) {
  constexpr WorkerKey kWorkers = 10000;
  constexpr TaskKey kCycles = 100000;
  for (auto _ : state) {
    Scheduler s(0);
    const FnId fn = s.intern("f");
    for (WorkerKey w = 1; w <= kWorkers; ++w) {
      s.add_worker(w, {fn});
      s.worker_free(w);
    }
    std::vector<TaskKey> admitted;
    std::vector<std::pair<TaskKey, WorkerKey>> started;
    const auto t0 = Clock::now();
    for (TaskKey t = 1; t <= kCycles; ++t) {
      (void)s.submit(t, fn, 64, false);
      started.clear();
      s.pump(admitted, started);
      if (started.size() != 1) die("the task did not start");
      s.task_finished(t);
      s.worker_free(started[0].second);
      started.clear();
      s.pump(admitted, started);
      if (!started.empty()) die("something started without a task");
    }
    const double cycles_s = seconds_since(t0);
    state.SetIterationTime(cycles_s);
    state.counters["cycle_ns"] = cycles_s * 1e9 / kCycles;
  }
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura::bench;
  Options opt = take_options(argc, argv, {"repetitions"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  for (bool shuffled : {false, true})
    with_range(benchmark::RegisterBenchmark(
                   shuffled ? "scheduler/remove_1m/shuffled" : "scheduler/remove_1m/in_order",
                   BM_RemoveMillion, shuffled))
        ->Iterations(1)
        ->Repetitions(reps)
        ->UseManualTime()
        ->Unit(benchmark::kMillisecond);
  with_range(benchmark::RegisterBenchmark("scheduler/deadlines_160k", BM_Deadlines))
      ->Iterations(1)
      ->Repetitions(reps)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  with_range(benchmark::RegisterBenchmark("scheduler/cycle_10k_idle", BM_CycleManyIdle))
      ->Iterations(1)
      ->Repetitions(reps)
      ->UseManualTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
