// Hand-off of an f64 array to 1, 2 and 4 consumer processes, each of which
// sums it (issue 11, suite 1): kura against what users would do instead, in
// one run, in the region directory of this process (run once on /dev/shm and
// once on a tmpfs with huge pages; bench/run.sh does both).
//
// Methods (benchmark handoff/<method>/<MiB>/<consumers>):
//   kura_in_place      the producer computes the values straight into a new
//                      region (Pending), publishes it and sends its name
//   kura_share         share() of the existing buffer (one copy, hashed as
//                      by default), then the name
//   kura_dispatcher    kura_share, the name passed as a task argument through
//                      the dispatcher to its workers (the consumers)
//   dispatcher_inline  the array copied into each task as an inline argument
//                      (frames through the dispatcher); up to 256 MiB
//   unix_socket        the array written to each consumer's Unix socket
//   boost              Boost.Interprocess: a managed_shared_memory segment (or
//                      managed_mapped_file in a region directory that is not
//                      /dev/shm) with a named array copied in; consumers open
//                      it and find() the array
//   shm_file           a file in the region directory written with write(2),
//                      which every consumer read(2)s into its own memory
//
// Consumers are started and waiting before the clock starts. The clock
// starts when the producer starts handing over: the buffer already exists
// and is warm for every method but kura_in_place, where there is no buffer
// and the producer computes the values into the region inside the timing.
// Reported per run:
//   real time (manual)   until the last consumer has its sum
//   first_byte_ms        until the last consumer has read its first element
//   copied_bytes         copies of the payload the hand-off made (each full
//                        copy of the array counts its size): kura counts what
//                        the builder copied; sockets and files count a copy
//                        in and a copy out per reader; the dispatcher counts
//                        the image encoded per task plus every byte its
//                        sockets carried, twice (in and out of the kernel)
//   pss_mib, pss_total_mib   the consumers' proportional set size above their
//                        idle size while they hold the data: each, and all
//                        together (one shared copy counts once in all)
//
// Options (before Google Benchmark's): --sizes=1,16,256,1024 (MiB)
// --consumers=1,2,4 --methods=all|m1,m2 --repetitions=5
// --boost=shm|file (default: shm on /dev/shm, else file).
#include <fcntl.h>
#include <linux/futex.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <cstring>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "bench_util.hpp"
#include "boost_segment.hpp"
#include "dispatcher_pool.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/directory.hpp"
#include "kura/shm/region.hpp"

extern char** environ;

