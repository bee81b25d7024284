// Benchmarks of the dispatcher (issue 7), each beside what it is measured
// against, in the same run:
//
//  - BM_RawPingPong: a 64-byte message to another process over a Unix
//    socketpair and back (the floor for any local round trip).
//    BM_TaskRoundTrip: an empty task, client -> dispatcher -> worker -> back
//    (two hops each way). Both report the median and p99 in microseconds.
//  - BM_RawThroughput: 64-byte messages pipelined to an echo process, 10,000
//    in flight at most. BM_TaskThroughput: 10,000 echo tasks through map()
//    over 2 workers. Both report items/s.
//  - BM_Handoff256MiB/by_name and /inline: a worker sums a 256 MiB f64
//    array, passed as a kura name, or copied inline through the sockets
//    (frame limit raised for it).
//
// A summary of the ratios follows the benchmark output.
#include <benchmark/benchmark.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <thread>
#include <vector>

#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/shm/region.hpp"

namespace {

using Clock = std::chrono::steady_clock;
constexpr int kSamples = 2000;  // round trips per benchmark iteration
constexpr int kStreamed = 10000;

void die(const std::string& what) {
  std::fprintf(stderr, "ipc_bench: %s\n", what.c_str());
  std::exit(1);
}

double micros(Clock::duration d) {
  return std::chrono::duration<double, std::micro>(d).count();
}

// Median and p99 of `samples` (microseconds) as counters.
void report_latency(benchmark::State& state, std::vector<double>& samples) {
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] = samples[samples.size() / 2];
  state.counters["p99_us"] = samples[samples.size() * 99 / 100];
}

// --- raw Unix socket ------------------------------------------------------------

// A child process that echoes every byte it reads on its end of a
// socketpair until the other end closes.
struct Echo {
  int fd = -1;
  pid_t pid = -1;
  Echo() {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    pid = ::fork();
    if (pid == 0) {
      ::close(sv[0]);
      char buf[65536];
      for (;;) {
        ssize_t n = ::read(sv[1], buf, sizeof buf);
        if (n <= 0) ::_exit(0);
        for (ssize_t off = 0; off < n;) {
          ssize_t w = ::write(sv[1], buf + off, static_cast<std::size_t>(n - off));
          if (w <= 0) ::_exit(0);
          off += w;
        }
      }
    }
    ::close(sv[1]);
    fd = sv[0];
  }
  ~Echo() {
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
  }
  void read_exactly(char* p, std::size_t n) const {
    while (n > 0) {
      ssize_t r = ::read(fd, p, n);
      if (r <= 0) die("echo read");
      p += r;
      n -= static_cast<std::size_t>(r);
    }
  }
};

void BM_RawPingPong(benchmark::State& state) {
  Echo echo;
  char msg[64] = {}, back[64];
  std::vector<double> samples;
  for (auto _ : state) {
    samples.clear();
    for (int i = 0; i < kSamples; ++i) {
      const auto t0 = Clock::now();
      if (::write(echo.fd, msg, sizeof msg) != sizeof msg) die("write");
      echo.read_exactly(back, sizeof back);
      samples.push_back(micros(Clock::now() - t0));
    }
  }
  report_latency(state, samples);
}

void BM_RawThroughput(benchmark::State& state) {
  Echo echo;
  std::vector<char> batch(64 * 256);
  std::vector<char> back(64 * kStreamed);
  for (auto _ : state) {
    // Pipelined: one thread writes 256 messages at a time while this one
    // reads the echoes.
    std::thread writer([&] {
      for (int sent = 0; sent < kStreamed; sent += 256) {
        for (std::size_t off = 0; off < batch.size();) {
          ssize_t w = ::write(echo.fd, batch.data() + off, batch.size() - off);
          if (w <= 0) die("write");
          off += static_cast<std::size_t>(w);
        }
      }
    });
    echo.read_exactly(back.data(), back.size());
    writer.join();
  }
  state.SetItemsProcessed(state.iterations() * kStreamed);
}

// --- the dispatcher ---------------------------------------------------------------

struct Pool {
  std::unique_ptr<kura::ipc::Dispatcher> dispatcher;
  std::unique_ptr<kura::ipc::Client> client;
};

// An embedded dispatcher with `workers` kura workers, and a client.
Pool& pool(unsigned workers, std::uint32_t frame_limit = kura::ipc::kDefaultFrameLimit) {
  static std::map<std::pair<unsigned, std::uint32_t>, Pool> pools;
  Pool& p = pools[{workers, frame_limit}];
  if (p.client) return p;
  char dir[] = "/tmp/kura-bench.XXXXXX";
  if (::mkdtemp(dir) == nullptr) die("mkdtemp");
  kura::ipc::DispatcherOptions o;
  o.socket_path = std::string(dir) + "/d.sock";
  o.workers = workers;
  o.frame_limit = frame_limit;
  o.worker_command = {KURA_TOOL_PATH, "worker", "--connect", "{socket}"};
  o.log = [](const std::string&) {};
  auto d = kura::ipc::Dispatcher::start(std::move(o));
  if (!d) die(d.status().to_string());
  p.dispatcher = std::move(d).value();
  auto c = kura::ipc::Client::connect(p.dispatcher->socket_path());
  if (!c) die(c.status().to_string());
  p.client = std::move(c).value();
  for (;;) {
    auto s = p.client->status();
    if (!s) die(s.status().to_string());
    if (s->workers.size() == workers) break;
  }
  return p;
}

