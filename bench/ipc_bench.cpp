// Small tasks through the dispatcher against the floor of any local round
// trip (issue 11, suite 2), in the same run:
//
//  - rtt/raw_socket: a 64-byte message to another process over a Unix
//    socketpair and back, with blocking read(2)/write(2).
//  - rtt/raw_relay: the same through a relay process to an echo process
//    (client -> relay -> echo -> relay -> client), blocking calls in all
//    three: the floor of any design with a broker between client and worker.
//  - rtt/libuv_pipe: the same with a libuv loop on both sides (uv_pipe_t,
//    uv_read_start, uv_write), which is what the dispatcher is built on.
//  - rtt/dispatcher: an empty task (the built-in echo), client ->
//    dispatcher -> worker -> dispatcher -> client: two hops each way.
//    Each reports p50_us and p99_us over `--samples` round trips, and each runs
//    twice: free to use both cores (/any) and with every process and thread
//    of it pinned to CPU 0 (/pinned), which takes the cost of waking a
//    process on another core out of the figure.
//  - throughput/raw_socket: 64-byte messages pipelined to an echo process;
//    throughput/dispatcher: 10,000 echo tasks through Client::map over 2
//    workers; throughput/dispatcher/window: the same with a worker window
//    of 16, or of --window=N (2 to 1024; DispatcherOptions::worker_window:
//    tasks sent to wait on a worker behind the one it runs). All report
//    items_per_second.
//  - rtt/dispatcher/traced: rtt/dispatcher/any with tracing on (a trace
//    file, and a traceparent on every task).
//
// --latency_out=FILE writes every round-trip sample (microseconds) as JSON,
// {"rtt/raw_socket/any": [...], ...}, for the latency distribution plot.
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>
#include <uv.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <string>
#include <thread>
#include <tuple>
#include <vector>

#include "bench_util.hpp"
#include "dispatcher_pool.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/region.hpp"

namespace kura::bench {
namespace {

int samples_per_run = 5000;
constexpr int kStreamed = 10000;
constexpr std::size_t kMessage = 64;
// DispatcherOptions::worker_window of throughput/dispatcher/window (--window).
unsigned throughput_window = 16;

std::map<std::string, std::vector<double>> all_samples;

// Median and p99 of `samples` (microseconds) as counters, and the samples
// kept for --latency_out.
void report_latency(benchmark::State& state, const std::string& name, std::vector<double>& samples) {
  auto& keep = all_samples[name];
  keep.insert(keep.end(), samples.begin(), samples.end());
  latency_counters(state, samples);
}

double micros_since(std::int64_t t0) {
  return static_cast<double>(now_ns() - t0) / 1e3;
}

// Pins the calling thread (and what it starts afterwards) to CPU 0 for the
// life of the object when `pin`, then restores the previous mask.
class Pin {
 public:
  explicit Pin(bool pin) : pinned_(pin) {
    if (!pin) return;
    if (::sched_getaffinity(0, sizeof old_, &old_) != 0) die("sched_getaffinity");
    cpu_set_t one;
    CPU_ZERO(&one);
    CPU_SET(0, &one);
    if (::sched_setaffinity(0, sizeof one, &one) != 0) die("sched_setaffinity");
  }
  ~Pin() {
    if (pinned_) ::sched_setaffinity(0, sizeof old_, &old_);
  }

 private:
  bool pinned_;
  cpu_set_t old_{};
};

// --- raw Unix socket ---------------------------------------------------------------

// Calls `step(at, left)`, a read(2) or write(2) of at most `left` bytes at
// offset `at`, until `n` bytes moved; false at the end of the stream or on
// an error.
template <class Step>
bool exactly(std::size_t n, Step step) {
  for (std::size_t done = 0; done < n;) {
    const ssize_t k = step(done, n - done);
    if (k <= 0) return false;
    done += static_cast<std::size_t>(k);
  }
  return true;
}
bool read_all(int fd, char* p, std::size_t n) {
  return exactly(n, [&](std::size_t at, std::size_t left) { return ::read(fd, p + at, left); });
}
bool write_all(int fd, const char* p, std::size_t n) {
  return exactly(n, [&](std::size_t at, std::size_t left) { return ::write(fd, p + at, left); });
}

// A child process that echoes every byte it reads on its end of a
// socketpair (with blocking calls, or with a libuv loop) until the other
// end closes.
struct Echo {
  int fd = -1;
  pid_t pid = -1;
  explicit Echo(bool with_libuv) {
    int sv[2];
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
    pid = ::fork();
    if (pid < 0) die("fork");
    if (pid == 0) {
      ::close(sv[0]);
      if (with_libuv) uv_echo(sv[1]);
      echo_loop(sv[1]);
    }
    ::close(sv[1]);
    fd = sv[0];
  }
  // Writes back every byte read on `fd` (blocking calls) until it closes.
  [[noreturn]] static void echo_loop(int fd) {
    char buf[65536];
    for (;;) {
      ssize_t n = ::read(fd, buf, sizeof buf);
      if (n <= 0) ::_exit(0);
      if (!write_all(fd, buf, static_cast<std::size_t>(n))) ::_exit(0);
    }
  }
  ~Echo() {
    ::close(fd);
    ::waitpid(pid, nullptr, 0);
  }
  void read_exactly(char* p, std::size_t n) const {
    if (!read_all(fd, p, n)) die("echo read");
  }

