// An embedded dispatcher for a benchmark program: its socket in a private
// /tmp directory, its managed workers, and one client, connected once every
// worker has connected (so no benchmark times a worker starting up).
#pragma once

#include <stdlib.h>
#include <unistd.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "bench_util.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"

namespace kura::bench {

class DispatcherPool {
 public:
  // Starts a dispatcher with `o` (its socket_path and log are set here) and
  // waits for its o.workers workers. Dies (die()) on any error.
  explicit DispatcherPool(ipc::DispatcherOptions o) {
    char dir[] = "/tmp/kura-bench.XXXXXX";
    if (::mkdtemp(dir) == nullptr) die("mkdtemp");
    dir_ = dir;
    o.socket_path = dir_ + "/d.sock";
    o.log = [](const std::string&) {};
    const std::size_t workers = o.workers;
    auto d = ipc::Dispatcher::start(std::move(o));
    if (!d) die(d.status().to_string());
    dispatcher_ = std::move(d).value();
    auto c = ipc::Client::connect(dispatcher_->socket_path());
    if (!c) die(c.status().to_string());
    client_ = std::move(c).value();
    for (;;) {  // until every worker has connected (each status() is a round trip)
      auto s = client_->status();
      if (!s) die(s.status().to_string());
      if (s->workers.size() == workers) {
        for (const auto& w : s->workers) worker_pids_.push_back(w.pid);
        break;
      }
    }
  }
  DispatcherPool(const DispatcherPool&) = delete;
  DispatcherPool& operator=(const DispatcherPool&) = delete;
  // Disconnects, stops the dispatcher and its workers, removes the directory.
  ~DispatcherPool() {
    client_.reset();
    dispatcher_.reset();
    ::unlink((dir_ + "/d.sock").c_str());
    ::rmdir(dir_.c_str());
  }

  ipc::Client& client() { return *client_; }
  ipc::Dispatcher& dispatcher() { return *dispatcher_; }
  // The workers' process ids, as they first connected.
  const std::vector<std::int64_t>& worker_pids() const { return worker_pids_; }

 private:
  std::string dir_;
  std::unique_ptr<ipc::Dispatcher> dispatcher_;
  std::unique_ptr<ipc::Client> client_;
  std::vector<std::int64_t> worker_pids_;
};

}  // namespace kura::bench