namespace kura::bench {
namespace {

namespace bip = boost::interprocess;

constexpr std::size_t kMiB = std::size_t{1} << 20;
constexpr std::size_t kInlineMax = 256 * kMiB;  // the dispatcher's frames are bounded
constexpr std::uint32_t kFrameLimit = 300u << 20;

enum class Method { kInPlace, kShare, kDispatcher, kDispatcherInline, kSocket, kBoost, kFile };

struct MethodInfo {
  Method method;
  const char* name;
};
constexpr MethodInfo kMethods[] = {
    {Method::kInPlace, "kura_in_place"},
    {Method::kShare, "kura_share"},
    {Method::kDispatcher, "kura_dispatcher"},
    {Method::kDispatcherInline, "dispatcher_inline"},
    {Method::kSocket, "unix_socket"},
    {Method::kBoost, "boost"},
    {Method::kFile, "shm_file"},
};

// --- the consumer processes --------------------------------------------------------

// What the producer sends a consumer (one SOCK_SEQPACKET message): a
// hand-off; after every consumer has answered, "measure" (the consumer
// reports its PSS while every consumer still holds the data); after every
// consumer has measured, "release" (it lets the data go and answers).
enum class Step { kHandOff, kMeasure, kRelease };
struct Go {
  Step step;
  Method method;
  bool boost_file;     // managed_mapped_file at `name`, else managed_shared_memory named `name`
  std::uint64_t size;  // bytes of the array
  char name[512];      // the kura name, file path or segment name
};

// What a consumer answers: "ready" (its idle PSS), then for each hand-off
// its times and sum, and after "measure" its PSS.
struct Report {
  std::int64_t first_ns = 0;  // when it had read the first element
  std::int64_t done_ns = 0;   // when it had the sum
  double sum = 0;
  std::int64_t pss = 0;  // idle (ready), or while every consumer holds the data (measure)
};

// A named Boost array of doubles that construct() leaves uninitialised (the
// producer copies the data in right after; a double would be zeroed first).
struct Raw {
  double v;
  Raw() {}  // NOLINT: deliberately leaves v uninitialised
};

void send_all(int fd, const void* p, std::size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die(std::string("write: ") + std::strerror(errno));
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}

// Reads up to n bytes; returns how many (0 at EOF).
std::size_t read_some(int fd, void* p, std::size_t n) {
  for (;;) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(std::string("read: ") + std::strerror(errno));
    return static_cast<std::size_t>(r);
  }
}

// Fresh memory, as a process that receives an array allocates it.
double* fresh_buffer(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap of a consumer buffer");
  return static_cast<double*>(p);
}

// Reads `bytes` from `fd` into fresh memory; `first` is set at the first data.
double* receive(int fd, std::size_t bytes, std::int64_t& first) {
  double* buf = fresh_buffer(bytes);
  auto* p = reinterpret_cast<char*>(buf);
  std::size_t got = 0;
  while (got < bytes) {
    std::size_t r = read_some(fd, p + got, bytes - got);
    if (r == 0) die("consumer: the data ended early");
    if (got == 0) first = now_ns();
    got += r;
  }
  return buf;
}

// The data a consumer holds until the producer has measured everyone.
struct Held {
  std::optional<shm::Mapped> mapped;
  std::unique_ptr<bip::managed_shared_memory> boost_shm;
  std::unique_ptr<bip::managed_mapped_file> boost_file;
  double* buf = nullptr;  // received into fresh memory
  std::size_t buf_size = 0;
  void release() {
    mapped.reset();
    boost_shm.reset();
    boost_file.reset();
    if (buf != nullptr) ::munmap(buf, buf_size);
    buf = nullptr;
  }
};

template <class Segment>
void consume_boost(const Go& go, Report& r, std::unique_ptr<Segment>& seg) {
  seg = std::make_unique<Segment>(bip::open_only, go.name);
  auto found = seg->template find<Raw>("data");
  if (found.first == nullptr || found.second * sizeof(double) != go.size) die("consumer: boost find failed");
  const double* xs = &found.first->v;
  volatile double x0 = xs[0];
  (void)x0;
  r.first_ns = now_ns();
  r.sum = sum(xs, go.size / sizeof(double));
  r.done_ns = now_ns();
}

// `handoff_bench consumer`: control socket on fd 3, data socket on fd 4.
int consumer_main() {
  const int ctl = 3, data = 4;
  Report ready;
  ready.pss = pss_bytes();
  send_all(ctl, &ready, sizeof ready);
  Held held;
  for (;;) {
    Go go;
    ssize_t n = ::recv(ctl, &go, sizeof go, 0);
    if (n == 0) return 0;  // the producer is done with us
    if (n != sizeof go) die("consumer: bad message");
    Report r;
    if (go.step != Step::kHandOff) {
      if (go.step == Step::kMeasure) r.pss = pss_bytes();
      if (go.step == Step::kRelease) held.release();
      send_all(ctl, &r, sizeof r);
      continue;
    }
    const std::size_t count = go.size / sizeof(double);
    switch (go.method) {
      case Method::kInPlace:
      case Method::kShare: {
        auto m = shm::map(go.name);
        if (!m) die("consumer: map: " + m.status().to_string());
        auto xs = m->node().array<Dtype::kF64>();
        if (!xs || xs->size() != count) die("consumer: not the array");
        volatile double x0 = (*xs)[0];
        (void)x0;
        r.first_ns = now_ns();
        r.sum = sum(xs->data(), count);
        r.done_ns = now_ns();
        held.mapped.emplace(std::move(*m));
        break;
      }
      case Method::kSocket:
        held.buf = receive(data, go.size, r.first_ns);
        held.buf_size = go.size;
        r.sum = sum(held.buf, count);
        r.done_ns = now_ns();
        break;
      case Method::kFile: {
        int fd = ::open(go.name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die(std::string("consumer: open ") + go.name);
        held.buf = receive(fd, go.size, r.first_ns);
        held.buf_size = go.size;
        ::close(fd);
        r.sum = sum(held.buf, count);
        r.done_ns = now_ns();
        break;
      }
      case Method::kBoost:
        if (go.boost_file) {
          consume_boost(go, r, held.boost_file);
        } else {
          consume_boost(go, r, held.boost_shm);
        }
        break;
      default: die("consumer: unexpected method");
    }
    send_all(ctl, &r, sizeof r);
  }
}

struct Consumer {
  pid_t pid = -1;
  int ctl = -1;
  int data = -1;
  std::int64_t idle_pss = 0;
};

// A descriptor numbered 10 or above (so that dup2 to 3 and 4 always copies).
int high_fd(int fd) {
  int h = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (h < 0) die("fcntl F_DUPFD_CLOEXEC");
  ::close(fd);
  return h;
}

Report read_report(int ctl) {
  Report r;
  ssize_t n = ::recv(ctl, &r, sizeof r, 0);
  if (n != sizeof r) die("a consumer did not answer (it died?)");
  return r;
}

std::vector<Consumer> start_consumers(int count) {
  std::vector<Consumer> out;
  const std::string exe = self_exe();
  for (int i = 0; i < count; ++i) {
    int ctl[2], data[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0) die("socketpair");
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, data) != 0) die("socketpair");
    ctl[1] = high_fd(ctl[1]);
    data[1] = high_fd(data[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ctl[1], 3);
    posix_spawn_file_actions_adddup2(&fa, data[1], 4);
    std::string arg1 = "consumer";
    char* argv[] = {const_cast<char*>(exe.c_str()), arg1.data(), nullptr};
    Consumer c;
    if (::posix_spawn(&c.pid, exe.c_str(), &fa, nullptr, argv, environ) != 0) die("posix_spawn");
    posix_spawn_file_actions_destroy(&fa);
    ::close(ctl[1]);
    ::close(data[1]);
    c.ctl = ctl[0];
    c.data = data[0];
    out.push_back(c);
  }
  for (Consumer& c : out) c.idle_pss = read_report(c.ctl).pss;  // "ready": started, before the clock
  return out;
}

void stop_consumers(std::vector<Consumer>& cs) {
  for (Consumer& c : cs) {
    ::close(c.ctl);
    ::close(c.data);
  }
  for (Consumer& c : cs) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("a consumer failed");
  }
  cs.clear();
}

