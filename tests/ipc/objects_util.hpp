// Shared pieces of the tests of objects that follow names (issue 16): a
// worker whose region directory is not the dispatcher's, on loopback TCP.
#pragma once

#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <functional>
#include <memory>
#include <span>
#include <string>
#include <vector>

#include "ipc_util.hpp"
#include "kura/shm/region.hpp"
#include "private_shm_dir.hpp"

namespace kura::test {

// A region directory of its own for the "remote" worker, beside the test's:
// it cannot map a single one of the test's regions by name.
class RemoteDir {
 public:
  RemoteDir() {
    const std::string base = shm_dir().substr(0, shm_dir().rfind('/'));
    std::string templ = base + "/kura-remote.XXXXXX";
    REQUIRE(::mkdtemp(templ.data()) != nullptr);
    path_ = templ;
    ::chmod(path_.c_str(), 0700);
  }
  ~RemoteDir() {
    for (const std::string& f : files()) ::unlink((path_ + "/" + f).c_str());
    ::rmdir(path_.c_str());
  }
  const std::string& path() const { return path_; }
  // The files there, leases left out.
  std::vector<std::string> regions() const {
    std::vector<std::string> out;
    for (const std::string& f : files())
      if (f.find(".lock") == std::string::npos) out.push_back(f);
    return out;
  }

 private:
  std::vector<std::string> files() const {
    std::vector<std::string> out;
    if (DIR* d = ::opendir(path_.c_str())) {
      while (dirent* e = ::readdir(d))
        if (e->d_name[0] != '.') out.emplace_back(e->d_name);
      ::closedir(d);
    }
    return out;
  }
  std::string path_;
};

inline std::string make_secret(const SocketDir& dir) {
  const std::string path = dir.dir() + "/secret";
  auto r = run({kKura, "secret", path});
  INFO(r.err);
  REQUIRE(r.code == 0);
  return path;
}

// The kura tool as a worker in `remote`'s region directory, connecting to
// `address`.
inline std::unique_ptr<Process> remote_worker(const RemoteDir& remote, const std::string& address,
                                              const std::string& secret,
                                              const std::vector<std::string>& extra = {}) {
  std::vector<std::string> argv{
      "/usr/bin/env", "KURA_SHM_DIR=" + remote.path(), kKura, "worker", "--connect", address, "--secret-file",
      secret};
  argv.insert(argv.end(), extra.begin(), extra.end());
  return std::make_unique<Process>(argv);
}

inline std::function<void(ipc::DispatcherOptions&)> on_loopback(const std::string& secret_file) {
  return [secret_file](ipc::DispatcherOptions& o) {
    o.tcp_listen = "tcp://127.0.0.1:0";
    o.secret_file = secret_file;
  };
}

inline ipc::TaskResult run_task(ipc::Client& c, ipc::Call task) {
  auto id = c.submit(std::move(task));
  REQUIRE(id.is_ok());
  return c.wait(*id);
}

inline double f64_at(const NodeView& v, std::size_t i) {
  auto xs = v.array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  REQUIRE(xs->size() > i);
  return (*xs)[i];
}

inline shm::Shared share_f64(std::size_t n, double scale, bool hashed = true) {
  std::vector<double> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = scale * static_cast<double>(i);
  shm::ShareOptions o;
  o.hashed = hashed;
  auto s = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)), o);
  REQUIRE(s.is_ok());
  return std::move(s).value();
}

// A dispatcher listening on loopback TCP, one worker in a region directory
// of its own connected to it (started with `worker_extra`), and a client.
struct RemoteSetup {
  explicit RemoteSetup(const std::vector<std::string>& worker_extra = {})
      : worker(remote_worker(remote, d.get().tcp_address(), secret, worker_extra)) {
    wait_workers(*c, 1);
  }
  SocketDir dir;
  RemoteDir remote;
  std::string secret = make_secret(dir);
  EmbeddedDispatcher d{dir, 0, on_loopback(secret)};
  std::unique_ptr<Process> worker;
  std::unique_ptr<ipc::Client> c = connect(d.socket());
};

}  // namespace kura::test
