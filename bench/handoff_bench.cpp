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
#include "handoff.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/directory.hpp"
#include "kura/shm/region.hpp"

namespace kura::bench {
namespace {

using namespace handoff;

namespace bip = boost::interprocess;

constexpr std::size_t kInlineMax = 256 * kMiB;  // the dispatcher's frames are bounded
constexpr std::uint32_t kFrameLimit = 300u << 20;

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