// --- the dispatcher's workers as consumers ------------------------------------------

// A barrier for the workers of one hand-off, in a small shared file: each
// worker counts itself in and waits (futex, no polling) until all have
// their sum, so that each measures its PSS while every one holds the data.
class Barrier {
 public:
  // The file of the producer `pid`. The dispatcher's workers are the
  // producer's children (it runs the dispatcher on a thread).
  static std::string path(pid_t producer) {
    return shm::directory() + "/kura-bench-barrier." + std::to_string(producer);
  }
  // The producer's side: a fresh counter at 0.
  static void reset() {
    const std::string p = path(::getpid());
    int fd = ::open(p.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0 || ::ftruncate(fd, 0) != 0 || ::ftruncate(fd, 4096) != 0) die("barrier file " + p);
    ::close(fd);
  }
  static void remove() { ::unlink(path(::getpid()).c_str()); }
  // A worker's side: counts itself in at `phase` (0: summed, 1: measured)
  // and waits until all `n` have.
  static void arrive_and_wait(int phase, int n) {
    int fd = ::open(path(::getppid()).c_str(), O_RDWR | O_CLOEXEC);
    if (fd < 0) die("barrier file " + path(::getppid()));
    void* p = ::mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    ::close(fd);
    if (p == MAP_FAILED) die("mmap of the barrier");
    int* count = static_cast<int*>(p) + phase;
    if (__atomic_add_fetch(count, 1, __ATOMIC_SEQ_CST) >= n) {
      ::syscall(SYS_futex, count, FUTEX_WAKE, INT32_MAX, nullptr, nullptr, 0);
    } else {
      for (int v; (v = __atomic_load_n(count, __ATOMIC_SEQ_CST)) < n;)
        ::syscall(SYS_futex, count, FUTEX_WAIT, v, nullptr, nullptr, 0);
    }
    ::munmap(p, 4096);
  }
};