void BM_TaskRoundTrip(benchmark::State& state) {
  auto& client = *pool(1).client;
  const kura::ipc::Call echo{"echo", {}};
  std::vector<double> samples;
  for (auto _ : state) {
    samples.clear();
    for (int i = 0; i < kSamples; ++i) {
      const auto t0 = Clock::now();
      auto id = client.submit(echo);
      if (!id) die(id.status().to_string());
      if (!client.wait(*id).ok()) die("echo failed");
      samples.push_back(micros(Clock::now() - t0));
    }
  }
  report_latency(state, samples);
}

void BM_TaskThroughput(benchmark::State& state) {
  auto& client = *pool(2).client;
  std::vector<std::vector<kura::ipc::Arg>> inputs(kStreamed);
  for (auto _ : state) {
    auto m = client.map("echo", inputs);
    if (!m || m->failed) die("map failed");
  }
  state.SetItemsProcessed(state.iterations() * kStreamed);
}

// --- hand-off of 256 MiB ------------------------------------------------------------

constexpr std::size_t k256MiB = std::size_t{256} << 20;

const kura::Value& big_array() {
  static kura::Value v = [] {
    std::vector<double> xs(k256MiB / sizeof(double));
    for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i % 1000);
    return kura::Value::array<kura::Dtype::kF64>(std::span<const double>(xs));
  }();
  return v;
}

void BM_Handoff256MiB_ByName(benchmark::State& state) {
  auto& client = *pool(1).client;
  auto shared = kura::shm::share(big_array(), {.hashed = false});
  if (!shared) die(shared.status().to_string());
  const kura::ipc::Call sum{"sum", {kura::ipc::Arg::ref(shared->name())}};
  for (auto _ : state) {
    auto r = client.wait(client.submit(sum).value());
    if (!r.ok()) die(r.describe());
  }
  state.counters["bytes_through_sockets"] =
      static_cast<double>(client.bytes_sent() + client.bytes_received()) /
      static_cast<double>(state.iterations());
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(k256MiB));
}

void BM_Handoff256MiB_Inline(benchmark::State& state) {
  auto& client = *pool(1, 300u << 20).client;
  const kura::ipc::Call sum{"sum", {kura::ipc::Arg::copy(big_array())}};
  for (auto _ : state) {
    auto r = client.wait(client.submit(sum).value());
    if (!r.ok()) die(r.describe());
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(k256MiB));
}

}  // namespace

BENCHMARK(BM_RawPingPong)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_TaskRoundTrip)->Unit(benchmark::kMillisecond)->Iterations(3)->UseRealTime();
BENCHMARK(BM_RawThroughput)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
BENCHMARK(BM_TaskThroughput)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
BENCHMARK(BM_Handoff256MiB_ByName)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();
BENCHMARK(BM_Handoff256MiB_Inline)->Unit(benchmark::kMillisecond)->Iterations(5)->UseRealTime();

namespace {

// Keeps each benchmark's counters so that the ratios can be printed after
// the usual output.
class Recorder : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const Run& r : runs) {
      auto& c = counters[r.benchmark_name()];
      for (const auto& [k, v] : r.counters) c[k] = v.value;
      c["ms_per_iteration"] = r.GetAdjustedRealTime();
    }
    ConsoleReporter::ReportRuns(runs);
  }
  std::map<std::string, std::map<std::string, double>> counters;
};

double get(Recorder& r, const std::string& bench, const std::string& key) {
  auto b = r.counters.find(bench);
  if (b == r.counters.end()) return 0;
  auto k = b->second.find(key);
  return k == b->second.end() ? 0 : k->second;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  Recorder rec;
  benchmark::RunSpecifiedBenchmarks(&rec);
  const double raw = get(rec, "BM_RawPingPong/iterations:3/real_time", "p50_us");
  const double task = get(rec, "BM_TaskRoundTrip/iterations:3/real_time", "p50_us");
  const double raw_tp = get(rec, "BM_RawThroughput/iterations:5/real_time", "items_per_second");
  const double task_tp = get(rec, "BM_TaskThroughput/iterations:5/real_time", "items_per_second");
  const double by_name = get(rec, "BM_Handoff256MiB_ByName/iterations:5/real_time", "ms_per_iteration");
  const double copied = get(rec, "BM_Handoff256MiB_Inline/iterations:5/real_time", "ms_per_iteration");
  std::printf("\nratios (this run):\n");
  if (raw > 0 && task > 0)
    std::printf("  round trip, median: task %.1f us / raw socket %.1f us = %.2fx\n", task, raw, task / raw);
  if (raw_tp > 0 && task_tp > 0)
    std::printf(
        "  throughput: %.0f tasks/s over 2 workers; the raw socket moves %.0f pipelined 64-byte echoes/s "
        "(the transport's ceiling)\n",
        task_tp, raw_tp);
  if (by_name > 0 && copied > 0)
    std::printf("  256 MiB hand-off: by name %.1f ms, inline %.1f ms = %.1fx faster by name\n", by_name,
                copied, copied / by_name);
  benchmark::Shutdown();
  return 0;
}
