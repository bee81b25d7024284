// Workers on other hosts (issue 16), over loopback TCP, plain and TLS 1.3,
// against the floor of the same transport in the same run:
//
//  - pull/raw_tcp: 256 MiB from a mapped region to another process over a
//    TCP connection, read straight into a fresh shared-memory file there
//    (raw_peers.hpp). pull/raw_tls: the same over TLS 1.3 (OpenSSL on both
//    ends, the sender the server, with the certificate of `kura secret`).
//  - pull/kura: the same bytes pulled by a worker whose region directory is
//    not the dispatcher's (as on another host): a task `length(x)` on a new
//    256 MiB region each time, so that the worker pulls it whole, checks it
//    (node hashes) and publishes its copy. pull/kura_tls: the same with a
//    worker connected with --tls (and the certificate's fingerprint). All
//    four report bytes per second.
//  - rtt/raw_tcp: a 64-byte message to another process over loopback TCP
//    and back (blocking calls, TCP_NODELAY); rtt/raw_tls: the same over
//    TLS 1.3.
//  - rtt/remote: an empty task (echo) through the dispatcher to that worker
//    over TCP and back; rtt/remote_tls: to the TLS worker.
//  - rtt/raw_relay: the floor of any broker on rtt/remote's path: this
//    process to a relay process over a Unix socket, the relay to an echo
//    process over loopback TCP, and back, blocking calls. The rtt rows
//    report p50_us and p99_us.
//
// After the runs, one line per pair of rows, "ratio: pull/kura / pull/raw_tcp
// = 0.85x (...)": the ratio of the medians over the repetitions of this run
// (bytes per second for pull, p50 for rtt), the medians and ranges of both
// rows, and the ratio at the extremes of those ranges. --benchmark_filter
// picks rows; a pair prints when both its rows ran. On a busy machine,
// --benchmark_enable_random_interleaving=true spreads the swings of the load
// over all rows rather than over the rows that happen to run through them
// (the dispatcher and worker then start again after every raw row and
// whenever plain and TLS rows alternate).
#include <fcntl.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench_util.hpp"
#include "dispatcher_pool.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/secret.hpp"
#include "kura/shm/region.hpp"
#include "raw_peers.hpp"

namespace kura::bench {
namespace {

constexpr std::size_t kPullBytes = std::size_t{256} << 20;
constexpr std::size_t kMessage = 64;
int samples_per_run = 2000;

// The secret, certificate and key of `kura secret` in a private /tmp
// directory, for the whole run; removed by the process that made them (not
// by a forked child that exits).
class Secret {
 public:
  Secret() {
    char dir[] = "/tmp/kura-remote-bench.XXXXXX";
    if (::mkdtemp(dir) == nullptr) die("mkdtemp");
    dir_ = dir;
    file_ = dir_ + "/secret";
    if (Status s = ipc::write_secret_file(file_); !s) die(s.to_string());
    auto fp = ipc::certificate_fingerprint(ipc::certificate_path(file_));
    if (!fp) die(fp.status().to_string());
    fingerprint_ = *fp;
  }
  ~Secret() {
    if (::getpid() != owner_) return;
    for (const std::string& f : {file_, ipc::certificate_path(file_), ipc::key_path(file_)})
      ::unlink(f.c_str());
    ::rmdir(dir_.c_str());
  }
  const std::string& file() const { return file_; }
  const std::string& fingerprint() const { return fingerprint_; }