// handoff_sum(x, n): the worker-side consumer, one of n. Returns
// list(i64 [first_ns, done_ns, pss, pid], f64 [sum]); the PSS is taken once
// all n have their sum, while each still holds the data.
Result<ipc::Output> handoff_sum(ipc::TaskContext& ctx) {
  auto xs = ctx.args()[0].array<Dtype::kF64>();
  auto n = ctx.args()[1].array<Dtype::kI32>();
  if (!xs) return xs.status();
  if (!n) return n.status();
  volatile double x0 = (*xs)[0];
  (void)x0;
  const std::int64_t first = now_ns();
  const double s = sum(xs->data(), xs->size());
  const std::int64_t done = now_ns();
  Barrier::arrive_and_wait(0, (*n)[0]);
  const std::int64_t pss = pss_bytes();
  Barrier::arrive_and_wait(1, (*n)[0]);  // nobody lets go before everyone has measured
  const std::int64_t stats[] = {first, done, pss, static_cast<std::int64_t>(::getpid())};
  return ipc::Output(
      Value::list({Value::array<Dtype::kI64>(std::span<const std::int64_t>(stats)), Value::f64({s})}));
}

// The dispatcher's workers are the consumers of the dispatcher methods; a
// pool per number of consumers, with each worker's PSS when it was fresh.
struct Pool {
  explicit Pool(int workers) : d(options(workers)) {
    for (std::int64_t pid : d.worker_pids()) idle_pss[pid] = pss_bytes(static_cast<pid_t>(pid));
  }
  static ipc::DispatcherOptions options(int workers) {
    ipc::DispatcherOptions o;
    o.workers = static_cast<unsigned>(workers);
    o.frame_limit = kFrameLimit;
    return o;
  }
  DispatcherPool d;
  std::map<std::int64_t, std::int64_t> idle_pss;  // worker pid -> PSS when fresh
};

std::map<int, std::unique_ptr<Pool>>& pools() {
  static std::map<int, std::unique_ptr<Pool>> p;
  return p;
}

Pool& pool(int workers) {
  auto& p = pools()[workers];
  if (!p) p = std::make_unique<Pool>(workers);
  return *p;
}

void stop_pools() {
  pools().clear();
}

// --- the producer -------------------------------------------------------------------

const double* source(std::size_t bytes) {
  static std::vector<double> src;
  if (src.size() * sizeof(double) < bytes) {
    src.assign(bytes / sizeof(double), 0.0);
    fill(src.data(), src.size());
  }
  return src.data();
}

BoostSegment segment;  // chosen in main()

template <class Segment>
void produce_boost(const double* src, std::size_t bytes) {
  Segment seg(bip::create_only, segment.name.c_str(), bytes + bytes / 64 + kMiB);
  Raw* a = seg.template construct<Raw>("data")[bytes / sizeof(double)]();
  std::memcpy(static_cast<void*>(a), src, bytes);
}

std::string file_name() {
  return shm::directory() + "/kura-bench-file." + std::to_string(::getpid());
}