  // The libuv echo: reads whatever arrives and writes it back.
  [[noreturn]] static void uv_echo(int fd) {
    uv_loop_t loop;
    uv_loop_init(&loop);
    uv_pipe_t pipe;
    uv_pipe_init(&loop, &pipe, 0);
    if (uv_pipe_open(&pipe, fd) != 0) ::_exit(1);
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&pipe),
        [](uv_handle_t*, std::size_t, uv_buf_t* b) {
          static char storage[65536];
          *b = uv_buf_init(storage, sizeof storage);
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t* b) {
          if (n < 0) ::_exit(0);
          if (n == 0) return;
          // The buffer is reused by the next read: copy what is written.
          auto* req = new uv_write_t;
          auto* copy = new char[static_cast<std::size_t>(n)];
          std::memcpy(copy, b->base, static_cast<std::size_t>(n));
          req->data = copy;
          uv_buf_t out = uv_buf_init(copy, static_cast<unsigned>(n));
          uv_write(req, s, &out, 1, [](uv_write_t* r, int) {
            delete[] static_cast<char*>(r->data);
            delete r;
          });
        });
    uv_run(&loop, UV_RUN_DEFAULT);
    ::_exit(0);
  }
};

// Times `samples_per_run` round trips of a kMessage-byte message over `fd`
// (blocking calls) and reports them as `name`.
void fd_round_trips(benchmark::State& state, int fd, const std::string& name) {
  char msg[kMessage] = {}, back[kMessage];
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    if (!write_all(fd, msg, sizeof msg) || !read_all(fd, back, sizeof back))
      die(name + ": the peer went away");
  });
  report_latency(state, name, samples);
}

void BM_RawRoundTrip(benchmark::State& state, bool pinned) {
  Pin pin(pinned);
  Echo echo(false);
  fd_round_trips(state, echo.fd, pinned ? "rtt/raw_socket/pinned" : "rtt/raw_socket/any");
}

// The floor of any broker: a client, a relay process and an echo process,
// each with blocking calls. The relay reads a message from the client,
// writes it to the echo process, reads the echo and writes it back: four
// socket hops and four process wake-ups per round trip, as client ->
// dispatcher -> worker -> dispatcher -> client has.
struct Relay {
  int fd = -1;
  pid_t relay = -1, echo = -1;
  Relay() {
    int up[2], down[2];  // client <-> relay, relay <-> echo
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, up) != 0 ||
        ::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, down) != 0)
      die("socketpair");
    echo = ::fork();
    if (echo < 0) die("fork");
    if (echo == 0) {
      ::close(up[0]);
      ::close(up[1]);
      ::close(down[0]);
      Echo::echo_loop(down[1]);
    }
    relay = ::fork();
    if (relay < 0) die("fork");
    if (relay == 0) {
      ::close(up[0]);
      ::close(down[1]);
      char buf[kMessage];
      while (read_all(up[1], buf, sizeof buf) && write_all(down[0], buf, sizeof buf) &&
             read_all(down[0], buf, sizeof buf) && write_all(up[1], buf, sizeof buf)) {
      }
      ::_exit(0);
    }
    ::close(up[1]);
    ::close(down[0]);
    ::close(down[1]);
    fd = up[0];
  }
  ~Relay() {
    ::close(fd);  // the relay ends, closing its side to the echo process, which ends
    ::waitpid(relay, nullptr, 0);
    ::waitpid(echo, nullptr, 0);
  }
};