 private:
  pid_t owner_ = ::getpid();
  std::string dir_, file_, fingerprint_;
};

std::unique_ptr<Secret> secret;

// Each repetition's figure per row (bytes per second, or p50 in
// microseconds), for the ratios.
std::map<std::string, std::vector<double>> figures;

shm::Shared big_region() {
  std::vector<double> xs(kPullBytes / sizeof(double));
  fill(xs.data(), xs.size());
  auto s = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
  if (!s) die(s.status().to_string());
  return std::move(s).value();
}

// The dispatcher, listening on 127.0.0.1 too, and one worker in a region
// directory of its own (a kura worker process started here), connected over
// TLS when `tls`.
class RemotePool {
 public:
  explicit RemotePool(bool tls) {
    std::string regions = shm::directory() + "/kura-remote-bench.XXXXXX";
    if (::mkdtemp(regions.data()) == nullptr) die("mkdtemp " + regions);
    regions_ = regions;
    ipc::DispatcherOptions o;
    o.workers = 0;
    o.tcp_listen = "tcp://127.0.0.1:0";
    o.secret_file = secret->file();
    pool_ = std::make_unique<DispatcherPool>(std::move(o));
    std::vector<std::string> args = {KURA_TOOL_PATH, "worker",        "--connect",
                                     address(),      "--secret-file", secret->file()};
    if (tls) args.insert(args.end(), {"--tls", "--fingerprint", secret->fingerprint()});
    std::vector<std::string> env = {"KURA_SHM_DIR=" + regions_};
    for (char** e = environ; *e != nullptr; ++e)
      if (std::string_view(*e).rfind("KURA_SHM_DIR=", 0) != 0) env.emplace_back(*e);
    std::vector<char*> argv, envp;
    for (auto& a : args) argv.push_back(a.data());
    for (auto& e : env) envp.push_back(e.data());
    argv.push_back(nullptr);
    envp.push_back(nullptr);
    worker_ = ::fork();  // the dispatcher's thread runs: nothing but exec in the child
    if (worker_ == 0) {
      ::execve(argv[0], argv.data(), envp.data());
      _exit(127);
    }
    for (;;) {  // until the worker has connected
      auto s = pool_->client().status();
      if (!s) die(s.status().to_string());
      if (s->workers.size() == 1) break;
    }
  }
  ~RemotePool() {
    pool_.reset();
    ::kill(worker_, SIGTERM);
    ::waitpid(worker_, nullptr, 0);
    std::string rm = "rm -rf '" + regions_ + "'";
    if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", regions_.c_str());
  }
  std::string address() { return pool_->dispatcher().tcp_address(); }
  ipc::Client& client() { return pool_->client(); }

 private:
  std::string regions_;
  std::unique_ptr<DispatcherPool> pool_;
  pid_t worker_ = -1;
};

// At most one pool at a time (each worker keeps the regions it pulled), and
// none while a raw peer is forked: its dispatcher thread must not be running
// then (RawPeer).
std::unique_ptr<RemotePool> remote_pool;
bool remote_tls = false;

ipc::Client& remote(bool tls) {
  if (remote_pool && remote_tls != tls) remote_pool.reset();
  if (!remote_pool) remote_pool = std::make_unique<RemotePool>(tls);
  remote_tls = tls;
  return remote_pool->client();
}

std::string raw_secret(bool tls) {
  remote_pool.reset();
  return tls ? secret->file() : std::string();
}

// pull/raw_tcp, pull/raw_tls: the child maps a fresh file of the region's
// size in the region directory (space reserved), reads the bytes into it,
// and answers one byte.
void BM_RawPull(benchmark::State& state, const std::string& row, bool tls) {
  const std::string secret_file = raw_secret(tls);
  shm::Shared region = big_region();
  auto m = region.map();
  if (!m) die(m.status().to_string());
  const auto bytes = m->region().bytes();
  const std::string dir = shm::directory();
  RawPeer peer(secret_file, [&](RawStream& c) {
    char req[8];
    while (c.read_all(req, sizeof req)) {
      const std::string path = dir + "/kura-bench-raw-pull";
      const int f = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      ::unlink(path.c_str());
      // Space reserved up front, as a region's is (shm::Incoming).
      if (f < 0 || ::posix_fallocate(f, 0, static_cast<off_t>(bytes.size())) != 0) die("raw pull file");
      void* p = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
      if (p == MAP_FAILED) die("mmap");
      if (!c.read_all(p, bytes.size())) return;
      ::munmap(p, bytes.size());
      ::close(f);
      c.write_all("k", 1);
    }
  });
  double seconds = 0;
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    peer.stream().write_all("pull....", 8);
    peer.stream().write_all(bytes.data(), bytes.size());
    char k;
    if (!peer.stream().read_all(&k, 1)) die("the raw peer closed the connection");
    const double s = static_cast<double>(now_ns() - t0) / 1e9;
    state.SetIterationTime(s);
    seconds += s;
  }
  const auto total = state.iterations() * static_cast<std::int64_t>(bytes.size());
  state.SetBytesProcessed(total);
  figures[row].push_back(static_cast<double>(total) / seconds);
}

// rtt/raw_tcp, rtt/raw_tls
void BM_RawRoundTrip(benchmark::State& state, const std::string& row, bool tls) {
  RawPeer peer(raw_secret(tls), [](RawStream& c) {
    char buf[kMessage];
    while (c.read_all(buf, kMessage)) c.write_all(buf, kMessage);
  });
  char msg[kMessage] = {};
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    peer.stream().write_all(msg, kMessage);
    if (!peer.stream().read_all(msg, kMessage)) die("the raw peer closed the connection");
  });
  figures[row].push_back(latency_counters(state, samples));
}

