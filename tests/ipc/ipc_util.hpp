// Shared pieces of the dispatcher tests: a private socket directory, an
// embedded dispatcher whose log the test can wait on, the kura binary as a
// dispatcher process, and bounded waits.
#pragma once

#include <dirent.h>
#include <signal.h>
#include <stdlib.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "process.hpp"

namespace kura::test {

inline const std::string kKura = KURA_TOOL_PATH;

// A 0700 directory for sockets, removed with what is in it.
class SocketDir {
 public:
  SocketDir() {
    char templ[] = "/tmp/kura-sock.XXXXXX";
    REQUIRE(::mkdtemp(templ) != nullptr);
    dir_ = templ;
  }
  ~SocketDir() {
    if (DIR* d = ::opendir(dir_.c_str())) {
      while (dirent* de = ::readdir(d)) {
        std::string f = de->d_name;
        if (f != "." && f != "..") ::unlink((dir_ + "/" + f).c_str());
      }
      ::closedir(d);
    }
    ::rmdir(dir_.c_str());
  }
  const std::string& dir() const { return dir_; }
  std::string socket() const { return dir_ + "/d.sock"; }

 private:
  std::string dir_;
};

// Calls `pred` until it holds or `timeout` passes (then FAILs saying `what`).
// For conditions that no event announces (a process gone, a pool refilled);
// each look is a cheap query, not a guess at how long something takes.
inline void eventually(const std::function<bool()>& pred, std::chrono::milliseconds timeout,
                       const std::string& what) {
  const auto deadline = std::chrono::steady_clock::now() + timeout;
  while (!pred()) {
    if (std::chrono::steady_clock::now() > deadline)
      FAIL("timed out after " << timeout.count() << " ms waiting for " << what);
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// A dispatcher on a thread of the test process, its workers the kura tool
// (plus `worker_extra` arguments, e.g. a plugin), its log kept.
class EmbeddedDispatcher {
 public:
  explicit EmbeddedDispatcher(const SocketDir& dir, unsigned workers = 2, std::uint64_t memory = 0,
                              std::vector<std::string> worker_extra = {}) {
    ipc::DispatcherOptions o;
    o.socket_path = dir.socket();
    o.workers = workers;
    o.memory = memory;
    o.worker_command = {kKura, "worker", "--connect", "{socket}"};
    o.worker_command.insert(o.worker_command.end(), worker_extra.begin(), worker_extra.end());
    o.log = [this](const std::string& line) {
      std::lock_guard<std::mutex> lock(mu_);
      log_.push_back(line);
      cv_.notify_all();
    };
    auto d = ipc::Dispatcher::start(std::move(o));
    INFO((d.is_ok() ? std::string() : d.status().to_string()));
    REQUIRE(d.is_ok());
    d_ = std::move(d).value();
  }
  ipc::Dispatcher& get() { return *d_; }
  const std::string& socket() const { return d_->socket_path(); }
  void stop() { d_->stop(); }

  // Waits until a log line containing `text` has been written.
  bool wait_log(const std::string& text, std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    std::unique_lock<std::mutex> lock(mu_);
    return cv_.wait_for(lock, timeout, [&] {
      for (const auto& l : log_)
        if (l.find(text) != std::string::npos) return true;
      return false;
    });
  }
  std::string log() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& l : log_) out += l + "\n";
    return out;
  }

 private:
  std::mutex mu_;
  std::condition_variable cv_;
  std::vector<std::string> log_;
  std::unique_ptr<ipc::Dispatcher> d_;
};

inline std::unique_ptr<ipc::Client> connect(const std::string& socket) {
  auto c = ipc::Client::connect(socket);
  INFO((c.is_ok() ? std::string() : c.status().to_string()));
  REQUIRE(c.is_ok());
  return std::move(c).value();
}

inline ipc::DispatcherStatus status_of(ipc::Client& c) {
  auto s = c.status();
  INFO((s.is_ok() ? std::string() : s.status().to_string()));
  REQUIRE(s.is_ok());
  return std::move(s).value();
}

// Waits until the dispatcher reports `n` connected workers, all idle.
inline void wait_workers(ipc::Client& c, std::size_t n) {
  eventually(
      [&] {
        auto s = c.status();
        if (!s || s->workers.size() != n) return false;
        for (const auto& w : s->workers)
          if (w.state != "idle") return false;
        return true;
      },
      std::chrono::seconds(20), std::to_string(n) + " idle workers");
}

inline ipc::Call call(std::string fn, std::vector<ipc::Arg> args = {}) {
  return ipc::Call{std::move(fn), std::move(args)};
}
inline ipc::Arg num(double x) {
  return ipc::Arg::copy(Value::f64({x}));
}

// The number of open descriptors of process `pid`.
inline int fd_count(pid_t pid) {
  int n = 0;
  if (DIR* d = ::opendir(("/proc/" + std::to_string(pid) + "/fd").c_str())) {
    while (dirent* de = ::readdir(d))
      if (de->d_name[0] != '.') ++n;
    ::closedir(d);
  }
  return n;
}

inline bool process_alive(pid_t pid) {
  return ::kill(pid, 0) == 0;
}

}  // namespace kura::test
