// Shared pieces of the dispatcher tests: a private socket directory, an
// embedded dispatcher whose log the test can wait on, the kura binary as a
// dispatcher process, and bounded waits.
#pragma once

#include <dirent.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/frame.hpp"
#include "kura/ipc/worker.hpp"
#include "kura/shm/owner.hpp"
#include "message_internal.hpp"
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
                              std::vector<std::string> worker_extra = {})
      : EmbeddedDispatcher(
            dir, workers, [memory](ipc::DispatcherOptions& o) { o.memory = memory; },
            std::move(worker_extra)) {}
  // The same, with `configure` setting any other options (heartbeats,
  // bounds) before it starts.
  EmbeddedDispatcher(const SocketDir& dir, unsigned workers,
                     const std::function<void(ipc::DispatcherOptions&)>& configure,
                     std::vector<std::string> worker_extra = {}) {
    ipc::DispatcherOptions o;
    o.socket_path = dir.socket();
    o.workers = workers;
    o.worker_command = ipc::Worker::command(kKura);
    o.worker_command.insert(o.worker_command.end(), worker_extra.begin(), worker_extra.end());
    configure(o);
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

// The one f64 of an ok result.
inline double number(const ipc::TaskResult& r) {
  REQUIRE(r.ok());
  auto xs = r.value().array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  REQUIRE(xs->size() == 1);
  return (*xs)[0];
}

// The first string of an ok result (the test plugin's get_tag).
inline std::string tag_of(const ipc::TaskResult& r) {
  INFO(r.describe());
  REQUIRE(r.ok());
  auto s = r.value().string(0);
  REQUIRE(s.is_ok());
  return std::string(s->bytes);
}

// The payload size of a submit of sleep(x): every number gives the same.
inline std::uint64_t sleep_payload() {
  auto probe = ipc::detail::encode_submit(call("sleep", {num(0.0)}), 1, {});
  REQUIRE(probe.is_ok());
  return probe->size();
}

// Submits `n` sleep(0)s with try_submit, each of which must be admitted
// (the queue has room for them); returns their ids.
inline std::vector<ipc::TaskId> try_fill(ipc::Client& c, int n) {
  std::vector<ipc::TaskId> ids;
  for (int i = 0; i < n; ++i) {
    auto t = c.try_submit(call("sleep", {num(0.0)}));
    REQUIRE(t.is_ok());
    REQUIRE(t->has_value());
    ids.push_back(**t);
  }
  return ids;
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

// A submit of `sum` over the argument name `arg`, laid out by hand as
// encode_submit lays one out (which would refuse a bad name): what a peer
// that skips the client's checks can send.
inline Value forged_submit(std::uint64_t owner, const std::string& arg) {
  return Value::list({Value::strings_utf8({"sum"}), Value::array<Dtype::kU64>({owner}),
                      Value::array<Dtype::kU64>({0}), Value::array<Dtype::kU32>({0}),
                      Value::array<Dtype::kLgl>({0}), Value::array<Dtype::kLgl>({0}),
                      Value::strings_utf8({""}), Value::array<Dtype::kU8>({1}),
                      Value::list({Value::strings_utf8({arg})})})
      .with_names({String{"fn"}, String{"owner"}, String{"timeout_ms"}, String{"retries"},
                   String{"inline_result"}, String{"wait_for_worker"}, String{"traceparent"}, String{"kinds"},
                   String{"args"}});
}

// A raw connection to a dispatcher that speaks bytes: idle connections,
// forged hellos, frames cut short, and reading what the dispatcher answers.
class RawPeer {
 public:
  explicit RawPeer(const std::string& path) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    REQUIRE(path.size() < sizeof addr.sun_path);
    std::memcpy(addr.sun_path, path.data(), path.size());
    REQUIRE(::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  }
  // A TCP connection to `addr` (of `len` bytes).
  RawPeer(const sockaddr* addr, socklen_t len) {
    fd_ = ::socket(addr->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    REQUIRE(fd_ >= 0);
    REQUIRE(::connect(fd_, addr, len) == 0);
  }
  // A connection made elsewhere (another network namespace), taken over.
  struct Adopt {};
  RawPeer(Adopt, int fd) : fd_(fd) { REQUIRE(fd_ >= 0); }
  ~RawPeer() {
    if (fd_ >= 0) ::close(fd_);
  }
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;

  void write(const void* p, std::size_t n) {
    REQUIRE(::send(fd_, p, n, MSG_NOSIGNAL) == static_cast<ssize_t>(n));
  }
  // Writes all `n` bytes, or returns false once the dispatcher closed the
  // connection (or read nothing for `timeout_ms`).
  bool try_write(const void* p, std::size_t n, int timeout_ms = 20000) {
    const char* at = static_cast<const char*>(p);
    while (n > 0) {
      pollfd pfd{fd_, POLLOUT, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1 || (pfd.revents & POLLOUT) == 0) return false;
      const ssize_t w = ::send(fd_, at, n, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0 && (errno == EAGAIN || errno == EINTR)) continue;
      if (w <= 0) return false;
      at += w;
      n -= static_cast<std::size_t>(w);
    }
    return true;
  }
  // Writes a frame header announcing `length` payload bytes.
  void header(ipc::FrameType t, std::uint64_t id, std::uint32_t length, std::uint16_t flags = 0) {
    std::byte h[ipc::kFrameHeaderSize];
    ipc::encode_frame_header(ipc::FrameHeader{t, flags, id, length},
                             std::span<std::byte, ipc::kFrameHeaderSize>(h, sizeof h));
    write(h, sizeof h);
  }
  void frame(ipc::FrameType t, std::uint64_t id, const Bytes& payload, std::uint16_t flags = 0) {
    header(t, id, static_cast<std::uint32_t>(payload.size()), flags);
    if (!payload.empty()) write(payload.data(), payload.size());
  }
  // A worker's hello with `functions` and start token `token`.
  void hello_worker(std::vector<std::string> functions, std::uint64_t token = 0) {
    auto h =
        ipc::detail::encode_hello(ipc::detail::Hello{"worker", ::getpid(), 0, token, std::move(functions)});
    REQUIRE(h.is_ok());
    frame(ipc::FrameType::kHello, 0, *h);
  }
  // The next frame of type `t`, skipping others; nullopt when the
  // connection closes or `timeout_ms` passes first.
  std::optional<ipc::Frame> next_of(ipc::FrameType t, int timeout_ms = 20000) {
    for (;;) {
      auto f = read_frame(timeout_ms);
      if (!f || f->header.type == t) return f;
    }
  }
  // A client's hello of this protocol version.
  void hello_client() {
    auto owner = shm::process_owner();
    REQUIRE(owner.is_ok());
    auto h = ipc::detail::encode_hello(ipc::detail::Hello{"client", ::getpid(), *owner, 0, {}});
    REQUIRE(h.is_ok());
    frame(ipc::FrameType::kHello, 0, *h);
  }
  // The next whole frame the dispatcher sends, or nullopt when the
  // connection closes or `timeout_ms` passes first.
  std::optional<ipc::Frame> read_frame(int timeout_ms = 20000) {
    for (;;) {
      auto f = reader_.next();
      REQUIRE(f.is_ok());
      if (*f) return std::move(**f);
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) != 1) return std::nullopt;
      std::byte buf[4096];
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return std::nullopt;
      REQUIRE(reader_.feed(std::span<const std::byte>(buf, static_cast<std::size_t>(n))).is_ok());
    }
  }
  // Reads exactly `n` raw bytes; false when the connection closes or
  // `timeout_ms` passes first.
  bool read_exact(void* p, std::size_t n, int timeout_ms = 20000) {
    char* at = static_cast<char*>(p);
    while (n > 0) {
      pollfd pfd{fd_, POLLIN, 0};
      if (::poll(&pfd, 1, timeout_ms) != 1) return false;
      const ssize_t r = ::read(fd_, at, n);
      if (r < 0 && errno == EINTR) continue;
      if (r <= 0) return false;
      at += r;
      n -= static_cast<std::size_t>(r);
    }
    return true;
  }
  // True once the dispatcher closed the connection (reads to EOF, bounded).
  bool closed_by_peer(int timeout_ms = 20000) {
    char buf[4096];
    for (;;) {
      pollfd p{fd_, POLLIN, 0};
      if (::poll(&p, 1, timeout_ms) != 1) return false;
      const ssize_t n = ::read(fd_, buf, sizeof buf);
      if (n <= 0) return true;
    }
  }
  // True when the dispatcher has closed the connection by now (no wait).
  bool closed_now() {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, 0) != 1) return false;
    char c;
    return ::recv(fd_, &c, 1, MSG_PEEK | MSG_DONTWAIT) <= 0;
  }
  int fd() const { return fd_; }

 private:
  int fd_ = -1;
  ipc::FrameReader reader_;
};

}  // namespace kura::test
