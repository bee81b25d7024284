// The transport seam: endpoints, Unix streams and listeners, and frames
// over them (typed close reasons, bounds, the one thread-safe write path).
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "ipc_util.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {
namespace {

using detail::CloseReason;
using detail::Connection;
using detail::Endpoint;
using detail::Stream;
using test::SocketDir;

// A libuv loop driven by the test thread.
class Loop {
 public:
  Loop() {
    REQUIRE(uv_loop_init(&loop_) == 0);
    uv_timer_init(&loop_, &tick_);
  }
  ~Loop() {
    uv_walk(
        &loop_,
        [](uv_handle_t* h, void*) {
          if (!uv_is_closing(h)) uv_close(h, nullptr);
        },
        nullptr);
    uv_run(&loop_, UV_RUN_DEFAULT);
    uv_loop_close(&loop_);
  }
  uv_loop_t* get() { return &loop_; }

  // Runs the loop until `pred` holds; FAILs saying `what` after `timeout`.
  void run_until(const std::function<bool()>& pred, const std::string& what,
                 std::chrono::milliseconds timeout = std::chrono::seconds(20)) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    uv_timer_start(
        &tick_, [](uv_timer_t*) {}, 5, 5);  // wakes uv_run to look again
    while (!pred()) {
      if (std::chrono::steady_clock::now() > deadline) {
        uv_timer_stop(&tick_);
        FAIL("timed out after " << timeout.count() << " ms waiting for " << what);
      }
      uv_run(&loop_, UV_RUN_ONCE);
    }
    uv_timer_stop(&tick_);
  }

 private:
  uv_loop_t loop_{};
  uv_timer_t tick_{};
};