void write_file(const double* src, std::size_t bytes) {
  int fd = ::open(file_name().c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
  if (fd < 0) die("create " + file_name() + ": " + std::strerror(errno));
  send_all(fd, src, bytes);
  ::close(fd);
}

Go make_go(Method m, std::size_t bytes, const std::string& name) {
  Go go{};
  go.step = Step::kHandOff;
  go.method = m;
  go.boost_file = segment.file;
  go.size = bytes;
  if (name.size() >= sizeof go.name) die("name too long: " + name);
  std::memcpy(go.name, name.c_str(), name.size() + 1);
  return go;
}

struct Outcome {
  std::vector<Report> reports;
  std::uint64_t copied = 0;
};

// Hands the array to consumer processes (every method but the dispatcher's).
Outcome hand_to_consumers(Method m, const double* src, std::size_t bytes, std::vector<Consumer>& cs,
                          std::optional<shm::Shared>& region) {
  Outcome out;
  const std::size_t n = bytes / sizeof(double);
  const std::size_t readers = cs.size();
  auto tell_all = [&](const Go& go) {
    for (const Consumer& c : cs)
      if (::send(c.ctl, &go, sizeof go, 0) != sizeof go) die("send to a consumer");
  };
  switch (m) {
    case Method::kInPlace: {
      Value v = Value::array_in_place(Dtype::kF64, n);
      auto p = shm::Pending::create(v);
      if (!p) die(p.status().to_string());
      fill(p->array<double>(v).data(), n);
      out.copied = p->bytes_copied();
      auto s = std::move(*p).publish();
      if (!s) die(s.status().to_string());
      region.emplace(std::move(*s));
      tell_all(make_go(m, bytes, region->name()));
      break;
    }
    case Method::kShare: {
      Value v = Value::array_borrowed(Dtype::kF64, src, n);
      auto p = shm::Pending::create(v);
      if (!p) die(p.status().to_string());
      out.copied = p->bytes_copied();
      auto s = std::move(*p).publish();
      if (!s) die(s.status().to_string());
      region.emplace(std::move(*s));
      tell_all(make_go(m, bytes, region->name()));
      break;
    }
    case Method::kSocket: {
      tell_all(make_go(m, bytes, ""));
      std::vector<std::thread> writers;
      for (const Consumer& c : cs) writers.emplace_back([&, fd = c.data] { send_all(fd, src, bytes); });
      for (auto& t : writers) t.join();
      out.copied = 2 * readers * bytes;
      break;
    }
    case Method::kFile:
      write_file(src, bytes);
      tell_all(make_go(m, bytes, file_name()));
      out.copied = (1 + readers) * bytes;
      break;
    case Method::kBoost:
      if (segment.file) {
        produce_boost<bip::managed_mapped_file>(src, bytes);
      } else {
        produce_boost<bip::managed_shared_memory>(src, bytes);
      }
      tell_all(make_go(m, bytes, segment.name));
      out.copied = bytes;
      break;
    default: die("not a consumer-process method");
  }
  for (const Consumer& c : cs) out.reports.push_back(read_report(c.ctl));
  return out;
}

// Hands the array to the dispatcher's workers, by name or inline.
Outcome hand_to_workers(Method m, const double* src, std::size_t bytes, int workers, Pool& pool,
                        std::optional<shm::Shared>& region) {
  ipc::Client& client = pool.d.client();
  Outcome out;
  const std::size_t n = bytes / sizeof(double);
  Value v = Value::array_borrowed(Dtype::kF64, src, n);
  ipc::Call call{"handoff_sum", {}};
  Barrier::reset();
  if (m == Method::kDispatcher) {
    auto p = shm::Pending::create(v);
    if (!p) die(p.status().to_string());
    out.copied = p->bytes_copied();
    auto s = std::move(*p).publish();
    if (!s) die(s.status().to_string());
    region.emplace(std::move(*s));
    call.args.push_back(ipc::Arg::ref(region->name()));
  } else {
    call.args.push_back(ipc::Arg::copy(v));
    out.copied = static_cast<std::uint64_t>(workers) * bytes;  // each task's image
  }
  call.args.push_back(ipc::Arg::copy(Value::i32({workers})));
  std::vector<ipc::TaskId> ids;
  for (int i = 0; i < workers; ++i) {
    auto id = client.submit(call);
    if (!id) die(id.status().to_string());
    ids.push_back(*id);
  }
  for (ipc::TaskResult& r : client.wait_all(ids)) {
    if (!r.ok()) die("handoff_sum: " + r.describe());
    auto stats = r.value().child(std::uint64_t{0})->array<Dtype::kI64>();
    auto s = r.value().child(std::uint64_t{1})->array<Dtype::kF64>();
    if (!stats || !s) die("handoff_sum returned something else");
    Report rep;
    rep.first_ns = (*stats)[0];
    rep.done_ns = (*stats)[1];
    auto idle = pool.idle_pss.find((*stats)[3]);
    if (idle == pool.idle_pss.end()) die("a result from an unknown worker (one was replaced?)");
    rep.pss = (*stats)[2] - idle->second;
    rep.sum = (*s)[0];
    out.reports.push_back(rep);
  }
  return out;
}

void BM_Handoff(benchmark::State& state, Method m, std::size_t bytes, int consumers) {
  const double* src = source(bytes);
  const double want = expected_sum(bytes / sizeof(double));
  const bool via_dispatcher = m == Method::kDispatcher || m == Method::kDispatcherInline;
  std::vector<Consumer> cs;
  Pool* p = nullptr;
  if (via_dispatcher) {
    p = &pool(consumers);
  } else {
    cs = start_consumers(consumers);
  }
  for (auto _ : state) {
    std::uint64_t socket_bytes_before = 0;
    if (p) {
      auto st = p->d.client().status();
      if (!st) die(st.status().to_string());
      socket_bytes_before = st->bytes_in + st->bytes_out;
    }
    std::optional<shm::Shared> region;
    const std::int64_t t0 = now_ns();
    Outcome o = p ? hand_to_workers(m, src, bytes, consumers, *p, region)
                  : hand_to_consumers(m, src, bytes, cs, region);
    std::int64_t first = 0, done = 0;
    double pss_total = 0;
    for (const Report& r : o.reports) {
      if (r.sum != want) die("a consumer summed " + std::to_string(r.sum) + ", not " + std::to_string(want));
      first = std::max(first, r.first_ns - t0);
      done = std::max(done, r.done_ns - t0);
      if (p) pss_total += static_cast<double>(r.pss);
    }
    state.SetIterationTime(static_cast<double>(done) / 1e9);
    if (!p) {
      // Every consumer holds the data now: each measures its PSS; only then
      // does any let go.
      for (Step step : {Step::kMeasure, Step::kRelease}) {
        Go go{};
        go.step = step;
        for (const Consumer& c : cs)
          if (::send(c.ctl, &go, sizeof go, 0) != sizeof go) die("send to a consumer");
        for (std::size_t i = 0; i < cs.size(); ++i) {
          Report r = read_report(cs[i].ctl);
          if (step == Step::kMeasure) pss_total += static_cast<double>(r.pss - cs[i].idle_pss);
        }
      }
    }
    if (p) {
      auto st = p->d.client().status();
      if (!st) die(st.status().to_string());
      if (m == Method::kDispatcherInline)
        o.copied += 2 * (st->bytes_in + st->bytes_out - socket_bytes_before);
    }
    state.counters["first_byte_ms"] = static_cast<double>(first) / 1e6;
    state.counters["copied_bytes"] = static_cast<double>(o.copied);
    state.counters["pss_total_mib"] = pss_total / kMiB;
    state.counters["pss_mib"] = pss_total / kMiB / consumers;
    // Clean-up, outside the timing.
    if (region) {
      if (auto s = region->release(); !s) die(s.to_string());
    }
    if (m == Method::kFile) ::unlink(file_name().c_str());
    if (m == Method::kBoost) segment.remove();
  }
  state.counters["bytes"] = static_cast<double>(bytes);
  state.counters["consumers"] = consumers;
  if (!via_dispatcher) stop_consumers(cs);
}

}  // namespace
}  // namespace kura::bench

