// kura_soak: chaos under load (issue 18). A `kura dispatcher` process with
// four workers and a byte cap; 16 clients (8 threads of this process, 8
// processes: this program re-executed with --client) submit 100,000 tasks
// in all (fewer in proportion for runs under 60 s) at a steady pace; a chaos
// driver meanwhile SIGKILLs workers, SIGSTOPs one past the heartbeat
// deadline, SIGKILLs a client process holding result regions, fills the
// region directory to the brim, and SIGKILLs the dispatcher and starts
// another on the same socket. At the end one table: every task's result
// against what its client expected and what the chaos allowed, and the
// checks (pool, region directory, descriptors, memory). Exit 1 on any miss.
//
//   kura_soak --kura PATH [--seconds S] [--no-rss-bound] [--r-libs DIR]
//
// With --r-libs, every worker the dispatchers start is an R worker or one of
// kura's own, at random: R workers run the same functions on R's main
// thread, cancelled by interrupts, and the chaos treats them alike.
//
// The region directory is a private 256 MiB tmpfs in a mount namespace of
// the soak's own (it runs as root), so filling it touches nobody else; where
// that cannot be made, a private directory under $KURA_SHM_DIR (or /dev/shm)
// is filled by 64 MiB only, and the table says so.
#include <fcntl.h>
#include <sched.h>
#include <signal.h>
#include <spawn.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "client.hpp"
#include "kura/ipc/client.hpp"
#include "kura/shm/directory.hpp"
#include "plan.hpp"

extern char** environ;