// rtt/raw_relay: the floor of a broker on this path. A relay process
// reads the message from this one on a Unix socket (as the dispatcher reads
// a client's), sends it over loopback TCP to an echo process (as to a
// remote worker), reads the echo and writes it back: four hops and four
// wake-ups, blocking calls, nothing of kura.
void BM_RelayRoundTrip(benchmark::State& state, const std::string& row) {
  int sv[2];
  if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) die("socketpair");
  const pid_t relay = ::fork();
  if (relay < 0) die("fork");
  if (relay == 0) {
    ::close(sv[0]);
    RawPeer echo("", [](RawStream& c) {
      char buf[kMessage];
      while (c.read_all(buf, kMessage)) c.write_all(buf, kMessage);
    });
    RawStream client(sv[1], nullptr);
    char buf[kMessage];
    while (client.read_all(buf, kMessage)) {
      echo.stream().write_all(buf, kMessage);
      if (!echo.stream().read_all(buf, kMessage)) break;
      client.write_all(buf, kMessage);
    }
    ::_exit(0);
  }
  ::close(sv[1]);
  RawStream to_relay(sv[0], nullptr);
  char msg[kMessage] = {};
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    to_relay.write_all(msg, kMessage);
    if (!to_relay.read_all(msg, kMessage)) die("the relay closed the connection");
  });
  ::close(sv[0]);  // the relay ends, and with it its echo process
  ::waitpid(relay, nullptr, 0);
  figures[row].push_back(latency_counters(state, samples));
}

// pull/kura, pull/kura_tls
void BM_KuraPull(benchmark::State& state, const std::string& row, bool tls) {
  auto& c = remote(tls);
  double seconds = 0;
  for (auto _ : state) {
    shm::Shared region = big_region();  // a new name: nothing cached
    const std::int64_t t0 = now_ns();
    auto id = c.submit(ipc::Call{"length", {ipc::Arg::ref(region.name())}});
    if (!id) die(id.status().to_string());
    auto r = c.wait(*id);
    if (!r.ok()) die("length: " + r.describe());
    const double s = static_cast<double>(now_ns() - t0) / 1e9;
    state.SetIterationTime(s);
    seconds += s;
  }
  const auto total = state.iterations() * static_cast<std::int64_t>(kPullBytes + 128);
  state.SetBytesProcessed(total);
  figures[row].push_back(static_cast<double>(total) / seconds);
}