int main(int argc, char** argv) {
  using namespace kura;
  using namespace kura::bench;
  if (argc == 2 && std::strcmp(argv[1], "consumer") == 0) return consumer_main();
  if (!ipc::Worker::add("handoff_sum", handoff_sum)) return 1;
  if (auto code = ipc::Worker::main(argc, argv)) return *code;

  Options opt = take_options(argc, argv, {"sizes", "consumers", "methods", "repetitions", "boost"});
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 2;
  const std::string label = describe_region_directory();
  segment.choose(opt, label, "kura-bench-boost");
  const auto sizes = opt.list("sizes", "1,16,256,1024");
  const auto consumers = opt.list("consumers", "1,2,4");
  const std::string methods = "," + opt.get("methods", "all") + ",";
  const int reps = std::atoi(opt.get("repetitions", "5").c_str());
  std::string skipped;
  for (std::uint64_t mib : sizes) {
    for (const MethodInfo& mi : kMethods) {
      if (methods != ",all," && methods.find("," + std::string(mi.name) + ",") == std::string::npos) continue;
      for (std::uint64_t n : consumers) {
        const std::size_t bytes = mib * kMiB;
        if (mi.method == Method::kDispatcherInline && bytes > kInlineMax) {
          skipped += std::string(skipped.empty() ? "" : ", ") + mi.name + "/" + std::to_string(mib) + "/" +
                     std::to_string(n);
          continue;
        }
        const std::string name =
            std::string("handoff/") + mi.name + "/" + std::to_string(mib) + "/" + std::to_string(n);
        auto* b =
            benchmark::RegisterBenchmark(name.c_str(), BM_Handoff, mi.method, bytes, static_cast<int>(n));
        with_range(b->UseManualTime()->Iterations(1)->Repetitions(reps)->Unit(benchmark::kMillisecond));
      }
    }
  }
  if (!skipped.empty())
    benchmark::AddCustomContext("skipped", skipped + " (inline arguments over 256 MiB: frames are bounded)");
  std::atexit([] {
    segment.remove();
    ::unlink(file_name().c_str());
    Barrier::remove();
  });
  benchmark::RunSpecifiedBenchmarks();
  stop_pools();
  benchmark::Shutdown();
  return 0;
}
