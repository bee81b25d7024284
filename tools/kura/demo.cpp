// kura demo: the main job (DESIGN.md section 7). A dispatcher on a thread of
// this process with two workers; a data set built in place in shared memory;
// a three-stage pipeline run twice, passing names and then copying the
// columns through the sockets; both side by side; everything cleaned up,
// also on Ctrl-C.
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iostream>
#include <map>
#include <mutex>
#include <sstream>
#include <thread>

#include "commands.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/pipeline.hpp"
#include "kura/shm/region.hpp"
#include "typed_json.hpp"

namespace kura::tool {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::uint64_t kMiB = 1u << 20;
constexpr int kExitInterrupted = 130;

std::atomic<bool> g_interrupted{false};

// SIGINT and SIGTERM are blocked in every thread (they are blocked before
// any is made) and taken here: the demo stops at its next step and cleans up.
class Interrupts {
 public:
  Interrupts() {
    sigemptyset(&set_);
    sigaddset(&set_, SIGINT);
    sigaddset(&set_, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &set_, nullptr);
    thread_ = std::thread([this] {
      int sig = 0;
      sigwait(&set_, &sig);
      if (!done_.load()) {
        g_interrupted.store(true);
        std::fprintf(stderr, "\nkura demo: interrupted; cleaning up\n");
      }
    });
  }
  ~Interrupts() {
    done_.store(true);
    pthread_kill(thread_.native_handle(), SIGTERM);
    thread_.join();
  }

 private:
  sigset_t set_;
  std::atomic<bool> done_{false};
  std::thread thread_;
};

// Samples the proportional set size of some processes while it runs and
// keeps the largest of each (PSS counts a page shared by n processes as 1/n
// of a page in each, so shared memory is not counted once per worker).
class PssSampler {
 public:
  explicit PssSampler(std::vector<std::int64_t> pids) : pids_(std::move(pids)) {
    thread_ = std::thread([this] {
      std::unique_lock<std::mutex> lock(mu_);
      do {
        for (std::int64_t pid : pids_) peak_[pid] = std::max(peak_[pid], pss_of(pid));
      } while (!cv_.wait_for(lock, std::chrono::milliseconds(10), [this] { return stop_; }));
    });
  }
  ~PssSampler() { stop(); }
  std::map<std::int64_t, std::uint64_t> stop() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    if (thread_.joinable()) thread_.join();
    return peak_;
  }

  static std::uint64_t pss_of(std::int64_t pid) {
    std::ifstream in("/proc/" + std::to_string(pid) + "/smaps_rollup");
    std::string key;
    std::uint64_t kb = 0;
    while (in >> key) {
      if (key == "Pss:" && in >> kb) return kb * 1024;
      in.ignore(4096, '\n');
    }
    return 0;
  }

 private:
  std::vector<std::int64_t> pids_;
  std::map<std::int64_t, std::uint64_t> peak_;
  std::mutex mu_;
  std::condition_variable cv_;
  bool stop_ = false;
  std::thread thread_;
};

std::uint64_t mem_available() {
  std::ifstream in("/proc/meminfo");
  std::string key;
  std::uint64_t kb = 0;
  while (in >> key) {
    if (key == "MemAvailable:" && in >> kb) return kb * 1024;
    in.ignore(4096, '\n');
  }
  return 0;
}

struct Run {
  double seconds = 0;
  std::uint64_t socket_bytes = 0;  // through every socket of the dispatcher, both ways
  std::uint64_t peak_region_bytes = 0;
  std::map<std::int64_t, std::uint64_t> peak_pss;
  std::optional<ipc::PipelineFailure> failure;
  std::optional<Value> table;
};

std::string seconds_text(double s) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "%.2f s", s);
  return buf;
}

// A 64-bit mixer, for noise that is the same on every run.
std::uint64_t mix(std::uint64_t x) {
  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  x *= 0xc4ceb9fe1a85ec53ull;
  return x ^ (x >> 33);
}

}  // namespace