void BM_RelayRoundTrip(benchmark::State& state, bool pinned) {
  Pin pin(pinned);
  Relay relay;
  fd_round_trips(state, relay.fd, pinned ? "rtt/raw_relay/pinned" : "rtt/raw_relay/any");
}

// The client side of the libuv ping-pong: a loop that writes 64 bytes,
// waits for them to come back, records the time, and writes again.
struct UvPing {
  uv_loop_t loop;
  uv_pipe_t pipe;
  char msg[kMessage] = {};
  char in[kMessage];
  std::size_t got = 0;
  int left = 0;
  std::int64_t t0 = 0;
  std::vector<double>* samples = nullptr;

  void send() {
    t0 = now_ns();
    uv_buf_t b = uv_buf_init(msg, sizeof msg);
    // A request lives until its callback: one per write.
    auto* req = new uv_write_t;
    if (uv_write(req, reinterpret_cast<uv_stream_t*>(&pipe), &b, 1, [](uv_write_t* r, int) { delete r; }) !=
        0)
      die("uv_write");
  }
};

void BM_UvRoundTrip(benchmark::State& state, bool pinned) {
  Pin pin(pinned);
  Echo echo(true);
  UvPing ping;
  uv_loop_init(&ping.loop);
  uv_pipe_init(&ping.loop, &ping.pipe, 0);
  const int fd = ::dup(echo.fd);
  if (uv_pipe_open(&ping.pipe, fd) != 0) die("uv_pipe_open");
  ping.pipe.data = &ping;
  std::vector<double> samples;
  for (auto _ : state) {
    samples.clear();
    ping.samples = &samples;
    ping.left = samples_per_run;
    ping.got = 0;
    uv_read_start(
        reinterpret_cast<uv_stream_t*>(&ping.pipe),
        [](uv_handle_t* h, std::size_t, uv_buf_t* b) {
          auto* p = static_cast<UvPing*>(h->data);
          *b = uv_buf_init(p->in + p->got, static_cast<unsigned>(kMessage - p->got));
        },
        [](uv_stream_t* s, ssize_t n, const uv_buf_t*) {
          auto* p = static_cast<UvPing*>(s->data);
          if (n < 0) die("libuv read");
          p->got += static_cast<std::size_t>(n);
          if (p->got < kMessage) return;
          p->got = 0;
          p->samples->push_back(micros_since(p->t0));
          if (--p->left == 0) {
            uv_read_stop(s);
            return;
          }
          p->send();
        });
    ping.send();
    uv_run(&ping.loop, UV_RUN_DEFAULT);
  }
  uv_close(reinterpret_cast<uv_handle_t*>(&ping.pipe), nullptr);
  uv_run(&ping.loop, UV_RUN_DEFAULT);
  uv_loop_close(&ping.loop);
  report_latency(state, pinned ? "rtt/libuv_pipe/pinned" : "rtt/libuv_pipe/any", samples);
}

void BM_RawThroughput(benchmark::State& state) {
  Echo echo(false);
  std::vector<char> batch(kMessage * 256);
  std::vector<char> back(kMessage * kStreamed);
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

std::map<std::tuple<unsigned, bool, bool, unsigned>, std::unique_ptr<DispatcherPool>>& pools() {
  static std::map<std::tuple<unsigned, bool, bool, unsigned>, std::unique_ptr<DispatcherPool>> p;
  return p;
}

// An embedded dispatcher with `workers` kura workers, and a client; a pinned
// pool is made while the calling thread is pinned, so its dispatcher thread
// and worker processes inherit the mask. A traced pool writes the spans of
// traced tasks (to /dev/null: their cost is making and writing them).
// `window`: DispatcherOptions::worker_window.
DispatcherPool& pool(unsigned workers, bool pinned, bool traced = false, unsigned window = 1) {
  auto& p = pools()[{workers, pinned, traced, window}];
  if (!p) {
    ipc::DispatcherOptions o;
    o.workers = workers;
    o.worker_window = window;
    o.worker_command = ipc::Worker::command(KURA_TOOL_PATH);
    if (traced) o.trace_path = "/dev/null";
    p = std::make_unique<DispatcherPool>(std::move(o));
  }
  return *p;
}

void stop_pools() {
  pools().clear();
}

void BM_TaskRoundTrip(benchmark::State& state, bool pinned) {
  Pin pin(pinned);
  auto& client = pool(1, pinned).client();
  const ipc::Call echo{"echo", {}};
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    auto id = client.submit(echo);
    if (!id) die(id.status().to_string());
    if (!client.wait(*id).ok()) die("echo failed");
  });
  report_latency(state, pinned ? "rtt/dispatcher/pinned" : "rtt/dispatcher/any", samples);
}