int raw_connect(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  REQUIRE(fd >= 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  REQUIRE(::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  return fd;
}

bool connectable(const std::string& path) {
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const bool ok = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return ok;
}

std::vector<std::byte> frame_bytes(FrameType type, std::uint64_t id, std::size_t payload) {
  std::vector<std::byte> out(kFrameHeaderSize + payload, std::byte{7});
  encode_frame_header(FrameHeader{type, 0, id, static_cast<std::uint32_t>(payload)},
                      std::span<std::byte, kFrameHeaderSize>(out.data(), kFrameHeaderSize));
  return out;
}

void write_all(int fd, const void* data, std::size_t n) {
  const char* p = static_cast<const char*>(data);
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    REQUIRE(w > 0);
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

// A listener on the test's loop whose accepted streams become connections
// that record frames and how they closed.
struct Served {
  struct Peer {
    Connection* conn = nullptr;
    std::vector<Frame> frames;
    std::optional<CloseReason> reason;
    Status detail;
  };
  std::unique_ptr<detail::Listener> listener;
  std::vector<std::unique_ptr<Peer>> peers;
  std::vector<std::string> log;
  std::uint64_t partial_timeout_ms = 0;
  std::uint64_t write_limit = UINT64_MAX;

  void listen(Loop& loop, const std::string& path) {
    detail::ignore_sigpipe();
    auto at = detail::parse_endpoint(path);
    REQUIRE(at.is_ok());
    auto l = detail::listen(
        loop.get(), *at,
        [this](std::unique_ptr<Stream> s) {
          auto p = std::make_unique<Peer>();
          Peer* raw = p.get();
          peers.push_back(std::move(p));
          raw->conn = Connection::adopt(std::move(s), kDefaultFrameLimit, write_limit);
          raw->conn->set_partial_frame_timeout(partial_timeout_ms);
          REQUIRE(raw->conn
                      ->start(Connection::Callbacks{
                          [raw](Connection&, Frame&& f) { raw->frames.push_back(std::move(f)); },
                          [raw](Connection&, CloseReason why, const Status& detail) {
                            raw->conn = nullptr;
                            raw->reason = why;
                            raw->detail = detail;
                          }})
                      .is_ok());
        },
        [this](const std::string& line) { log.push_back(line); });
    INFO((l.is_ok() ? std::string() : l.status().to_string()));
    REQUIRE(l.is_ok());
    listener = std::move(l).value();
  }

  // Closes what is still open and waits for every on_close.
  void shut(Loop& loop) {
    if (listener) listener->close();
    for (auto& p : peers)
      if (p->conn != nullptr) p->conn->close(CloseReason::kLocal, Status(Code::kIo, "test over"));
    loop.run_until(
        [&] {
          for (auto& p : peers)
            if (!p->reason) return false;
          return true;
        },
        "every connection closed");
  }
};

TEST_CASE("endpoints parse unix:PATH and bare paths, and refuse other schemes", "[ipc]") {
  auto e = detail::parse_endpoint("unix:/run/user/1000/kura/dispatcher.sock");
  REQUIRE(e.is_ok());
  CHECK(e->kind == Endpoint::Kind::kUnix);
  CHECK(e->path == "/run/user/1000/kura/dispatcher.sock");
  CHECK(e->to_string() == "unix:/run/user/1000/kura/dispatcher.sock");
  auto again = detail::parse_endpoint(e->to_string());
  REQUIRE(again.is_ok());
  CHECK(again->path == e->path);

  auto bare = detail::parse_endpoint("/tmp/d.sock");
  REQUIRE(bare.is_ok());
  CHECK(bare->path == "/tmp/d.sock");
  auto relative = detail::parse_endpoint("d.sock");
  REQUIRE(relative.is_ok());
  CHECK(relative->path == "d.sock");
  auto colon = detail::parse_endpoint("./a:b.sock");
  REQUIRE(colon.is_ok());
  CHECK(colon->path == "./a:b.sock");
  auto unix_relative = detail::parse_endpoint("unix:a:b.sock");
  REQUIRE(unix_relative.is_ok());
  CHECK(unix_relative->path == "a:b.sock");

  auto tcp = detail::parse_endpoint("tcp://127.0.0.1:7000");
  REQUIRE(tcp.is_ok());
  CHECK(tcp->kind == detail::Endpoint::Kind::kTcp);
  CHECK(tcp->host == "127.0.0.1");
  CHECK(tcp->port == 7000);
  CHECK(tcp->to_string() == "tcp://127.0.0.1:7000");
  auto tcp6 = detail::parse_endpoint("tcp://[::1]:0");
  REQUIRE(tcp6.is_ok());
  CHECK(tcp6->host == "::1");
  CHECK(tcp6->port == 0);
  CHECK(tcp6->to_string() == "tcp://[::1]:0");
  for (std::string bad : {"tcp://localhost:7000", "tcp://127.0.0.1", "tcp://127.0.0.1:65536", "tcp://:80",
                          "tcp://[::1:80", "tcp://::1:80", "tcp://1.2.3.4:8x", "tcp://[127.0.0.1]:80"}) {
    auto e = detail::parse_endpoint(bad);
    INFO(bad);
    REQUIRE(!e.is_ok());
    CHECK(e.status().code() == Code::kInvalidArgument);
  }
  auto tls = detail::parse_endpoint("tls://127.0.0.1:7000");
  REQUIRE(!tls.is_ok());
  CHECK_THAT(tls.status().message(), Catch::Contains("is TLS whenever its address is not loopback"));
  auto http = detail::parse_endpoint("http://x");
  REQUIRE(!http.is_ok());
  CHECK(http.status().code() == Code::kInvalidArgument);
  CHECK_THAT(http.status().message(), Catch::Contains("\"http\""));

  for (std::string bad : {std::string(), std::string("unix:"), std::string("unix:/a\0b", 9),
                          "unix:/" + std::string(200, 'x'), std::string("a:b")}) {
    auto r = detail::parse_endpoint(bad);
    INFO("endpoint of " << bad.size() << " bytes");
    REQUIRE(!r.is_ok());
    CHECK(r.status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("default_endpoint is unix:$XDG_RUNTIME_DIR/kura/dispatcher.sock, its directory made 0700",
          "[ipc]") {
  SocketDir dir;
  const char* old = std::getenv("XDG_RUNTIME_DIR");
  const std::string saved = old != nullptr ? old : "";
  ::setenv("XDG_RUNTIME_DIR", dir.dir().c_str(), 1);
  auto e = detail::default_endpoint();
  auto second = detail::default_endpoint();
  if (old != nullptr) {
    ::setenv("XDG_RUNTIME_DIR", saved.c_str(), 1);
  } else {
    ::unsetenv("XDG_RUNTIME_DIR");
  }
  struct stat st;
  const bool made = ::stat((dir.dir() + "/kura").c_str(), &st) == 0;
  ::rmdir((dir.dir() + "/kura").c_str());
  INFO((e.is_ok() ? std::string() : e.status().to_string()));
  REQUIRE(e.is_ok());
  CHECK(e->to_string() == "unix:" + dir.dir() + "/kura/dispatcher.sock");
  REQUIRE(second.is_ok());
  CHECK(second->path == e->path);
  REQUIRE(made);
  CHECK((st.st_mode & 0777) == 0700);
}

TEST_CASE("connecting where nobody listens is NotFound, typed", "[ipc]") {
  SocketDir dir;
  Loop loop;
  // Nothing at the path, and a socket file nobody accepts on (left by a
  // process that died).
  const std::string stale = dir.dir() + "/stale.sock";
  {
    const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_un addr{};
    addr.sun_family = AF_UNIX;
    std::memcpy(addr.sun_path, stale.data(), stale.size());
    REQUIRE(::bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
    ::close(fd);
  }
  for (const std::string& path : {dir.socket(), stale}) {
    auto at = detail::parse_endpoint(path);
    REQUIRE(at.is_ok());
    std::optional<Status> got;
    detail::connect(loop.get(), *at,
                    [&](Result<std::unique_ptr<Stream>> s) { got = s.is_ok() ? Status::ok() : s.status(); });
    loop.run_until([&] { return got.has_value(); }, "the connect to finish");
    INFO(path << ": " << got->to_string());
    CHECK(got->code() == Code::kNotFound);
  }
}

TEST_CASE("a connection closes typed: peer EOF, malformed frame, partial frame timeout", "[ipc]") {
  SocketDir dir;
  Loop loop;
  Served served;
  served.partial_timeout_ms = 150;
  served.listen(loop, dir.socket());

  const int eof = raw_connect(dir.socket());
  const int garbage = raw_connect(dir.socket());
  const int partial = raw_connect(dir.socket());
  const int quiet = raw_connect(dir.socket());
  loop.run_until([&] { return served.peers.size() == 4; }, "four accepted connections");
  for (auto& p : served.peers) {
    CHECK(p->conn->peer().transport == "unix");
    CHECK(p->conn->peer().pid == ::getpid());
    CHECK(p->conn->peer().uid == ::geteuid());
  }

  // A whole frame, then EOF.
  auto whole = frame_bytes(FrameType::kHello, 5, 100);
  write_all(eof, whole.data(), whole.size());
  ::close(eof);
  // 24 bytes that are no frame header.
  const std::vector<std::byte> junk(kFrameHeaderSize, std::byte{0x5a});
  write_all(garbage, junk.data(), junk.size());
  // A whole frame and half of the next, then nothing.
  write_all(partial, whole.data(), whole.size());
  write_all(partial, whole.data(), 10);
  // `quiet` sends a whole frame and holds no partial one: it stays open.
  write_all(quiet, whole.data(), whole.size());

  loop.run_until(
      [&] { return served.peers[0]->reason && served.peers[1]->reason && served.peers[2]->reason; },
      "three connections to close");
  CHECK(*served.peers[0]->reason == CloseReason::kPeerClosed);
  CHECK(served.peers[0]->frames.size() == 1);
  CHECK(*served.peers[1]->reason == CloseReason::kProtocol);
  CHECK(served.peers[1]->detail.code() == Code::kCorrupt);
  CHECK(*served.peers[2]->reason == CloseReason::kTimeout);
  CHECK(served.peers[2]->frames.size() == 1);
  loop.run_until([&] { return served.peers[3]->frames.size() == 1; }, "the quiet peer's frame");
  CHECK(!served.peers[3]->reason);
  CHECK(detail::close_reason_name(CloseReason::kTimeout) == "timeout");

  served.shut(loop);
  CHECK(*served.peers[3]->reason == CloseReason::kLocal);
  for (int fd : {garbage, partial, quiet}) ::close(fd);
}

TEST_CASE("a peer that never reads closes its connection with kBacklog", "[ipc]") {
  SocketDir dir;
  Loop loop;
  Served served;
  served.write_limit = 1u << 20;
  served.listen(loop, dir.socket());
  const int deaf = raw_connect(dir.socket());
  loop.run_until([&] { return served.peers.size() == 1; }, "the connection");
  auto payload = std::make_shared<const Bytes>(Bytes(64 * 1024));
  Served::Peer& p = *served.peers[0];
  // Each loop turn queues 16 frames of 64 KiB; the socket buffer fills, then
  // the write queue passes 1 MiB.
  std::uint64_t sent = 0;
  loop.run_until(
      [&] {
        if (p.conn != nullptr && !p.conn->closed())
          for (int i = 0; i < 16; ++i, ++sent) p.conn->send(FrameType::kResult, 0, sent, payload);
        return p.reason.has_value();
      },
      "the backlog to close the connection");
  CHECK(*p.reason == CloseReason::kBacklog);
  CHECK(sent < 1000);  // closed by the limit, not by anything else
  CHECK(served.peers.size() == 1);
  served.shut(loop);
  ::close(deaf);
}

// Every frame: id = sender << 32 | sequence number; the payload's size
// varies (every 97th is over 64 KiB) and each byte is derived from the id.
std::size_t size_of_frame(std::uint64_t id) {
  const std::uint64_t seq = id & 0xffffffffu;
  return seq % 97 == 0 ? 65536 + (seq % 4096) * 8 : (seq * 31) % 600;
}
std::byte byte_of(std::uint64_t id, std::size_t i) {
  return static_cast<std::byte>((id >> 32) * 131 + (id & 0xffffffffu) * 7 + i);
}
std::shared_ptr<const Bytes> payload_of(std::uint64_t id) {
  Bytes b(size_of_frame(id));
  for (std::size_t i = 0; i < b.size(); ++i) b.data()[i] = byte_of(id, i);
  return std::make_shared<const Bytes>(std::move(b));
}

TEST_CASE("frames from many threads and the loop never interleave, and each sender keeps its order",
          "[ipc][multithread]") {
  constexpr std::uint64_t kThreads = 8, kPerThread = 20000, kFromLoop = 5000;
  SocketDir dir;
  uv_loop_t loop;
  REQUIRE(uv_loop_init(&loop) == 0);
  // The listener and its connection live on a loop thread; the test thread
  // reads the other end.
  struct Shared {
    Connection* conn = nullptr;
    std::shared_ptr<detail::Sender> sender;
    std::uint64_t loop_sent = 0;
    bool closed = false;
    std::optional<CloseReason> reason;
    uv_timer_t pump;
    uv_async_t stop;
    std::unique_ptr<detail::Listener> listener;
  } sh;
  auto at = detail::parse_endpoint(dir.socket());
  REQUIRE(at.is_ok());
  std::mutex mu;
  std::condition_variable cv;
  auto l = detail::listen(
      &loop, *at,
      [&](std::unique_ptr<Stream> s) {
        sh.conn = Connection::adopt(std::move(s), kDefaultFrameLimit, UINT64_MAX);
        (void)sh.conn->start(Connection::Callbacks{[](Connection&, Frame&&) {},
                                                   [&](Connection&, CloseReason why, const Status&) {
                                                     sh.conn = nullptr;
                                                     sh.reason = why;
                                                   }});
        std::lock_guard<std::mutex> lock(mu);
        sh.sender = sh.conn->sender();
        cv.notify_all();
      },
      [](const std::string&) {});
  REQUIRE(l.is_ok());
  sh.listener = std::move(l).value();
  loop.data = &sh;
  // The loop thread sends its frames a few per loop turn, meanwhile.
  uv_timer_init(&loop, &sh.pump);
  uv_timer_start(
      &sh.pump,
      [](uv_timer_t* t) {
        auto* s = static_cast<Shared*>(t->loop->data);
        if (s->conn == nullptr) return;
        for (int i = 0; i < 8 && s->loop_sent < kFromLoop; ++i) {
          const std::uint64_t id = (kThreads << 32) | s->loop_sent++;
          s->conn->send(FrameType::kResult, 0, id, payload_of(id));
        }
        if (s->loop_sent == kFromLoop) uv_timer_stop(t);
      },
      1, 1);
  uv_async_init(&loop, &sh.stop, [](uv_async_t* a) {
    auto* s = static_cast<Shared*>(a->loop->data);
    if (s->conn != nullptr) s->conn->close(CloseReason::kLocal, Status(Code::kIo, "test over"));
    s->listener->close();
    uv_close(reinterpret_cast<uv_handle_t*>(&s->pump), nullptr);
    uv_close(reinterpret_cast<uv_handle_t*>(a), nullptr);
  });
  std::thread loop_thread([&] { uv_run(&loop, UV_RUN_DEFAULT); });

  const int fd = raw_connect(dir.socket());
  std::shared_ptr<detail::Sender> sender;
  {
    std::unique_lock<std::mutex> lock(mu);
    REQUIRE(cv.wait_for(lock, std::chrono::seconds(20), [&] { return sh.sender != nullptr; }));
    sender = sh.sender;
  }
  std::atomic<int> send_errors{0};
  std::vector<std::thread> threads;
  for (std::uint64_t t = 0; t < kThreads; ++t)
    threads.emplace_back([&, t] {
      for (std::uint64_t seq = 0; seq < kPerThread;) {
        // Single frames and batches of three (contiguous on the wire).
        if (seq % 5 == 0 && seq + 3 <= kPerThread) {
          std::vector<detail::OutgoingFrame> batch;
          for (int k = 0; k < 3; ++k, ++seq) {
            const std::uint64_t id = (t << 32) | seq;
            batch.push_back(detail::OutgoingFrame{FrameType::kResult, 0, id, payload_of(id), {}, {}});
          }
          if (!sender->send_many(batch)) ++send_errors;
        } else {
          const std::uint64_t id = (t << 32) | seq++;
          if (!sender->send(FrameType::kResult, 0, id, payload_of(id))) ++send_errors;
        }
      }
    });

  FrameReader reader(1u << 20);
  std::vector<std::uint64_t> next(kThreads + 1, 0);
  std::uint64_t frames = 0, bad = 0;
  const std::uint64_t expected = kThreads * kPerThread + kFromLoop;
  std::vector<char> buf(256 * 1024);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
  while (frames < expected && bad == 0 && std::chrono::steady_clock::now() < deadline) {
    pollfd p{fd, POLLIN, 0};
    if (::poll(&p, 1, 1000) <= 0) continue;
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n <= 0) break;
    if (!reader.feed(std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf.data()),
                                                static_cast<std::size_t>(n)))) {
      ++bad;
      break;
    }
    while (true) {
      auto f = reader.next();
      if (!f) ++bad;
      if (!f || !f->has_value()) break;
      const Frame& fr = **f;
      const std::uint64_t id = fr.header.id, who = id >> 32, seq = id & 0xffffffffu;
      ++frames;
      if (who > kThreads || seq != next[who] || fr.payload.size() != size_of_frame(id)) {
        ++bad;
        break;
      }
      ++next[who];
      for (std::size_t i = 0; i < fr.payload.size(); ++i)
        if (fr.payload.data()[i] != byte_of(id, i)) {
          ++bad;
          break;
        }
    }
  }
  for (auto& t : threads) t.join();
  uv_async_send(&sh.stop);
  loop_thread.join();
  uv_run(&loop, UV_RUN_DEFAULT);
  uv_loop_close(&loop);
  ::close(fd);

  CHECK(send_errors == 0);
  CHECK(bad == 0);
  CHECK(frames == expected);
  for (std::uint64_t t = 0; t <= kThreads; ++t) CHECK(next[t] == (t < kThreads ? kPerThread : kFromLoop));
  REQUIRE(sh.reason);
  CHECK(*sh.reason == CloseReason::kLocal);
  // The Sender outlives its connection and refuses politely.
  Status late = sender->send(FrameType::kResult, 0, 1, nullptr);
  CHECK(late.code() == Code::kIo);
  CHECK(late.message() == "connection closed");
}

TEST_CASE("a closing listener leaves alone a socket that replaced its own", "[ipc]") {
  SocketDir dir;
  Loop loop;
  const std::string path = dir.socket();
  // Its own socket file: unlinked on close.
  {
    Served a;
    a.listen(loop, path);
    REQUIRE(connectable(path));
    a.shut(loop);
    CHECK(::access(path.c_str(), F_OK) != 0);
  }
  Served a;
  a.listen(loop, path);
  // Another process's listener takes the path over (as a dispatcher that
  // found it stale would): unlink, bind, listen.
  REQUIRE(::unlink(path.c_str()) == 0);
  const int other = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  REQUIRE(::bind(other, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0);
  REQUIRE(::listen(other, 8) == 0);
  a.shut(loop);
  CHECK(::access(path.c_str(), F_OK) == 0);
  CHECK(connectable(path));
  ::close(other);
}

// Reads what `fd` has within `timeout`, appending to `out`; false on EOF.
bool read_for(int fd, std::string& out, std::chrono::milliseconds timeout) {
  pollfd p{fd, POLLIN, 0};
  if (::poll(&p, 1, static_cast<int>(timeout.count())) <= 0) return true;
  char buf[4096];
  const ssize_t n = ::read(fd, buf, sizeof buf);
  if (n <= 0) return false;
  out.append(buf, static_cast<std::size_t>(n));
  return true;
}

int count_open_fds() {
  int n = 0;
  for (int fd = 0; fd < 4096; ++fd)
    if (::fcntl(fd, F_GETFD) != -1) ++n;
  return n;
}

TEST_CASE("a listener out of descriptors says so once and accepts again when some close",
          "[ipc][multiprocess]") {
#if defined(__SANITIZE_ADDRESS__)
  // Under AddressSanitizer the forked listener's accept4 fails with EMFILE
  // from the first connection on, with a dozen descriptor numbers below the
  // limit still free (seen with ASan of GCC 12): the limit cannot be
  // measured out for it. The dispatcher-level test of the same case
  // (liveness_test.cpp) runs the kura binary under prlimit instead.
  WARN("skipped under AddressSanitizer");
  return;
#endif
  SocketDir dir;
  const std::string path = dir.socket();
  int log_pipe[2];
  REQUIRE(::pipe2(log_pipe, O_CLOEXEC) == 0);
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    // The listener's process: few descriptors to spare. It answers every
    // connection it accepts with one frame, and writes its log to the pipe.
    ::close(log_pipe[0]);
    detail::ignore_sigpipe();
    const int out = log_pipe[1];
    auto say = [out](const std::string& line) {
      const std::string l = line + "\n";
      (void)!::write(out, l.data(), l.size());
    };
    const rlimit lim{static_cast<rlim_t>(count_open_fds() + 24), static_cast<rlim_t>(count_open_fds() + 24)};
    if (::setrlimit(RLIMIT_NOFILE, &lim) != 0) ::_exit(2);
    uv_loop_t loop;
    if (uv_loop_init(&loop) != 0) ::_exit(3);
    auto at = detail::parse_endpoint(path);
    auto l = detail::listen(
        &loop, *at,
        [](std::unique_ptr<Stream> s) {
          Connection* c = Connection::adopt(std::move(s), kDefaultFrameLimit, UINT64_MAX);
          Status started = c->start(Connection::Callbacks{[](Connection&, Frame&&) {},
                                                          [](Connection&, CloseReason, const Status&) {}});
          if (started) {
            c->send(FrameType::kWelcome, 0, 1, nullptr);
          } else {
            c->close(CloseReason::kIo, started);  // no descriptor left for its set-up
          }
        },
        say);
    if (!l) ::_exit(4);
    say("ready");
    uv_run(&loop, UV_RUN_DEFAULT);
    ::_exit(0);
  }
  ::close(log_pipe[1]);
  struct Reaper {
    pid_t pid;
    ~Reaper() {
      ::kill(pid, SIGKILL);
      ::waitpid(pid, nullptr, 0);
    }
  } reaper{child};
  std::string log;
  test::eventually(
      [&] {
        return read_for(log_pipe[0], log, std::chrono::milliseconds(50)) &&
               log.find("ready") != std::string::npos;
      },
      std::chrono::seconds(20), "the listener to start");
  // More connections than it has descriptors: the rest wait in the backlog.
  std::vector<int> idle;
  for (int i = 0; i < 60; ++i) idle.push_back(raw_connect(path));
  test::eventually(
      [&] {
        return read_for(log_pipe[0], log, std::chrono::milliseconds(50)) &&
               log.find("out of file descriptors") != std::string::npos;
      },
      std::chrono::seconds(20), "the log to say descriptors ran out");
  for (int fd : idle) ::close(fd);
  // The listener survived: a new connection is served.
  const int fresh = raw_connect(path);
  std::string got;
  test::eventually(
      [&] {
        read_for(fresh, got, std::chrono::milliseconds(50));
        return got.size() >= kFrameHeaderSize;
      },
      std::chrono::seconds(20), "a frame on a connection made after some closed");
  ::close(fresh);
  test::eventually(
      [&] {
        return read_for(log_pipe[0], log, std::chrono::milliseconds(50)) &&
               log.find("accepting connections on " + path + " again") != std::string::npos;
      },
      std::chrono::seconds(20), "the log to say it accepts again");
  // Once per burst: each line about running out is followed by one saying
  // it accepts again (however many accepts failed in between).
  while (read_for(log_pipe[0], log, std::chrono::milliseconds(100)) && log.back() != '\n') {
  }
  auto count = [&](const std::string& text) {
    std::size_t n = 0;
    for (std::size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
    return n;
  };
  INFO(log);
  CHECK(count("out of file descriptors") <= count(" again"));
  ::close(log_pipe[0]);
}

}  // namespace
}  // namespace kura::ipc
