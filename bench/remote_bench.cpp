// Workers on other hosts (issue 16), over loopback TCP, against the floor of
// the same transport in the same run:
//
//  - pull/raw_tcp: 256 MiB from a mapped region to another process over a
//    TCP connection, read straight into a fresh shared-memory file there.
//  - pull/kura: the same bytes pulled by a worker whose region directory is
//    not the dispatcher's (as on another host): a task `length(x)` on a new
//    256 MiB region each time, so that the worker pulls it whole, checks it
//    (node hashes) and publishes its copy. Both report MB/s.
//  - rtt/raw_tcp: a 64-byte message to another process over loopback TCP
//    and back (blocking read/write, TCP_NODELAY).
//  - rtt/remote: an empty task (echo) through the dispatcher to that worker
//    over TCP and back. Both report p50_us and p99_us.
//
// With --tls the worker connection is TLS (when the build has it, through
// the worker's option) and the raw rows are plain TCP still.
#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "dispatcher_pool.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/secret.hpp"
#include "kura/shm/region.hpp"

namespace kura::bench {
namespace {

constexpr std::size_t kPullBytes = std::size_t{256} << 20;
constexpr std::size_t kMessage = 64;
int samples_per_run = 2000;

void write_all(int fd, const char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w <= 0) die("write");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

void read_all(int fd, char* p, std::size_t n) {
  while (n > 0) {
    const ssize_t r = ::read(fd, p, n);
    if (r <= 0) die("read");
    p += r;
    n -= static_cast<std::size_t>(r);
  }
}

// A loopback TCP connection to a forked child running `child(fd)`.
struct TcpPeer {
  template <class F>
  explicit TcpPeer(F child) {
    const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0) die("listen");
    socklen_t len = sizeof a;
    ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len);
    pid = ::fork();
    if (pid == 0) {
      const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) _exit(1);
      const int one = 1;
      ::setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
      child(c);
      _exit(0);
    }
    fd = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
    ::close(l);
    if (fd < 0) die("accept");
    const int one = 1;
    ::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
  }
  ~TcpPeer() {
    ::close(fd);
    ::kill(pid, SIGKILL);
    ::waitpid(pid, nullptr, 0);
  }
  int fd = -1;
  pid_t pid = -1;
};

shm::Shared big_region() {
  std::vector<double> xs(kPullBytes / sizeof(double));
  fill(xs.data(), xs.size());
  auto s = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
  if (!s) die(s.status().to_string());
  return std::move(s).value();
}

// pull/raw_tcp: the child maps a fresh file of the region's size in the
// region directory (space reserved), reads the bytes into it, and answers one byte.
void BM_RawPull(benchmark::State& state) {
  shm::Shared region = big_region();
  auto m = region.map();
  if (!m) die(m.status().to_string());
  const auto bytes = m->region().bytes();
  const std::string dir = shm::directory();
  TcpPeer peer([&](int c) {
    std::vector<char> req(8);
    for (;;) {
      read_all(c, req.data(), req.size());
      const std::string path = dir + "/kura-bench-raw-pull";
      const int f = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
      ::unlink(path.c_str());
      // Space reserved up front, as a region's is (shm::Incoming).
      if (f < 0 || ::posix_fallocate(f, 0, static_cast<off_t>(bytes.size())) != 0) die("raw pull file");
      void* p = ::mmap(nullptr, bytes.size(), PROT_READ | PROT_WRITE, MAP_SHARED, f, 0);
      if (p == MAP_FAILED) die("mmap");
      read_all(c, static_cast<char*>(p), bytes.size());
      ::munmap(p, bytes.size());
      ::close(f);
      write_all(c, "k", 1);
    }
  });
  for (auto _ : state) {
    const std::int64_t t0 = now_ns();
    write_all(peer.fd, "pull....", 8);
    write_all(peer.fd, reinterpret_cast<const char*>(bytes.data()), bytes.size());
    char k;
    read_all(peer.fd, &k, 1);
    state.SetIterationTime(static_cast<double>(now_ns() - t0) / 1e9);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(bytes.size()));
}

// rtt/raw_tcp
void BM_RawTcpRoundTrip(benchmark::State& state) {
  TcpPeer peer([](int c) {
    char buf[kMessage];
    for (;;) {
      read_all(c, buf, kMessage);
      write_all(c, buf, kMessage);
    }
  });
  char msg[kMessage] = {};
  std::vector<double> samples;
  for (auto _ : state) {
    samples.clear();
    for (int i = 0; i < samples_per_run; ++i) {
      const std::int64_t t0 = now_ns();
      write_all(peer.fd, msg, kMessage);
      read_all(peer.fd, msg, kMessage);
      samples.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    }
  }
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] = samples[samples.size() / 2];
  state.counters["p99_us"] = samples[samples.size() * 99 / 100];
}