namespace kura::soak {
namespace {

constexpr int kClients = 16;
constexpr int kThreadClients = 8;
constexpr int kVictim = kClients - 1;  // the client process the chaos kills
constexpr unsigned kWorkers = 4;
constexpr const char* kMemoryCap = "1MiB";
constexpr std::uint64_t kMemoryCapBytes = 1u << 20;
constexpr int kHeartbeatTimeoutMs = 2000;
constexpr std::uint64_t kTmpfsBytes = 256u << 20;
constexpr std::uint64_t kFallbackFillBytes = 64u << 20;
constexpr std::int64_t kMs = 1'000'000;
constexpr std::int64_t kSec = 1'000'000'000;
// Resident memory of the second steady phase may exceed the first's by this
// much at most: 10% plus 4 MiB (malloc's arenas and libuv's buffers move a
// little; a leak of even 40 bytes a task over 40,000 tasks does not fit).
constexpr double kRssFactor = 1.10;
constexpr std::int64_t kRssSlackKiB = 4096;

[[noreturn]] void die(const std::string& why) {
  std::cerr << "kura_soak: " << why << std::endl;
  std::exit(2);
}

double secs(std::int64_t ns) {
  return static_cast<double>(ns) / 1e9;
}

pid_t spawn(const std::vector<std::string>& argv, int out_fd, int err_fd) {
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (out_fd >= 0) posix_spawn_file_actions_adddup2(&fa, out_fd, 1);
  if (err_fd >= 0) posix_spawn_file_actions_adddup2(&fa, err_fd, 2);
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = -1;
  const int rc = ::posix_spawn(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) die("cannot start " + argv[0] + ": " + std::strerror(rc));
  return pid;
}

// Waits for child `pid` up to `timeout_ns`; its exit status, or -1.
int reap(pid_t pid, std::int64_t timeout_ns) {
  const std::int64_t end = now_ns() + timeout_ns;
  for (;;) {
    int st = 0;
    const pid_t r = ::waitpid(pid, &st, WNOHANG);
    if (r == pid) return st;
    if (r < 0 || now_ns() > end) return -1;
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Alive and not a zombie (orphaned workers are reaped by init, some time later).
bool alive(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
  std::string s;
  if (!std::getline(f, s)) return false;
  const auto p = s.rfind(')');
  return p != std::string::npos && p + 2 < s.size() && s[p + 2] != 'Z' && s[p + 2] != 'X';
}

int fd_count(pid_t pid) {
  int n = 0;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator("/proc/" + std::to_string(pid) + "/fd", ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    ++n;
  return n;
}

std::int64_t rss_kib(pid_t pid) {
  std::ifstream f("/proc/" + std::to_string(pid) + "/status");
  std::string line;
  while (std::getline(f, line))
    if (line.rfind("VmRSS:", 0) == 0) return std::atoll(line.c_str() + 6);
  return 0;
}

std::vector<std::string> list_dir(const std::string& dir) {
  std::vector<std::string> out;
  std::error_code ec;
  for (auto it = std::filesystem::directory_iterator(dir, ec);
       !ec && it != std::filesystem::directory_iterator(); it.increment(ec))
    out.push_back(it->path().filename().string());
  std::sort(out.begin(), out.end());
  return out;
}

// Region files (regions and temporaries, not leases) in `dir`.
std::vector<std::string> region_files(const std::string& dir) {
  std::vector<std::string> out;
  for (auto& f : list_dir(dir))
    if (f.rfind("kura_", 0) == 0 && f.find(".lock") == std::string::npos) out.push_back(f);
  return out;
}

// The region directory: a private tmpfs when a mount namespace can be had.
struct RegionDir {
  std::string path;
  bool private_tmpfs = false;

  void make() {
    char templ[] = "/tmp/kura-soak-shm.XXXXXX";
    if (::mkdtemp(templ) == nullptr) die("mkdtemp");
    path = templ;
    const std::string opts = "size=" + std::to_string(kTmpfsBytes) + ",mode=0700";
    if (::unshare(CLONE_NEWNS) == 0 && ::mount(nullptr, "/", nullptr, MS_REC | MS_PRIVATE, nullptr) == 0 &&
        ::mount("tmpfs", path.c_str(), "tmpfs", MS_NOSUID | MS_NODEV, opts.c_str()) == 0) {
      private_tmpfs = true;
    } else {
      ::rmdir(path.c_str());
      const char* base = std::getenv("KURA_SHM_DIR");
      std::string t = std::string(base && *base ? base : "/dev/shm") + "/kura-soak.XXXXXX";
      if (::mkdtemp(t.data()) == nullptr) die("mkdtemp in " + t);
      path = t;
    }
    if (Status s = shm::set_directory(path); !s) die(s.to_string());
  }
  void remove() {
    if (private_tmpfs) ::umount2(path.c_str(), MNT_DETACH);
    std::error_code ec;
    std::filesystem::remove_all(path, ec);
  }
};

// A `kura dispatcher` process on the soak's socket.
struct DispatcherProc {
  std::string kura, socket, log_dir;
  std::string worker_command;  // empty: kura's own workers
  pid_t pid = -1;
  int incarnation = 0;

  void start() {
    const std::string log = log_dir + "/dispatcher-" + std::to_string(++incarnation) + ".log";
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) die("cannot open " + log);
    std::vector<std::string> argv = {kura,
                                     "dispatcher",
                                     "--socket",
                                     socket,
                                     "--workers",
                                     std::to_string(kWorkers),
                                     "--memory",
                                     kMemoryCap,
                                     "--heartbeat-timeout",
                                     std::to_string(kHeartbeatTimeoutMs),
                                     "--window",
                                     window()};
    if (!worker_command.empty()) {
      argv.push_back("--worker-command");
      argv.push_back(worker_command);
    }
    pid = spawn(argv, fd, fd);
    ::close(fd);
    const std::int64_t end = now_ns() + 30 * kSec;
    while (now_ns() < end) {
      if (ipc::Client::connect(socket)) return;
      if (!alive(pid)) die("the dispatcher exited at start; see " + log);
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    die("the dispatcher did not listen within 30 s; see " + log);
  }
  // Every other incarnation sends workers tasks to wait behind the one
  // they run (kura dispatcher --window), the first not.
  std::string window() const { return incarnation % 2 == 0 ? "4" : "1"; }
  std::string tail_logs() const {
    std::string out;
    for (int i = 1; i <= incarnation; ++i) {
      std::ifstream f(log_dir + "/dispatcher-" + std::to_string(i) + ".log");
      std::vector<std::string> lines;
      for (std::string l; std::getline(f, l);) lines.push_back(l);
      out += "--- dispatcher " + std::to_string(i) + " log (last 15 lines of " +
             std::to_string(lines.size()) + ")\n";
      for (std::size_t j = lines.size() > 15 ? lines.size() - 15 : 0; j < lines.size(); ++j)
        out += lines[j] + "\n";
    }
    return out;
  }
};

struct Interval {
  std::int64_t from, to;
};

// Everything the clients report and the chaos did, under one mutex.
struct Ledger {
  std::mutex mu;
  std::vector<Record> records;
  std::map<int, std::set<std::uint64_t>> open;  // submitted, no record yet
  std::map<int, std::uint64_t> next_index;      // one past the highest submitted
  std::map<int, std::uint64_t> owner;
  std::map<int, int> held;
  std::vector<std::string> errors;      // E lines, X lines, malformed lines
  std::atomic<std::uint64_t> ended{0};  // records so far

  void line(int client, const std::string& l) {
    std::lock_guard<std::mutex> lock(mu);
    if (l.size() < 2) return;
    const std::string rest = l.substr(2);
    switch (l[0]) {
      case 'O': owner[client] = std::strtoull(rest.c_str(), nullptr, 16); break;
      case 'S': {
        const std::uint64_t i = std::strtoull(rest.c_str(), nullptr, 10);
        open[client].insert(i);
        next_index[client] = std::max(next_index[client], i + 1);
        break;
      }
      case 'R': {
        Record r;
        if (!parse_record(rest, r)) {
          errors.push_back("client " + std::to_string(client) + ": malformed line: " + l);
          break;
        }
        open[client].erase(r.index);
        records.push_back(std::move(r));
        ended.fetch_add(1);
        break;
      }
      case 'H': held[client] = std::atoi(rest.c_str()); break;
      default: errors.push_back("client " + std::to_string(client) + ": " + l);
    }
  }
};

// What the chaos did, with times for judging each task's result.
struct ChaosLog {
  std::mutex mu;
  std::vector<Interval> worker_events;  // kills, the stop, drops seen in status
  std::vector<std::int64_t> dispatcher_kills;
  std::vector<Interval> fills;
  int worker_kills = 0, stops = 0, stop_dropped = 0, client_kills = 0, dispatcher_restarts = 0;
  int victim_held_at_kill = 0;
  double stop_drop_s = 0, victim_prune_s = -1, restart_s = 0;
  bool old_workers_gone = true;
  std::uint64_t fill_bytes = 0, fill_free_after = 0;
  std::uint64_t started_before_kill = 0, kills_before_restart = 0;
  std::vector<std::string> misses;
  std::vector<std::pair<std::int64_t, std::string>> timeline;  // every chaos action, for diagnosis
  void event(Interval i) {
    std::lock_guard<std::mutex> lock(mu);
    worker_events.push_back(i);
  }
  void note(std::int64_t t, std::string what) {
    std::lock_guard<std::mutex> lock(mu);
    timeline.emplace_back(t, std::move(what));
  }
};

// Polls the dispatcher's status every 100 ms through a client of its own,
// reconnecting across the restart; records drops as worker events and the
// dispatcher's resident memory by phase.
class Monitor {
 public:
  Monitor(const std::string& socket, ChaosLog& chaos) : socket_(socket), chaos_(chaos) {}

  void start() {
    thread_ = std::thread([this] { loop(); });
  }
  void stop() {
    stop_ = true;
    thread_.join();
  }
  std::optional<ipc::DispatcherStatus> last() {
    std::lock_guard<std::mutex> lock(mu_);
    return last_;
  }
  void set_dispatcher(pid_t pid) { dispatcher_pid_ = pid; }
  // The workers seen in any status so far, and those of them that were R
  // workers (they have kura.r).
  std::pair<std::size_t, std::size_t> workers_seen() {
    std::lock_guard<std::mutex> lock(mu_);
    return {seen_workers_.size(), seen_r_workers_.size()};
  }
  // 0: no phase; 1 or 2: the steady phases whose peak VmRSS is kept.
  void set_phase(int p) { phase_ = p; }
  std::int64_t peak(int p) const { return peak_[p]; }
  // Waits for a status that satisfies `pred`, up to `timeout_ns`, taking
  // only a status asked for at `since_ns` or later: one asked before an
  // event may satisfy `pred` and still not show what the event did.
  bool wait_for(const std::function<bool(const ipc::DispatcherStatus&)>& pred, std::int64_t timeout_ns,
                std::int64_t since_ns = 0) {
    const std::int64_t end = now_ns() + timeout_ns;
    while (now_ns() < end) {
      std::optional<ipc::DispatcherStatus> s;
      std::int64_t asked = 0;
      {
        std::lock_guard<std::mutex> lock(mu_);
        s = last_;
        asked = last_asked_ns_;
      }
      if (s && asked >= since_ns && pred(*s)) return true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    return false;
  }

 private:
  void loop() {
    std::unique_ptr<ipc::Client> c;
    std::uint64_t dropped = 0;
    std::int64_t prev = now_ns();
    while (!stop_) {
      if (!c) {
        auto r = ipc::Client::connect(socket_);
        if (r) {
          c = std::move(r).value();
          dropped = 0;
        }
      }
      if (c) {
        const std::int64_t asked = now_ns();
        auto s = c->status();
        const std::int64_t now = now_ns();
        if (s) {
          if (s->workers_dropped > dropped) {
            for (std::uint64_t i = dropped; i < s->workers_dropped; ++i) chaos_.event({prev, now});
            dropped = s->workers_dropped;
          }
          std::lock_guard<std::mutex> lock(mu_);
          for (const auto& w : s->workers) {
            seen_workers_.insert(w.pid);
            if (std::find(w.functions.begin(), w.functions.end(), "kura.r") != w.functions.end())
              seen_r_workers_.insert(w.pid);
          }
          last_ = std::move(s).value();
          last_asked_ns_ = asked;
        } else {
          c.reset();
          std::lock_guard<std::mutex> lock(mu_);
          last_.reset();
          last_asked_ns_ = 0;
        }
        prev = now;
      }
      const int p = phase_;
      if (p > 0 && dispatcher_pid_ > 0) peak_[p] = std::max(peak_[p], rss_kib(dispatcher_pid_));
      std::this_thread::sleep_for(std::chrono::milliseconds(100));
    }
  }

  std::string socket_;
  ChaosLog& chaos_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<pid_t> dispatcher_pid_{-1};
  std::atomic<int> phase_{0};
  std::int64_t peak_[3] = {0, 0, 0};
  std::mutex mu_;
  std::optional<ipc::DispatcherStatus> last_;
  std::int64_t last_asked_ns_ = 0;
  std::set<std::int64_t> seen_workers_, seen_r_workers_;  // by pid
};

// A client process: this program with --client, its lines on a pipe.
struct ClientProc {
  int id = 0;
  pid_t pid = -1;
  std::thread reader;
};

struct Config {
  std::string self, kura;
  std::string r_libs;  // set: half the pool's workers are R workers of the R package installed there
  double seconds = 60;
  std::uint64_t per_client = 0;
  bool rss_bound = true;  // off for sanitizer builds
};

class Soak {
 public:
  explicit Soak(Config c) : cfg_(std::move(c)) {}

  int run();

 private:
  void start_process_client(int id, std::uint64_t first);
  std::string whose(const std::string& region_file);
  // The script each worker of the pool runs (--r-libs): R or kura's own, at
  // random; returns the dispatcher's --worker-command.
  std::string write_worker_script();
  std::string when(const std::string& region_file);
  std::optional<std::int64_t> written_at(const std::string& region_file);
  bool written_as_dispatcher_died(const std::string& region_file);
  void chaos();
  void kill_worker(std::mt19937_64& rng);
  void stop_worker();
  void kill_client();
  void fill();
  void restart_dispatcher();
  std::int64_t at(double fraction) const {
    return start_ns_ + static_cast<std::int64_t>(fraction * cfg_.seconds * 1e9);
  }
  bool sleep_until(std::int64_t t) {
    while (now_ns() < t && !done_) std::this_thread::sleep_for(std::chrono::milliseconds(10));
    return !done_;
  }
  int judge();
  [[noreturn]] void hang(const std::string& where);
  void watchdog();

  Config cfg_;
  RegionDir dir_;
  std::string sock_dir_, socket_;
  DispatcherProc d_;
  ChaosLog chaos_;
  std::unique_ptr<Monitor> mon_;
  Ledger ledger_;
  std::int64_t start_ns_ = 0, span_ns_ = 0, give_up_ns_ = 0;
  std::atomic<std::int64_t> d2_from_ns_{INT64_MAX}, d2_listen_ns_{0};
  std::mutex procs_mu_;
  std::vector<std::unique_ptr<ClientProc>> procs_;
  std::atomic<bool> done_{false};
  std::atomic<int> threads_done_{0};
  std::atomic<bool> finished_{false};  // the checks are done: the watchdog stands down
  std::set<pid_t> signalled_;          // workers the chaos has killed or stopped
  std::string checks_, d_logs_;
  double run_s_ = 0;
};

// Which of the soak's processes owns region file `f` (kura_<owner>_<n>).
std::string Soak::write_worker_script() {
  const std::string path = sock_dir_ + "/worker.sh";
  std::ofstream f(path);
  f << "#!/bin/sh\n"
       "# A worker of the soak's pool: an R worker or kura's own, at random (exec keeps the pid\n"
       "# the dispatcher started, which its start token is believed from).\n"
       "if [ $(( $(od -An -N1 -tu1 /dev/urandom) % 2 )) -eq 0 ]; then\n"
       "  R_LIBS='"
    << cfg_.r_libs << "' exec Rscript -e 'kura:::serve_managed()' \"$1\" ''\n"
    << "fi\n"
    << "exec '" << cfg_.kura << "' worker --connect \"$1\"\n";
  f.close();
  if (!f || ::chmod(path.c_str(), 0700) != 0) die("cannot write " + path);
  return path + " {socket}";
}

std::string Soak::whose(const std::string& f) {
  const std::uint64_t owner = std::strtoull(f.c_str() + 5, nullptr, 16);
  std::lock_guard<std::mutex> lock(ledger_.mu);
  for (const auto& [client, o] : ledger_.owner)
    if (o == owner)
      return client < kThreadClients ? "the soak process's, of its client threads"
                                     : "client process " + std::to_string(client) + "'s";
  return "an owner no client reported";
}

// Past every bound of the run: says what has not ended, kills the processes
// the soak started (by pid) and exits 1.
void Soak::hang(const std::string& where) {
  std::printf("FAIL: HANG: the soak did not finish %s\n", where.c_str());
  if (std::unique_lock<std::mutex> lock(ledger_.mu, std::try_to_lock); lock.owns_lock()) {
    std::printf("  %" PRIu64 " of %" PRIu64 " tasks ended; client threads done: %d of %d\n",
                ledger_.ended.load(), cfg_.per_client * kClients, threads_done_.load(), kThreadClients);
    for (const auto& [client, open] : ledger_.open)
      if (!open.empty())
        std::printf("  client %d: %zu tasks submitted without a result (first %" PRIu64 ")\n", client,
                    open.size(), *open.begin());
  }
  if (auto s = mon_->last())
    std::printf("  dispatcher: %" PRIu64 " awaiting, %" PRIu64 " executing, %" PRIu64
                " completed, %zu workers, queued %" PRIu64 " bytes\n",
                s->awaiting, s->executing, s->completed, s->workers.size(), s->queued_bytes);
  std::printf("%s", d_.tail_logs().c_str());
  std::fflush(stdout);
  if (std::unique_lock<std::mutex> lock(procs_mu_, std::try_to_lock); lock.owns_lock())
    for (auto& p : procs_)
      if (p->pid > 0) ::kill(p->pid, SIGKILL);
  ::kill(d_.pid, SIGKILL);
  dir_.remove();
  std::error_code ec;
  std::filesystem::remove_all(sock_dir_, ec);
  std::_Exit(1);
}

void Soak::watchdog() {
  while (now_ns() < give_up_ns_ + 60 * kSec) {
    if (finished_) return;
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  hang("60 s past its deadline (" + std::to_string(secs(give_up_ns_ - start_ns_)).substr(0, 5) + " s)");
}

// When region file `f` was last written, on the soak's clock; nullopt when
// it is gone.
std::optional<std::int64_t> Soak::written_at(const std::string& f) {
  struct stat st {};
  if (::stat((dir_.path + "/" + f).c_str(), &st) != 0) return std::nullopt;
  timespec real{};
  ::clock_gettime(CLOCK_REALTIME, &real);
  const std::int64_t offset = static_cast<std::int64_t>(real.tv_sec) * kSec + real.tv_nsec - now_ns();
  return static_cast<std::int64_t>(st.st_mtim.tv_sec) * kSec + st.st_mtim.tv_nsec - offset;
}

// Whether region file `f` was written within 250 ms of a SIGKILL of the
// dispatcher: a result published by a worker whose report died with the
// dispatcher. Nothing removes it while its client's process lives (a known
// defect, issue 18): the client never heard its name, and cannot tell it
// from regions of its owner that the process holds on purpose (a result in
// flight to another Client of the process, a result taken or disowned, one
// written for it under a Lease); it goes once the process exits (prune).
// The soak reports such regions apart, and fails on any other.
bool Soak::written_as_dispatcher_died(const std::string& f) {
  const auto t = written_at(f);
  if (!t) return false;
  std::lock_guard<std::mutex> lock(chaos_.mu);
  for (const std::int64_t k : chaos_.dispatcher_kills)
    if (*t > k - kSec / 4 && *t < k + kSec / 4) return true;
  return false;
}

// When region file `f` was last written, against the chaos actions nearest
// to it: what a leftover region points to.
std::string Soak::when(const std::string& f) {
  const auto written = written_at(f);
  if (!written) return "gone";
  const std::int64_t t = *written;
  std::string out = "written " + std::to_string(secs(t - start_ns_)).substr(0, 5) + " s into the run";
  std::lock_guard<std::mutex> lock(chaos_.mu);
  for (const auto& [at, what] : chaos_.timeline)
    if (at > t - 2 * kSec && at < t + 2 * kSec)
      out += "; " + what + " at " + std::to_string(secs(at - t)).substr(0, 6) + " s from then";
  return out;
}

void Soak::start_process_client(int id, std::uint64_t first) {
  int p[2];
  if (::pipe2(p, O_CLOEXEC) != 0) die("pipe");
  auto proc = std::make_unique<ClientProc>();
  proc->id = id;
  std::vector<std::string> argv = {cfg_.self,
                                   "--client",
                                   std::to_string(id),
                                   "--socket",
                                   socket_,
                                   "--first",
                                   std::to_string(first),
                                   "--count",
                                   std::to_string(cfg_.per_client),
                                   "--start",
                                   std::to_string(start_ns_),
                                   "--span",
                                   std::to_string(span_ns_),
                                   "--give-up",
                                   std::to_string(give_up_ns_)};
  if (id == kVictim) argv.push_back("--hold");
  proc->pid = spawn(argv, p[1], -1);
  ::close(p[1]);
  const int fd = p[0];
  proc->reader = std::thread([this, id, fd] {
    FILE* f = ::fdopen(fd, "r");
    char* buf = nullptr;
    std::size_t cap = 0;
    ssize_t n;
    while ((n = ::getline(&buf, &cap, f)) > 0) {
      std::string l(buf, static_cast<std::size_t>(n));
      if (!l.empty() && l.back() == '\n') l.pop_back();
      ledger_.line(id, l);
    }
    std::free(buf);
    std::fclose(f);
  });
  std::lock_guard<std::mutex> lock(procs_mu_);
  procs_.push_back(std::move(proc));
}

void Soak::kill_worker(std::mt19937_64& rng) {
  auto s = mon_->last();
  if (!s) return;
  std::vector<pid_t> live;  // status may lag: not one killed already
  for (const auto& w : s->workers)
    if (w.pid > 0 && !signalled_.count(static_cast<pid_t>(w.pid)) && alive(static_cast<pid_t>(w.pid)))
      live.push_back(static_cast<pid_t>(w.pid));
  if (live.empty()) return;
  const pid_t pid = live[rng() % live.size()];
  const std::int64_t t = now_ns();
  chaos_.event({t, t});
  chaos_.note(t, "SIGKILL worker " + std::to_string(pid));
  signalled_.insert(pid);
  if (::kill(pid, SIGKILL) == 0) {
    std::lock_guard<std::mutex> lock(chaos_.mu);
    ++chaos_.worker_kills;
  }
}

// SIGSTOPs a worker until the dispatcher drops it (heartbeats missed), then
// SIGCONTs it (the dispatcher has killed it by then).
void Soak::stop_worker() {
  auto s = mon_->last();
  if (!s) return;
  pid_t pid = -1;
  for (const auto& w : s->workers)
    if (w.pid > 0 && !signalled_.count(static_cast<pid_t>(w.pid)) && alive(static_cast<pid_t>(w.pid)))
      pid = static_cast<pid_t>(w.pid);
  if (pid < 0) return;
  signalled_.insert(pid);
  const std::int64_t t = now_ns();
  if (::kill(pid, SIGSTOP) != 0) return;
  const bool dropped = mon_->wait_for(
      [pid](const ipc::DispatcherStatus& st) {
        return std::none_of(st.workers.begin(), st.workers.end(),
                            [pid](const ipc::WorkerStatus& w) { return w.pid == pid; });
      },
      3 * kHeartbeatTimeoutMs * kMs + 20 * kSec);
  const std::int64_t t2 = now_ns();
  ::kill(pid, SIGCONT);
  chaos_.event({t, t2});
  chaos_.note(t, "SIGSTOP worker " + std::to_string(pid));
  std::lock_guard<std::mutex> lock(chaos_.mu);
  ++chaos_.stops;
  chaos_.stop_drop_s = secs(t2 - t);
  if (dropped) ++chaos_.stop_dropped;
  if (!dropped) chaos_.misses.push_back("a worker SIGSTOPped past the heartbeat deadline was not dropped");
}

// SIGKILLs the victim client process once it holds result regions, starts
// it again to go on with its plan, and waits for the dispatcher to prune
// what the dead one held.
void Soak::kill_client() {
  ClientProc* victim = nullptr;
  {
    std::lock_guard<std::mutex> lock(procs_mu_);
    for (auto& p : procs_)
      if (p->id == kVictim) victim = p.get();
  }
  const std::int64_t end = now_ns() + 10 * kSec;
  int held = 0;
  while (now_ns() < end) {
    {
      std::lock_guard<std::mutex> lock(ledger_.mu);
      held = ledger_.held[kVictim];
    }
    if (held >= 8) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::uint64_t owner;
  {
    std::lock_guard<std::mutex> lock(ledger_.mu);
    owner = ledger_.owner[kVictim];
  }
  ::kill(victim->pid, SIGKILL);
  reap(victim->pid, 10 * kSec);
  victim->reader.join();
  victim->pid = -1;
  std::uint64_t first;
  {
    std::lock_guard<std::mutex> lock(ledger_.mu);
    first = ledger_.next_index[kVictim];
  }
  {
    std::lock_guard<std::mutex> lock(chaos_.mu);
    ++chaos_.client_kills;
    chaos_.victim_held_at_kill = held;
  }
  if (first < cfg_.per_client) start_process_client(kVictim, first);
  char prefix[40];
  std::snprintf(prefix, sizeof prefix, "kura_%" PRIx64 "_", owner);
  const std::int64_t t = now_ns();
  while (now_ns() < t + 20 * kSec) {
    auto files = region_files(dir_.path);
    if (std::none_of(files.begin(), files.end(),
                     [&](const std::string& f) { return f.rfind(prefix, 0) == 0; })) {
      std::lock_guard<std::mutex> lock(chaos_.mu);
      chaos_.victim_prune_s = secs(now_ns() - t);
      return;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  std::lock_guard<std::mutex> lock(chaos_.mu);
  chaos_.misses.push_back("the regions of the SIGKILLed client were not pruned within 20 s");
}

// Fills the region directory to its last byte (a file kura ignores), holds
// it for a while, removes it.
void Soak::fill() {
  const std::string path = dir_.path + "/soak-fill";
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) return;
  const std::int64_t t = now_ns();
  std::vector<char> buf(1 << 20, 'x');
  std::uint64_t total = 0;
  const std::uint64_t limit = dir_.private_tmpfs ? kTmpfsBytes : kFallbackFillBytes;
  for (std::size_t chunk = buf.size(); chunk >= 4096 && total < limit;) {
    const ssize_t w = ::write(fd, buf.data(), chunk);
    if (w > 0) {
      total += static_cast<std::uint64_t>(w);
    } else {
      chunk /= 2;  // ENOSPC: smaller writes take the last pages
    }
  }
  std::error_code ec;
  const std::uint64_t free_after = std::filesystem::space(dir_.path, ec).available;
  std::this_thread::sleep_for(
      std::chrono::milliseconds(static_cast<int>(std::min(2.0, cfg_.seconds / 10) * 1000)));
  ::close(fd);
  ::unlink(path.c_str());
  chaos_.note(t, "fill");
  std::lock_guard<std::mutex> lock(chaos_.mu);
  chaos_.fills.push_back({t, now_ns()});
  chaos_.fill_bytes = total;
  chaos_.fill_free_after = free_after;
}

void Soak::restart_dispatcher() {
  // The pool back to size first, none of it signalled (a status taken after
  // the last kill), so that its replacements are counted.
  (void)mon_->wait_for(
      [this](const ipc::DispatcherStatus& s) {
        return s.workers.size() == kWorkers &&
               std::none_of(s.workers.begin(), s.workers.end(), [this](const auto& w) {
                 return signalled_.count(static_cast<pid_t>(w.pid)) > 0;
               });
      },
      20 * kSec);
  std::vector<pid_t> old_workers;
  if (auto s = mon_->last()) {
    for (const auto& w : s->workers) old_workers.push_back(static_cast<pid_t>(w.pid));
    std::lock_guard<std::mutex> lock(chaos_.mu);
    chaos_.started_before_kill = s->workers_started;
    chaos_.kills_before_restart = static_cast<std::uint64_t>(chaos_.worker_kills + chaos_.stops);
  }
  const std::int64_t t = now_ns();
  {
    std::lock_guard<std::mutex> lock(chaos_.mu);
    chaos_.dispatcher_kills.push_back(t);
    chaos_.timeline.emplace_back(t, "SIGKILL dispatcher");
  }
  ::kill(d_.pid, SIGKILL);
  reap(d_.pid, 10 * kSec);
  d2_from_ns_ = now_ns();  // a connection made from now on is the second dispatcher's
  d_.start();
  mon_->set_dispatcher(d_.pid);
  d2_listen_ns_ = now_ns();
  const std::int64_t end = now_ns() + 10 * kSec;
  bool gone = false;
  while (!gone && now_ns() < end) {
    gone = std::none_of(old_workers.begin(), old_workers.end(), alive);
    if (!gone) std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }
  std::lock_guard<std::mutex> lock(chaos_.mu);
  ++chaos_.dispatcher_restarts;
  chaos_.restart_s = secs(d2_listen_ns_ - t);
  chaos_.old_workers_gone = gone;
  if (!gone) chaos_.misses.push_back("workers of the SIGKILLed dispatcher still ran 10 s after");
}

// The chaos schedule, in fractions of the run: worker kills throughout, the
// stop at 10%, the client kill at 20%, the fill at 28%, the dispatcher's
// restart at 38%; kills stop at 90%.
void Soak::chaos() {
  std::mt19937_64 rng(0x50a4);
  const std::int64_t every = static_cast<std::int64_t>(std::clamp(cfg_.seconds / 16, 0.7, 5.0) * 1e9);
  struct Step {
    double at;
    int what;  // 1 stop, 2 client kill, 3 fill, 4 dispatcher restart
  };
  std::vector<Step> steps = {{0.10, 1}, {0.20, 2}, {0.28, 3}, {0.38, 4}};
  std::size_t next_step = 0;
  std::int64_t next_kill = at(0.05);
  while (!done_) {
    const std::int64_t step_t = next_step < steps.size() ? at(steps[next_step].at) : INT64_MAX;
    const std::int64_t t = std::min(step_t, next_kill);
    if (t > at(0.9) && next_step >= steps.size()) break;
    if (!sleep_until(t)) break;
    if (t == step_t) {
      switch (steps[next_step++].what) {
        case 1: stop_worker(); break;
        case 2: kill_client(); break;
        case 3: fill(); break;
        case 4: restart_dispatcher(); break;
      }
    } else {
      kill_worker(rng);
      next_kill = std::max(next_kill + every, now_ns() + every / 2);
    }
  }
}

int Soak::run() {
  dir_.make();
  char templ[] = "/tmp/kura-soak-sock.XXXXXX";
  if (::mkdtemp(templ) == nullptr) die("mkdtemp");
  sock_dir_ = templ;
  socket_ = sock_dir_ + "/d.sock";
  d_.kura = cfg_.kura;
  d_.socket = socket_;
  d_.log_dir = sock_dir_;
  if (!cfg_.r_libs.empty()) d_.worker_command = write_worker_script();
  d_.start();

  mon_ = std::make_unique<Monitor>(socket_, chaos_);
  mon_->set_dispatcher(d_.pid);
  mon_->start();
  auto pool_full = [](const ipc::DispatcherStatus& s) {
    return s.workers.size() == kWorkers &&
           std::all_of(s.workers.begin(), s.workers.end(), [](const auto& w) { return w.state == "idle"; });
  };
  if (!mon_->wait_for(pool_full, 30 * kSec))
    die("the first dispatcher's " + std::to_string(kWorkers) + " workers did not connect within 30 s");
  const int fd_base = fd_count(d_.pid);
  const auto regions_base = region_files(dir_.path);

  const std::uint64_t total = cfg_.per_client * kClients;
  start_ns_ = now_ns() + 200 * kMs;
  span_ns_ = static_cast<std::int64_t>(cfg_.seconds * 0.9 * 1e9);
  give_up_ns_ = start_ns_ + static_cast<std::int64_t>(cfg_.seconds * 2 * 1e9) + 60 * kSec;

  for (int id = kThreadClients; id < kClients; ++id) start_process_client(id, 0);
  std::vector<std::thread> threads;
  for (int id = 0; id < kThreadClients; ++id)
    threads.emplace_back([this, id] {
      ClientConfig c;
      c.id = id;
      c.socket = socket_;
      c.count = cfg_.per_client;
      c.start_ns = start_ns_;
      c.span_ns = span_ns_;
      c.give_up_ns = give_up_ns_;
      c.out = [this, id](const std::string& l) { ledger_.line(id, l.substr(0, l.size() - 1)); };
      (void)run_client(c);
      threads_done_.fetch_add(1);
    });
  std::thread chaos_thread([this] { chaos(); });
  std::thread watchdog_thread([this] { watchdog(); });

  // The steady phases: tasks 55-75% and 75-95% ended, after the restart.
  for (;;) {
    const double f = static_cast<double>(ledger_.ended.load()) / static_cast<double>(total);
    const bool restarted = d2_listen_ns_ != 0;
    mon_->set_phase(!restarted || f < 0.55 ? 0 : f < 0.75 ? 1 : f < 0.95 ? 2 : 0);
    if (f >= 0.95 || now_ns() > give_up_ns_) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  mon_->set_phase(0);
  for (auto& t : threads) t.join();
  for (;;) {
    ClientProc* p = nullptr;
    {
      std::lock_guard<std::mutex> lock(procs_mu_);
      for (auto& q : procs_)
        if (q->pid > 0) {
          p = q.get();
          break;
        }
    }
    if (!p) break;
    const int st = reap(p->pid, give_up_ns_ - now_ns() + 30 * kSec);
    if (st != 0) {
      std::lock_guard<std::mutex> lock(chaos_.mu);
      chaos_.misses.push_back("client process " + std::to_string(p->id) + " ended with status " +
                              std::to_string(st));
      if (st < 0) ::kill(p->pid, SIGKILL), reap(p->pid, 10 * kSec);
    }
    p->pid = -1;
    p->reader.join();
  }
  done_ = true;
  chaos_thread.join();
  const std::int64_t end_ns = now_ns();

  // The end state: pool back to size, idle; nothing queued or running. Only
  // a status asked for after every client ended shows it (and the final
  // counts below): one asked a moment before can show an idle pool between
  // two rounds of submits, the last rounds not yet counted.
  const bool pool_ok = mon_->wait_for(
      [&](const ipc::DispatcherStatus& s) { return pool_full(s) && s.awaiting == 0 && s.executing == 0; },
      30 * kSec, end_ns);
  std::vector<std::string> regions_end;
  for (const std::int64_t t = now_ns(); now_ns() < t + 20 * kSec;) {
    regions_end = region_files(dir_.path);
    if (regions_end == regions_base) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  int fd_end = fd_count(d_.pid);
  for (const std::int64_t t = now_ns(); fd_end != fd_base && now_ns() < t + 10 * kSec;
       fd_end = fd_count(d_.pid))
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  auto final_status = mon_->last();
  mon_->stop();

  std::string left, known;  // (whose() and when() take the locks)
  std::size_t unexplained = 0, on_kill = 0;
  for (const auto& f : regions_end) {
    if (std::find(regions_base.begin(), regions_base.end(), f) != regions_base.end()) continue;
    const std::string what = " " + f + " (" + whose(f) + "; " + when(f) + ")";
    if (written_as_dispatcher_died(f)) {
      ++on_kill;
      known += what;
      ::unlink((dir_.path + "/" + f).c_str());
    } else {
      ++unexplained;
      left += what;
    }
  }

  ::kill(d_.pid, SIGTERM);
  const int d_exit = reap(d_.pid, 30 * kSec);
  if (d_exit < 0) ::kill(d_.pid, SIGKILL), reap(d_.pid, 10 * kSec);

  std::lock_guard<std::mutex> lock(chaos_.mu);
  auto& m = chaos_.misses;
  std::ostringstream checks;
  auto check = [&](bool ok, const std::string& what) {
    checks << "  " << (ok ? "ok   " : "MISS ") << what << "\n";
    if (!ok) m.push_back(what);
  };
  check(chaos_.worker_kills > 0, "workers SIGKILLed: " + std::to_string(chaos_.worker_kills));
  check(chaos_.stops == 1 && chaos_.stop_dropped == 1,
        "worker SIGSTOPped past the " + std::to_string(kHeartbeatTimeoutMs) +
            " ms heartbeat deadline: " + std::to_string(chaos_.stops) + ", dropped by the dispatcher after " +
            std::to_string(chaos_.stop_drop_s).substr(0, 4) + " s, then SIGCONTed");
  check(chaos_.client_kills == 1 && chaos_.victim_prune_s >= 0,
        "client process SIGKILLed while holding " + std::to_string(chaos_.victim_held_at_kill) +
            " result regions: " + std::to_string(chaos_.client_kills) + "; its regions pruned after " +
            std::to_string(chaos_.victim_prune_s).substr(0, 4) + " s");
  check(!chaos_.fills.empty(),
        "region directory filled" +
            (dir_.private_tmpfs
                 ? " to the brim (a private tmpfs of " + std::to_string(kTmpfsBytes >> 20) + " MiB)"
                 : " by " + std::to_string(kFallbackFillBytes >> 20) +
                       " MiB only (no private tmpfs could be mounted; " + dir_.path +
                       " is on a shared file system)") +
            ": " + std::to_string(chaos_.fill_bytes >> 10) + " KiB written, " +
            std::to_string(chaos_.fill_free_after >> 10) + " KiB free, for " +
            (chaos_.fills.empty()
                 ? std::string("0")
                 : std::to_string(secs(chaos_.fills[0].to - chaos_.fills[0].from)).substr(0, 4)) +
            " s");
  check(
      chaos_.dispatcher_restarts == 1 && chaos_.old_workers_gone,
      "dispatcher SIGKILLed and restarted on the same socket: " + std::to_string(chaos_.dispatcher_restarts) +
          ", listening again after " + std::to_string(chaos_.restart_s).substr(0, 4) +
          " s; the old one's workers gone: " + (chaos_.old_workers_gone ? "yes" : "NO"));
  const std::uint64_t d1_replaced =
      chaos_.started_before_kill > kWorkers ? chaos_.started_before_kill - kWorkers : 0;
  const std::uint64_t d2_replaced =
      final_status && final_status->workers_started > kWorkers ? final_status->workers_started - kWorkers : 0;
  const std::uint64_t worker_losses = static_cast<std::uint64_t>(chaos_.worker_kills + chaos_.stops);
  const std::uint64_t d2_losses = worker_losses - chaos_.kills_before_restart;
  check(d1_replaced >= chaos_.kills_before_restart && d2_replaced >= d2_losses,
        "workers replaced: " + std::to_string(d1_replaced) + " by the first dispatcher (" +
            std::to_string(chaos_.kills_before_restart) + " killed or stopped), " +
            std::to_string(d2_replaced) + " by the second (" + std::to_string(d2_losses) +
            "); dropped by the second: " + std::to_string(final_status ? final_status->workers_dropped : 0));
  check(pool_ok, "pool back to " + std::to_string(kWorkers) + " idle workers, nothing awaiting or executing");
  if (!cfg_.r_libs.empty()) {
    const auto [seen, r_seen] = mon_->workers_seen();
    check(r_seen > 0 && r_seen < seen, "R workers in the pool: " + std::to_string(r_seen) + " of the " +
                                           std::to_string(seen) + " workers seen (the others kura's own)");
  }
  check(unexplained == 0,
        "region directory back to baseline: " + std::to_string(regions_base.size()) +
            " region files before, " + std::to_string(regions_end.size()) + " after" +
            (on_kill > 0 ? " (" + std::to_string(on_kill) + " known, below)" : std::string()) + left);
  if (on_kill > 0)
    checks << "  known " << on_kill
           << " result region(s) published as the dispatcher was SIGKILLed, never reported, left under a "
              "live client (a known defect, removed here):"
           << known << "\n";
  check(fd_end == fd_base, "dispatcher descriptors back to baseline: " + std::to_string(fd_base) +
                               " (first dispatcher, " + std::to_string(kWorkers) + " workers, 1 client), " +
                               std::to_string(fd_end) + " at the end (second)");
  const std::int64_t r1 = mon_->peak(1), r2 = mon_->peak(2);
  const std::int64_t bound = static_cast<std::int64_t>(static_cast<double>(r1) * kRssFactor) + kRssSlackKiB;
  if (!cfg_.rss_bound)
    checks
        << "  --   dispatcher VmRSS not bounded (--no-rss-bound: a sanitizer build, whose quarantine keeps "
           "freed memory): "
        << r1 << " KiB in steady phase 1, " << r2 << " KiB in phase 2\n";
  else
    check(r1 > 0 && r2 > 0 && r2 <= bound,
          "dispatcher VmRSS: peak " + std::to_string(r1) + " KiB in steady phase 1 (tasks 55-75%), " +
              std::to_string(r2) + " KiB in phase 2 (75-95%); bound " + std::to_string(bound) +
              " KiB (phase 1 x 1.10 + 4 MiB); " +
              std::to_string((r2 - r1) * 1024 /
                             std::max<std::int64_t>(1, static_cast<std::int64_t>(total / 5))) +
              " bytes per task");
  check(final_status && final_status->queued_peak <= kMemoryCapBytes &&
            final_status->queued_cap == kMemoryCapBytes,
        "queued bytes under the cap: peak " + std::to_string(final_status ? final_status->queued_peak : 0) +
            " of " + std::to_string(kMemoryCapBytes));
  check(d_exit == 0, "second dispatcher exited 0 on SIGTERM");
  std::uint64_t to_d2 = 0;
  {
    std::lock_guard<std::mutex> l2(ledger_.mu);
    for (const auto& r : ledger_.records)
      if (r.submitted && r.conn_t >= d2_from_ns_) ++to_d2;
  }
  // Every task the clients submitted on a connection to the second
  // dispatcher ended there with a result (the clients judged each above),
  // and its counter counts exactly those (DispatcherStatus::completed).
  const std::uint64_t completed = final_status ? final_status->completed : 0;
  check(final_status && completed == to_d2,
        "second dispatcher's completed count " + std::to_string(completed) +
            " = tasks the clients submitted to it " + std::to_string(to_d2));
  checks_ = checks.str();
  run_s_ = secs(end_ns - start_ns_);
  d_logs_ = d_.tail_logs();
  const int rc = judge();
  finished_ = true;
  watchdog_thread.join();
  dir_.remove();
  std::error_code ec;
  std::filesystem::remove_all(sock_dir_, ec);
  return rc;
}

bool overlaps(const Interval& i, std::int64_t from, std::int64_t to) {
  return i.from <= to && i.to >= from;
}

int Soak::judge() {
  std::lock_guard<std::mutex> lock(ledger_.mu);
  std::uint64_t by_kind[kKinds][kGots] = {};
  std::uint64_t miss_kind[kKinds] = {};
  std::uint64_t by_client[kClients][kGots] = {};
  std::uint64_t miss_client[kClients] = {};
  std::vector<std::string> samples;
  std::uint64_t duplicates = 0, lost = 0, wrong = 0;
  auto miss = [&](int client, const Task& t, const std::string& why) {
    ++miss_kind[static_cast<int>(t.kind)];
    ++miss_client[client];
    if (samples.size() < 12) samples.push_back(why);
  };
  auto explained = [&](const Task& t, const Record& r) -> bool {
    switch (r.got) {
      case Got::kWorkerLost: {
        unsigned n = 0;
        // From 1 s before the submit: a worker killed a moment ago may still
        // be given a task before the dispatcher sees it gone.
        for (const auto& e : chaos_.worker_events) n += overlaps(e, r.t0 - kSec, r.t1 + 200 * kMs) ? 1 : 0;
        return n >= t.retries + 1;
      }
      case Got::kDisconnected:
        return std::any_of(chaos_.dispatcher_kills.begin(), chaos_.dispatcher_kills.end(),
                           [&](std::int64_t k) { return r.conn_t <= k && k <= r.t1; });
      case Got::kNoSpace:
      case Got::kError:
        return (r.got == Got::kNoSpace || r.message.find(" free") != std::string::npos) &&
               std::any_of(chaos_.fills.begin(), chaos_.fills.end(),
                           [&](const Interval& f) { return overlaps(f, r.t0 - 10 * kMs, r.t1 + 10 * kMs); });
      default: return false;
    }
  };
  std::set<std::pair<int, std::uint64_t>> seen;
  for (const Record& r : ledger_.records) {
    const Task t = plan(r.client, r.index);
    if (r.client < 0 || r.client >= kClients || r.index >= cfg_.per_client) {
      ledger_.errors.push_back("a record of a task outside the plan: client " + std::to_string(r.client));
      continue;
    }
    ++by_kind[static_cast<int>(t.kind)][static_cast<int>(r.got)];
    ++by_client[r.client][static_cast<int>(r.got)];
    const std::string what = "client " + std::to_string(r.client) + " task " + std::to_string(r.index) +
                             " (" + kind_name(t.kind) + ", retries " + std::to_string(t.retries) +
                             "): " + got_name(r.got) + (r.message.empty() ? "" : ": " + r.message);
    if (!seen.insert({r.client, r.index}).second) {
      ++duplicates;
      miss(r.client, t, "duplicated: " + what);
      continue;
    }
    bool expected = false;
    switch (t.kind) {
      case TaskKind::kFail:
      case TaskKind::kUnknown: expected = r.got == Got::kError && r.verified; break;
      case TaskKind::kCancel: expected = r.got == Got::kCancelled; break;
      case TaskKind::kTimeout: expected = r.got == Got::kTimeout; break;
      case TaskKind::kRaceCancel:
        expected = r.got == Got::kCancelled || (r.got == Got::kOk && r.verified);
        break;
      default: expected = r.got == Got::kOk && r.verified; break;
    }
    if (expected || explained(t, r)) continue;
    if (r.got == Got::kLost) ++lost;
    if ((r.got == Got::kOk || r.got == Got::kError) && !r.verified) ++wrong;
    std::string since;  // where a lost task sits against the dispatcher's restart
    if (r.got == Got::kLost && !chaos_.dispatcher_kills.empty())
      since = "; submitted " + std::to_string(secs(r.t0 - chaos_.dispatcher_kills.front())).substr(0, 6) +
              " s after the dispatcher was killed";
    miss(r.client, t, (r.got == Got::kOk && !r.verified ? "wrong value: " : "unexplained: ") + what + since);
  }
  std::uint64_t abandoned = 0;
  for (int c = 0; c < kClients; ++c)
    for (std::uint64_t i = 0; i < cfg_.per_client; ++i) {
      if (seen.count({c, i})) continue;
      const Task t = plan(c, i);
      if (c == kVictim && ledger_.open[c].count(i)) {  // in flight in the killed process
        ++abandoned;
        ++by_kind[static_cast<int>(t.kind)][static_cast<int>(Got::kAbandoned)];
        ++by_client[c][static_cast<int>(Got::kAbandoned)];
        continue;
      }
      ++lost;
      ++by_kind[static_cast<int>(t.kind)][static_cast<int>(Got::kLost)];
      ++by_client[c][static_cast<int>(Got::kLost)];
      miss(c, t,
           "lost: client " + std::to_string(c) + " task " + std::to_string(i) + " (" + kind_name(t.kind) +
               ") has no result");
    }

  const std::uint64_t total = cfg_.per_client * kClients;
  std::printf("kura soak: %.0f s asked, %.1f s run; %" PRIu64
              " tasks by %d clients (%d threads, %d processes); one `kura dispatcher` process, %u workers, "
              "--memory %s, "
              "--heartbeat-timeout %d, --window 1 (4 after the first restart, 1 after the next)\n\n",
              cfg_.seconds, run_s_, total, kClients, kThreadClients, kClients - kThreadClients, kWorkers,
              kMemoryCap, kHeartbeatTimeoutMs);
  auto header = [](const char* first) {
    std::printf("%-14s %7s", first, "tasks");
    for (int g = 0; g < kGots; ++g) std::printf(" %12s", got_name(static_cast<Got>(g)));
    std::printf(" %6s\n", "miss");
  };
  auto row = [](const std::string& name, const std::uint64_t* counts, std::uint64_t misses) {
    std::uint64_t n = 0;
    for (int g = 0; g < kGots; ++g) n += counts[g];
    std::printf("%-14s %7" PRIu64, name.c_str(), n);
    for (int g = 0; g < kGots; ++g) std::printf(" %12" PRIu64, counts[g]);
    std::printf(" %6" PRIu64 "\n", misses);
  };
  std::printf(
      "Tasks by what the client expected (rows) and what it got (columns). Expected: ok, except fail and\n"
      "unknown fn: error, cancel: cancelled, timeout: timeout, race cancel: ok or cancelled. The chaos may\n"
      "also explain worker-lost (kills or stops from 1 s before the task to its end, more than its "
      "retries),\n"
      "disconnected (the dispatcher killed while its connection was up), no-space or an error naming the\n"
      "free space (during the fill), abandoned (in flight in the killed client process). miss: anything "
      "else.\n");
  header("expected");
  std::uint64_t sum[kGots] = {}, misses = 0;
  for (int k = 0; k < kKinds; ++k) {
    row(kind_name(static_cast<TaskKind>(k)), by_kind[k], miss_kind[k]);
    for (int g = 0; g < kGots; ++g) sum[g] += by_kind[k][g];
    misses += miss_kind[k];
  }
  row("all", sum, misses);
  std::printf("\n");
  header("client");
  for (int c = 0; c < kClients; ++c)
    row(std::to_string(c) + (c < kThreadClients ? " thread"
                             : c == kVictim     ? " proc,killed"
                                                : " process"),
        by_client[c], miss_client[c]);
  std::printf("\nChecks:\n");
  auto& m = chaos_.misses;
  std::printf("  %s %" PRIu64 " lost, %" PRIu64 " duplicated, %" PRIu64 " wrong values, %" PRIu64
              " unexplained kinds (%" PRIu64 " abandoned with the killed client)\n",
              misses == 0 ? "ok  " : "MISS", lost, duplicates, wrong, misses - lost - duplicates - wrong,
              abandoned);
  if (misses > 0) m.push_back(std::to_string(misses) + " tasks missed");
  for (const auto& e : ledger_.errors) m.push_back("client said: " + e);
  std::fputs(checks_.c_str(), stdout);
  if (!samples.empty()) {
    std::printf("\nFirst missed tasks:\n");
    for (const auto& s : samples) std::printf("  %s\n", s.c_str());
  }
  if (m.empty()) {
    std::printf("\nPASS\n");
    return 0;
  }
  std::printf("\nFAIL:\n");
  for (const auto& s : m) std::printf("  %s\n", s.c_str());
  std::printf("\n%s", d_logs_.c_str());
  return 1;
}

// Writes a whole line to standard output (one write: lines of a client
// process never interleave).
void write_line(const std::string& l) {
  const char* p = l.data();
  std::size_t n = l.size();
  while (n > 0) {
    const ssize_t w = ::write(1, p, n);
    if (w <= 0) return;
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

int usage() {
  std::cerr << "usage: kura_soak --kura PATH [--seconds S] [--no-rss-bound] [--r-libs DIR]\n"
               "  --r-libs DIR: each worker the dispatchers start is, at random, an R worker (the R\n"
               "    package installed in DIR, serving kura's functions on R's main thread) or kura's own.\n"
               "  S >= 10 (default 60): 100,000 tasks at 60 s and above, in proportion below.\n"
               "  --no-rss-bound: report the dispatcher's resident memory without bounding it (sanitizer "
               "builds).\n";
  return 2;
}

}  // namespace
}  // namespace kura::soak

int main(int argc, char** argv) {
  using namespace kura::soak;
  ::signal(SIGPIPE, SIG_IGN);
  std::map<std::string, std::string> opt;
  bool hold = false, no_rss_bound = false;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--hold") {
      hold = true;
    } else if (a == "--no-rss-bound") {
      no_rss_bound = true;
    } else if (a.rfind("--", 0) == 0 && i + 1 < argc) {
      opt[a.substr(2)] = argv[++i];
    } else {
      return usage();
    }
  }
  if (opt.count("client")) {
    ClientConfig c;
    c.id = std::atoi(opt["client"].c_str());
    c.socket = opt["socket"];
    c.first = std::strtoull(opt["first"].c_str(), nullptr, 10);
    c.count = std::strtoull(opt["count"].c_str(), nullptr, 10);
    c.start_ns = std::strtoll(opt["start"].c_str(), nullptr, 10);
    c.span_ns = std::strtoll(opt["span"].c_str(), nullptr, 10);
    c.give_up_ns = std::strtoll(opt["give-up"].c_str(), nullptr, 10);
    c.hold_results = hold;
    c.out = write_line;
    return run_client(c);
  }
  if (!opt.count("kura")) return usage();
  Config cfg;
  cfg.kura = opt["kura"];
  cfg.rss_bound = !no_rss_bound;
  if (opt.count("r-libs")) cfg.r_libs = opt["r-libs"];
  if (opt.count("seconds")) cfg.seconds = std::atof(opt["seconds"].c_str());
  if (!(cfg.seconds >= 10)) return usage();
  std::error_code ec;
  cfg.self = std::filesystem::read_symlink("/proc/self/exe", ec).string();
  if (ec) die("cannot read /proc/self/exe");
  cfg.per_client = static_cast<std::uint64_t>(100000.0 * std::min(1.0, cfg.seconds / 60.0)) / kClients;
  Soak soak(cfg);
  return soak.run();
}