// rtt/remote, rtt/remote_tls
void BM_RemoteRoundTrip(benchmark::State& state, const std::string& row, bool tls) {
  auto& c = remote(tls);
  const ipc::Call echo{"echo", {}};
  std::vector<double> samples = time_round_trips(state, samples_per_run, [&] {
    auto id = c.submit(echo);
    if (!id) die(id.status().to_string());
    if (!c.wait(*id).ok()) die("echo failed");
  });
  figures[row].push_back(latency_counters(state, samples));
}

struct Spread {
  double median = 0, min = 0, max = 0;
};

Spread spread_of(std::vector<double> xs) {
  std::sort(xs.begin(), xs.end());
  const std::size_t n = xs.size();
  const double median = n % 2 == 1 ? xs[n / 2] : (xs[n / 2 - 1] + xs[n / 2]) / 2;
  return {median, xs.front(), xs.back()};
}

// "ratio: ROW / FLOOR = R x (...)" when both rows ran; figures divided by
// `scale` for printing, in `unit`.
void print_ratio(const std::string& row, const std::string& floor, double scale, const char* unit,
                 const char* goal) {
  if (figures[row].empty() || figures[floor].empty()) return;
  const Spread a = spread_of(figures[row]), b = spread_of(figures[floor]);
  std::printf(
      "ratio: %s / %s = %.2fx (%.1f [%.1f-%.1f] against %.1f [%.1f-%.1f] %s; %.2f-%.2fx at the "
      "extremes; %s)\n",
      row.c_str(), floor.c_str(), a.median / b.median, a.median / scale, a.min / scale, a.max / scale,
      b.median / scale, b.min / scale, b.max / scale, unit, a.min / b.max, a.max / b.min, goal);
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura::bench;
  Options opt = take_options(argc, argv, {"samples", "repetitions"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  samples_per_run = std::atoi(opt.get("samples", "2000").c_str());
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  describe_region_directory();
  secret = std::make_unique<Secret>();
  for (const bool tls : {false, true}) {
    const std::string raw = tls ? "pull/raw_tls" : "pull/raw_tcp", kura = tls ? "pull/kura_tls" : "pull/kura";
    for (auto* b : {benchmark::RegisterBenchmark(raw.c_str(), BM_RawPull, raw, tls),
                    benchmark::RegisterBenchmark(kura.c_str(), BM_KuraPull, kura, tls)})
      with_range(b)->Iterations(3)->Repetitions(reps)->UseManualTime()->Unit(benchmark::kMillisecond);
  }
  for (const bool tls : {false, true}) {
    const std::string raw = tls ? "rtt/raw_tls" : "rtt/raw_tcp", kura = tls ? "rtt/remote_tls" : "rtt/remote";
    for (auto* b : {benchmark::RegisterBenchmark(raw.c_str(), BM_RawRoundTrip, raw, tls),
                    benchmark::RegisterBenchmark(kura.c_str(), BM_RemoteRoundTrip, kura, tls)})
      with_range(b)->Iterations(1)->Repetitions(reps)->UseRealTime()->Unit(benchmark::kMillisecond);
  }
  with_range(benchmark::RegisterBenchmark("rtt/raw_relay", BM_RelayRoundTrip, std::string("rtt/raw_relay")))
      ->Iterations(1)
      ->Repetitions(reps)
      ->UseRealTime()
      ->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  remote_pool.reset();
  print_ratio("pull/kura", "pull/raw_tcp", 1 << 20, "MiB/s", "issue 16 asks >= 0.7x");
  print_ratio("pull/kura_tls", "pull/raw_tls", 1 << 20, "MiB/s", "issue 16 asks >= 0.7x");
  print_ratio("rtt/remote", "rtt/raw_tcp", 1, "us p50", "issue 16 asks <= 2x");
  print_ratio("rtt/remote_tls", "rtt/raw_tls", 1, "us p50", "no goal set");
  print_ratio("rtt/remote", "rtt/raw_relay", 1, "us p50", "the floor of a broker: Unix socket in, TCP out");
  secret.reset();
  benchmark::Shutdown();
  return 0;
}