// The same round trip with tracing on: a dispatcher with a trace file and
// tasks that carry a traceparent (against rtt/dispatcher/any: what tracing
// costs when it is used; without a traceparent nothing is measured).
void BM_TracedRoundTrip(benchmark::State& state) {
  auto& client = pool(1, false, true).client();
  const ipc::Call echo{"echo", {}};
  ipc::TaskOptions traced;
  traced.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    auto id = client.submit(echo, traced);
    if (!id) die(id.status().to_string());
    if (!client.wait(*id).ok()) die("echo failed");
  });
  report_latency(state, "rtt/dispatcher/traced", samples);
}

void BM_TaskThroughput(benchmark::State& state, unsigned window) {
  auto& client = pool(2, false, false, window).client();
  std::vector<std::vector<ipc::Arg>> inputs(kStreamed);
  for (auto _ : state) {
    auto m = client.map("echo", inputs);
    if (!m || m->failed) die("map failed");
  }
  state.SetItemsProcessed(state.iterations() * kStreamed);
}

void write_samples(const std::string& path) {
  FILE* f = std::fopen(path.c_str(), "w");
  if (f == nullptr) die("cannot write " + path);
  std::fputs("{", f);
  bool first = true;
  for (const auto& [name, xs] : all_samples) {
    std::fprintf(f, "%s\n  \"%s\": [", first ? "" : ",", name.c_str());
    for (std::size_t i = 0; i < xs.size(); ++i) std::fprintf(f, "%s%.3f", i ? "," : "", xs[i]);
    std::fputs("]", f);
    first = false;
  }
  std::fputs("\n}\n", f);
  std::fclose(f);
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura::bench;
  Options opt = take_options(argc, argv, {"samples", "repetitions", "latency_out", "window"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  samples_per_run = std::atoi(opt.get("samples", "5000").c_str());
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  const long window = std::atol(opt.get("window", "16").c_str());
  if (window < 2 || window > static_cast<long>(kura::ipc::kMaxWorkerWindow)) {
    std::fprintf(stderr, "kura_ipc_bench: --window must be 2 to %u\n", kura::ipc::kMaxWorkerWindow);
    return 2;
  }
  throughput_window = static_cast<unsigned>(window);
  describe_region_directory();
  for (bool pinned : {false, true}) {
    const std::string where = pinned ? "/pinned" : "/any";
    with_range(benchmark::RegisterBenchmark(("rtt/raw_socket" + where).c_str(), BM_RawRoundTrip, pinned))
        ->Iterations(1)
        ->Repetitions(reps)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    with_range(benchmark::RegisterBenchmark(("rtt/raw_relay" + where).c_str(), BM_RelayRoundTrip, pinned))
        ->Iterations(1)
        ->Repetitions(reps)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    with_range(benchmark::RegisterBenchmark(("rtt/libuv_pipe" + where).c_str(), BM_UvRoundTrip, pinned))
        ->Iterations(1)
        ->Repetitions(reps)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
    with_range(benchmark::RegisterBenchmark(("rtt/dispatcher" + where).c_str(), BM_TaskRoundTrip, pinned))
        ->Iterations(1)
        ->Repetitions(reps)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  with_range(benchmark::RegisterBenchmark("rtt/dispatcher/traced", BM_TracedRoundTrip))
      ->Iterations(1)
      ->Repetitions(reps)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  with_range(benchmark::RegisterBenchmark("throughput/raw_socket", BM_RawThroughput))
      ->Iterations(3)
      ->Repetitions(reps)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  for (unsigned window : {1u, throughput_window}) {
    const std::string name = window == 1 ? "throughput/dispatcher" : "throughput/dispatcher/window";
    with_range(benchmark::RegisterBenchmark(name.c_str(), BM_TaskThroughput, window))
        ->Iterations(3)
        ->Repetitions(reps)
        ->UseRealTime()
        ->Unit(benchmark::kMillisecond);
  }
  benchmark::RunSpecifiedBenchmarks();
  stop_pools();
  const std::string out = opt.get("latency_out", "");
  if (!out.empty()) write_samples(out);
  benchmark::Shutdown();
  return 0;
}
