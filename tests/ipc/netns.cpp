// RemoteHost (netns.hpp): namespaces through iproute2 and util-linux, run
// as commands with bounded waits.
#include "netns.hpp"

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cerrno>
#include <cstdlib>
#include <sstream>

#include "process.hpp"

namespace kura::test {

namespace {

constexpr const char* kPrefix = "kura-t";  // then the pid, a count and -d or -w

// The absolute path of the program `name` (the test spawns without a
// shell), or "" when there is none.
std::string find_program(const std::string& name) {
  std::string path = std::getenv("PATH") != nullptr ? std::getenv("PATH") : "";
  path += ":/usr/sbin:/sbin:/usr/bin:/bin";
  std::istringstream dirs(path);
  for (std::string dir; std::getline(dirs, dir, ':');) {
    if (dir.empty()) continue;
    const std::string p = dir + "/" + name;
    if (::access(p.c_str(), X_OK) == 0) return p;
  }
  return "";
}

const std::string& ip() {
  static const std::string p = find_program("ip");
  return p;
}

// Runs `argv`; "" when it succeeded, else what it said.
std::string try_run(const std::vector<std::string>& argv) {
  RunResult r = run(argv, {}, std::chrono::seconds(20));
  if (r.code == 0) return "";
  std::string words;
  for (const auto& a : argv) words += (words.empty() ? "" : " ") + a;
  return "`" + words + "` failed (" + std::to_string(r.code) + "): " + r.err;
}

// Namespaces of earlier test processes that were killed before they could
// remove theirs.
void remove_stale_namespaces() {
  RunResult r = run({ip(), "netns", "list"}, {}, std::chrono::seconds(20));
  std::istringstream lines(r.out);
  for (std::string line; std::getline(lines, line);) {
    const std::string name = line.substr(0, line.find(' '));
    if (name.rfind(kPrefix, 0) != 0) continue;
    const long pid = std::strtol(name.c_str() + std::char_traits<char>::length(kPrefix), nullptr, 10);
    if (pid > 0 && ::kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH)
      (void)try_run({ip(), "netns", "del", name});
  }
}

void remove_dir(const std::string& dir) {
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* de = ::readdir(d)) {
      const std::string f = de->d_name;
      if (f != "." && f != "..") ::unlink((dir + "/" + f).c_str());
    }
    ::closedir(d);
  }
  ::rmdir(dir.c_str());
}

}  // namespace

RemoteHost::RemoteHost() {
  static std::atomic<int> count{0};
  const std::string base = kPrefix + std::to_string(::getpid()) + "-" + std::to_string(count++);
  if (std::getenv("KURA_TEST_NO_NAMESPACES") != nullptr) {
    why_not_ = "KURA_TEST_NO_NAMESPACES is set";
  } else if (::geteuid() != 0) {
    why_not_ = "not root (euid " + std::to_string(::geteuid()) +
               "): network and mount namespaces need CAP_SYS_ADMIN and CAP_NET_ADMIN";
  } else if (ip().empty() || find_program("unshare").empty()) {
    why_not_ = "iproute2's ip or util-linux's unshare is not installed";
  } else {
    remove_stale_namespaces();
    why_not_ = try_run({ip(), "netns", "add", base + "-d"});
    if (why_not_.empty()) {
      dispatcher_ns_ = base + "-d";
      why_not_ = try_run({ip(), "netns", "add", base + "-w"});
    }
    if (why_not_.empty()) {
      worker_ns_ = base + "-w";
      for (const std::vector<std::string>& cmd :
           {std::vector<std::string>{ip(), "link", "add", "kd0", "netns", dispatcher_ns_, "type", "veth",
                                     "peer", "name", "kw0", "netns", worker_ns_},
            {ip(), "-n", dispatcher_ns_, "addr", "add", "10.88.0.1/24", "dev", "kd0"},
            {ip(), "-n", worker_ns_, "addr", "add", "10.88.0.2/24", "dev", "kw0"},
            {ip(), "-n", dispatcher_ns_, "link", "set", "lo", "up"},
            {ip(), "-n", worker_ns_, "link", "set", "lo", "up"},
            {ip(), "-n", dispatcher_ns_, "link", "set", "kd0", "up"},
            {ip(), "-n", worker_ns_, "link", "set", "kw0", "up"}}) {
        why_not_ = try_run(cmd);
        if (!why_not_.empty()) break;
      }
    }
    isolated_ = why_not_.empty();
    if (!isolated_) why_not_ = "namespaces refused here: " + why_not_;
  }
  if (isolated_) {
    // A mount point: the worker's namespace mounts its tmpfs here.
    char templ[] = "/tmp/kura-remote.XXXXXX";
    REQUIRE(::mkdtemp(templ) != nullptr);
    region_dir_ = templ;
  } else {
    for (const std::string& ns : {worker_ns_, dispatcher_ns_})
      if (!ns.empty()) (void)try_run({ip(), "netns", "del", ns});
    worker_ns_.clear();
    dispatcher_ns_.clear();
    char templ[] = "/dev/shm/kura-remote.XXXXXX";
    REQUIRE(::mkdtemp(templ) != nullptr);
    region_dir_ = templ;
  }
}

RemoteHost::~RemoteHost() {
  // The veth pair goes with the namespaces; the worker's mounts went with
  // its mount namespace when it exited.
  for (const std::string& ns : {worker_ns_, dispatcher_ns_})
    if (!ns.empty()) (void)try_run({ip(), "netns", "del", ns});
  remove_dir(region_dir_);
}

std::vector<std::string> RemoteHost::in_dispatcher(const std::vector<std::string>& argv) const {
  if (!isolated_) return argv;
  std::vector<std::string> out{ip(), "netns", "exec", dispatcher_ns_};
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

std::vector<std::string> RemoteHost::in_worker(const std::vector<std::string>& argv) const {
  std::vector<std::string> out;
  if (!isolated_) {
    out = {find_program("env"), "KURA_SHM_DIR=" + region_dir_};
  } else {
    const char* theirs = std::getenv("KURA_SHM_DIR");
    // A tmpfs of its own as its region directory, and an empty one over the
    // test's (the dispatcher's): mounted in a mount namespace of its own, so
    // they go when it exits.
    out = {ip(),
           "netns",
           "exec",
           worker_ns_,
           find_program("unshare"),
           "--mount",
           "--propagation",
           "private",
           "--",
           find_program("sh"),
           "-c",
           "mount -t tmpfs -o mode=0700,size=256m kura-regions \"$1\" && "
           "mount -t tmpfs -o mode=0700,size=1m kura-hidden \"$2\" && "
           "KURA_SHM_DIR=\"$1\" && export KURA_SHM_DIR && shift 2 && exec \"$@\"",
           "kura-remote-worker",
           region_dir_,
           theirs != nullptr && *theirs != '\0' ? theirs : "/dev/shm"};
  }
  out.insert(out.end(), argv.begin(), argv.end());
  return out;
}

void RemoteHost::cut() {
  REQUIRE(isolated_);
  const std::string failed = try_run({ip(), "-n", worker_ns_, "link", "set", "kw0", "down"});
  INFO(failed);
  REQUIRE(failed.empty());
}

void RemoteHost::heal() {
  REQUIRE(isolated_);
  const std::string failed = try_run({ip(), "-n", worker_ns_, "link", "set", "kw0", "up"});
  INFO(failed);
  REQUIRE(failed.empty());
}

}  // namespace kura::test