int cmd_demo(const DemoArgs& args) {
  Interrupts interrupts;
  const bool json = args.json;
  auto say = [&](const std::string& line) {
    if (!json) std::cout << line << std::endl;
  };

  // --- Size the data set to the machine ----------------------------------------
  std::uint64_t rows = args.rows;
  const unsigned cols = args.cols;
  if (cols == 0 || rows < 2)
    return fail(invalid_argument("--cols must be at least 1 and --rows at least 2"), "demo");
  auto space = shm::space();
  if (!space) return fail(space.status(), "demo");
  // Shared memory holds the data set and, at worst, a standardised copy of
  // every column; the copy run holds a few copies per column in memory.
  const std::uint64_t shm_room = space->free / 10 * 9 / 2;
  const std::uint64_t ram_room = mem_available() / 8;
  const std::uint64_t fit = std::min(shm_room, ram_room) / (cols * sizeof(double));
  if (rows > fit) {
    const std::uint64_t want = rows;
    rows = std::max<std::uint64_t>(fit / 1000 * 1000, 2);
    std::fprintf(stderr,
                 "kura demo: %s has %s free and the machine %s of memory available: using %llu rows instead "
                 "of %llu\n",
                 shm::directory().c_str(), human_bytes(space->free).c_str(),
                 human_bytes(mem_available()).c_str(), static_cast<unsigned long long>(rows),
                 static_cast<unsigned long long>(want));
  }
  const std::uint64_t column_bytes = rows * sizeof(double);

  // --- A dispatcher on a thread, two workers, on a private socket --------------------
  char dir_template[] = "/tmp/kura-demo.XXXXXX";
  if (::mkdtemp(dir_template) == nullptr)
    return fail(Status(Code::kIo, "cannot make a socket directory"), "demo");
  const std::string socket_dir = dir_template;
  struct RemoveDir {
    std::string dir;
    ~RemoveDir() {
      ::unlink((dir + "/demo.sock").c_str());
      ::rmdir(dir.c_str());
    }
  } remove_dir{socket_dir};
  ipc::DispatcherOptions options;
  options.socket_path = socket_dir + "/demo.sock";
  options.workers = 2;
  // The copy run sends whole columns inline: frames must hold one.
  options.frame_limit = static_cast<std::uint32_t>(std::min<std::uint64_t>(column_bytes + kMiB, UINT32_MAX));
  std::ostringstream dispatcher_log;
  std::mutex log_mu;
  options.log = [&](const std::string& line) {
    std::lock_guard<std::mutex> lock(log_mu);
    dispatcher_log << line << '\n';
  };
  auto dispatcher = ipc::Dispatcher::start(std::move(options));
  if (!dispatcher) return fail(dispatcher.status(), "demo: dispatcher");
  auto client = ipc::Client::connect((*dispatcher)->socket_path());
  if (!client) return fail(client.status(), "demo: client");
  std::vector<std::int64_t> workers;
  for (;;) {
    auto st = (*client)->status();
    if (!st) return fail(st.status(), "demo: status");
    if (st->workers.size() == 2) {
      for (const auto& w : st->workers) workers.push_back(w.pid);
      break;
    }
    if (g_interrupted.load()) return kExitInterrupted;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));  // the workers are starting
  }
  std::fprintf(stderr, "kura demo: dispatcher on a thread of pid %d, workers %lld and %lld\n", ::getpid(),
               static_cast<long long>(workers[0]), static_cast<long long>(workers[1]));

  // --- The data set, built in place: no copy at all ---------------------------------
  std::vector<Value> columns;
  std::vector<String> names;
  for (unsigned c = 0; c < cols; ++c) {
    columns.push_back(Value::array_in_place(Dtype::kF64, rows));
    names.push_back(String{"col" + std::to_string(c + 1), Encoding::kUtf8, false});
  }
  Value layout = Value::list(std::move(columns)).with_names(names);
  const auto build_start = Clock::now();
  auto pending = shm::Pending::create(layout);
  if (!pending) return fail(pending.status(), "demo: data set");
  for (unsigned c = 0; c < cols; ++c) {
    auto xs = pending->array<double>(layout.children[c]);
    const double scale = c + 1.0, freq = 1e-5 * (c + 1.0);
    for (std::uint64_t i = 0; i < rows; ++i) {
      if ((i & 0xFFFFF) == 0 && g_interrupted.load())
        return kExitInterrupted;  // the Pending removes its file
      const double noise = static_cast<double>(mix(i * cols + c) >> 11) * 0x1.0p-53 - 0.5;
      xs[i] = scale * (10 + std::sin(static_cast<double>(i) * freq) + noise);
    }
  }
  auto data = std::move(pending).value().publish();
  if (!data) return fail(data.status(), "demo: data set");
  const double build_ms = std::chrono::duration<double, std::milli>(Clock::now() - build_start).count();
  say("kura demo: " + std::to_string(cols) + " columns x " + std::to_string(rows) + " rows of f64 (" +
      human_bytes(column_bytes * cols) + ") built in place in shared memory in " +
      std::to_string(int(build_ms)) + " ms: " + data->name());
  say("pipeline: standardise (per column) -> summary (per column) -> combine (one table), twice:");
  auto inputs = ipc::elements_of(data->name());
  if (!inputs) return fail(inputs.status(), "demo");

  ipc::Pipeline pipeline;
  pipeline.map("standardise", "standardise").map("summary", "summary").reduce("combine", "combine");
  auto run = [&](bool copy) -> Result<Run> {
    Run r;
    std::fprintf(stderr, "%s\n", copy ? "-- copying the columns through the sockets" : "-- passing names");
    KURA_ASSIGN_OR_RETURN(auto before, (*client)->status());
    PssSampler sampler(workers);
    const auto start = Clock::now();
    ipc::PipelineOptions o;
    o.copy = copy;
    o.progress = ipc::ProgressDisplay(stderr);
    o.stop = &g_interrupted;
    KURA_ASSIGN_OR_RETURN(ipc::PipelineResult result, pipeline.run(**client, *inputs, o));
    r.seconds = std::chrono::duration<double>(Clock::now() - start).count();
    r.peak_pss = sampler.stop();
    KURA_ASSIGN_OR_RETURN(auto after, (*client)->status());
    r.socket_bytes = (after.bytes_in + after.bytes_out) - (before.bytes_in + before.bytes_out);
    r.peak_region_bytes = result.peak_region_bytes;
    r.failure = result.failure;
    if (!result.failure) {
      KURA_ASSIGN_OR_RETURN(Value t, to_value(result.outputs.at(0).value()));
      r.table = std::move(t);
    }
    return r;
  };
  auto by_name = run(false);
  if (!by_name) return fail(by_name.status(), "demo");
  if (g_interrupted.load()) return kExitInterrupted;
  auto copied = by_name->failure ? Result<Run>(Run{}) : run(true);
  if (!copied) return fail(copied.status(), "demo");
  if (g_interrupted.load()) return kExitInterrupted;
  for (const Run* r : {&*by_name, &*copied}) {
    if (r->failure) {
      std::cerr << "kura demo: the pipeline failed at stage " << r->failure->stage << ", input "
                << r->failure->input + 1 << ": " << r->failure->message << "\n"
                << dispatcher_log.str();
      return kExitError;
    }
  }
  const bool identical = *by_name->table == *copied->table;

  // --- Side by side -----------------------------------------------------------------
  const Value& table = *by_name->table;
  auto stat = [&](std::size_t k, unsigned c) {
    double x;
    std::memcpy(&x, table.children[k].data.data() + c * sizeof x, sizeof x);
    return x;
  };
  static const char* kStats[] = {"n", "mean", "sd", "min", "max"};
  if (json) {
    Json out;
    out["rows"] = rows;
    out["cols"] = cols;
    out["data_bytes"] = column_bytes * cols;
    out["build_ms"] = build_ms;
    out["workers"] = workers;
    auto run_json = [&](const Run& r) {
      Json j;
      j["seconds"] = r.seconds;
      j["socket_bytes"] = r.socket_bytes;
      j["peak_region_bytes"] = r.peak_region_bytes;
      Json pss = Json::object();
      for (const auto& [pid, bytes] : r.peak_pss) pss[std::to_string(pid)] = bytes;
      j["peak_pss"] = pss;
      return j;
    };
    out["by_name"] = run_json(*by_name);
    out["copied"] = run_json(*copied);
    out["identical"] = identical;
    out["table"] = Json::array();
    for (unsigned c = 0; c < cols; ++c) {
      Json row;
      row["column"] = names[c].bytes;
      for (std::size_t k = 0; k < 5; ++k) row[kStats[k]] = stat(k, c);
      out["table"].push_back(row);
    }
    std::cout << out.dump(2) << std::endl;
  } else {
    std::printf("\n%-28s %22s %22s\n", "", "by name (zero-copy)", "copied through sockets");
    std::printf("%-28s %22s %22s\n", "wall time", seconds_text(by_name->seconds).c_str(),
                seconds_text(copied->seconds).c_str());
    std::printf("%-28s %22s %22s\n", "bytes through sockets", human_bytes(by_name->socket_bytes).c_str(),
                human_bytes(copied->socket_bytes).c_str());
    for (std::int64_t pid : workers)
      std::printf("%-28s %22s %22s\n", ("peak PSS of worker " + std::to_string(pid)).c_str(),
                  human_bytes(by_name->peak_pss[pid]).c_str(), human_bytes(copied->peak_pss[pid]).c_str());
    std::printf("%-28s %22s %22s\n", "peak shared memory held",
                human_bytes(by_name->peak_region_bytes).c_str(),
                human_bytes(copied->peak_region_bytes).c_str());
    std::printf("\nthe two final tables are %s:\n", identical ? "identical" : "DIFFERENT");
    std::printf("%-8s %10s %12s %10s %10s %10s\n", "column", "n", "mean", "sd", "min", "max");
    for (unsigned c = 0; c < cols; ++c)
      std::printf("%-8s %10.0f %12.3g %10.6f %10.4f %10.4f\n", names[c].bytes.c_str(), stat(0, c), stat(1, c),
                  stat(2, c), stat(3, c), stat(4, c));
    std::fflush(stdout);
  }
  return identical ? kExitOk : kExitError;
}

}  // namespace kura::tool