// The dispatcher, listening on 127.0.0.1 too, and one worker in a region
// directory of its own (a kura worker process started here).
class RemotePool {
 public:
  explicit RemotePool(bool tls) {
    char dir[] = "/tmp/kura-remote-bench.XXXXXX";
    if (::mkdtemp(dir) == nullptr) die("mkdtemp");
    dir_ = dir;
    secret_ = dir_ + "/secret";
    if (Status s = ipc::write_secret_file(secret_); !s) die(s.to_string());
    std::string regions = shm::directory() + "/kura-remote-bench.XXXXXX";
    if (::mkdtemp(regions.data()) == nullptr) die("mkdtemp " + regions);
    regions_ = regions;
    ipc::DispatcherOptions o;
    o.workers = 0;
    o.tcp_listen = "tcp://127.0.0.1:0";
    o.secret_file = secret_;
    pool_ = std::make_unique<DispatcherPool>(std::move(o));
    worker_ = ::fork();
    if (worker_ == 0) {
      ::setenv("KURA_SHM_DIR", regions_.c_str(), 1);
      std::vector<std::string> args = {KURA_TOOL_PATH, "worker",        "--connect",
                                       address(),      "--secret-file", secret_};
      if (tls) args.push_back("--tls");
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      ::execv(argv[0], argv.data());
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
    ::unlink(secret_.c_str());
    ::rmdir(dir_.c_str());
    std::string rm = "rm -rf '" + regions_ + "'";
    if (std::system(rm.c_str()) != 0) std::fprintf(stderr, "cannot remove %s\n", regions_.c_str());
  }
  std::string address() { return pool_->dispatcher().tcp_address(); }
  ipc::Client& client() { return pool_->client(); }

 private:
  std::string dir_, secret_, regions_;
  std::unique_ptr<DispatcherPool> pool_;
  pid_t worker_ = -1;
};

bool use_tls = false;

std::unique_ptr<RemotePool> remote_pool;

RemotePool& remote() {
  if (!remote_pool) remote_pool = std::make_unique<RemotePool>(use_tls);
  return *remote_pool;
}

void BM_KuraPull(benchmark::State& state) {
  auto& c = remote().client();
  for (auto _ : state) {
    shm::Shared region = big_region();  // a new name: nothing cached
    const std::int64_t t0 = now_ns();
    auto id = c.submit(ipc::Call{"length", {ipc::Arg::ref(region.name())}});
    if (!id) die(id.status().to_string());
    auto r = c.wait(*id);
    if (!r.ok()) die("length: " + r.describe());
    state.SetIterationTime(static_cast<double>(now_ns() - t0) / 1e9);
  }
  state.SetBytesProcessed(state.iterations() * static_cast<std::int64_t>(kPullBytes + 128));
}

void BM_RemoteRoundTrip(benchmark::State& state) {
  auto& c = remote().client();
  const ipc::Call echo{"echo", {}};
  std::vector<double> samples;
  for (auto _ : state) {
    samples.clear();
    for (int i = 0; i < samples_per_run; ++i) {
      const std::int64_t t0 = now_ns();
      auto id = c.submit(echo);
      if (!id) die(id.status().to_string());
      if (!c.wait(*id).ok()) die("echo failed");
      samples.push_back(static_cast<double>(now_ns() - t0) / 1e3);
    }
  }
  std::sort(samples.begin(), samples.end());
  state.counters["p50_us"] = samples[samples.size() / 2];
  state.counters["p99_us"] = samples[samples.size() * 99 / 100];
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura::bench;
  Options opt = take_options(argc, argv, {"samples", "repetitions", "tls"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  samples_per_run = std::atoi(opt.get("samples", "2000").c_str());
  use_tls = opt.get("tls", "false") == "true";
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  describe_region_directory();
  for (auto* b : {benchmark::RegisterBenchmark("pull/raw_tcp", BM_RawPull),
                  benchmark::RegisterBenchmark(use_tls ? "pull/kura_tls" : "pull/kura", BM_KuraPull)})
    with_range(b)->Iterations(3)->Repetitions(reps)->UseManualTime()->Unit(benchmark::kMillisecond);
  for (auto* b :
       {benchmark::RegisterBenchmark("rtt/raw_tcp", BM_RawTcpRoundTrip),
        benchmark::RegisterBenchmark(use_tls ? "rtt/remote_tls" : "rtt/remote", BM_RemoteRoundTrip)})
    with_range(b)->Iterations(1)->Repetitions(reps)->UseRealTime()->Unit(benchmark::kMillisecond);
  benchmark::RunSpecifiedBenchmarks();
  remote_pool.reset();
  benchmark::Shutdown();
  return 0;
}
