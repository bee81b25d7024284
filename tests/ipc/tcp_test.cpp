// Workers over TCP (issue 16): the kura tool as dispatcher and workers on
// loopback (127.0.0.1 and ::1), the handshake that proves the shared secret
// both ways, and each way a peer can fail it, while an authenticated worker
// goes on running tasks.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/stat.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <iterator>

#include "auth_internal.hpp"
#include "endpoint_internal.hpp"
#include "ipc_util.hpp"
#include "kura/ipc/secret.hpp"
#include "kura/shm/region.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"
#include "transport_internal.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// Writes a secret with `kura secret` into `dir`; returns its path.
std::string make_secret(const SocketDir& dir, const std::string& name) {
  const std::string path = dir.dir() + "/" + name;
  auto r = run({kKura, "secret", path});
  INFO(r.err);
  REQUIRE(r.code == 0);
  return path;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

// The socket address of a "tcp://..." endpoint.
struct TcpAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&addr); }
};

TcpAddress tcp_address(const std::string& endpoint) {
  auto e = ipc::detail::parse_endpoint(endpoint);
  REQUIRE(e.is_ok());
  REQUIRE(e->kind == ipc::detail::Endpoint::Kind::kTcp);
  TcpAddress a;
  if (e->host.find(':') != std::string::npos) {
    auto* in6 = reinterpret_cast<sockaddr_in6*>(&a.addr);
    in6->sin6_family = AF_INET6;
    in6->sin6_port = htons(e->port);
    REQUIRE(::inet_pton(AF_INET6, e->host.c_str(), &in6->sin6_addr) == 1);
    a.len = sizeof(sockaddr_in6);
  } else {
    auto* in4 = reinterpret_cast<sockaddr_in*>(&a.addr);
    in4->sin_family = AF_INET;
    in4->sin_port = htons(e->port);
    REQUIRE(::inet_pton(AF_INET, e->host.c_str(), &in4->sin_addr) == 1);
    a.len = sizeof(sockaddr_in);
  }
  return a;
}

// True when this machine can listen on the IPv6 loopback address.
bool ipv6_loopback() {
  const int fd = ::socket(AF_INET6, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_in6 a{};
  a.sin6_family = AF_INET6;
  a.sin6_addr = in6addr_loopback;
  const bool ok = ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0;
  ::close(fd);
  return ok;
}

// The dispatcher's side of a handshake a raw peer took part in, and the
// bytes the peer sent, so that a test can send them again.
struct RawHandshake {
  ipc::detail::Nonce dispatcher_nonce;
  std::array<std::byte, ipc::detail::kGreetingSize> greeting;
  ipc::detail::Answer answer;
};

std::string read_secret(const std::string& path) {
  auto s = ipc::read_secret_file(path);
  INFO((s.is_ok() ? std::string() : s.status().to_string()));
  REQUIRE(s.is_ok());
  return *s;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size());
}

// Does the connector's half of the handshake by hand with `secret`, and
// checks the dispatcher's answer.
RawHandshake handshake(RawPeer& p, const std::string& secret) {
  RawHandshake h;
  std::array<std::byte, ipc::detail::kGreetingSize> theirs;
  REQUIRE(p.read_exact(theirs.data(), theirs.size()));
  REQUIRE(std::memcmp(theirs.data(), ipc::detail::kAuthMagic.data(), ipc::detail::kAuthMagic.size()) == 0);
  std::memcpy(h.dispatcher_nonce.data(), theirs.data() + ipc::detail::kAuthMagic.size(),
              ipc::detail::kNonceSize);
  auto mine = ipc::detail::make_nonce();
  REQUIRE(mine.is_ok());
  h.greeting = ipc::detail::Handshake(ipc::detail::AuthSide::kConnector, bytes_of(secret), *mine).greeting();
  h.answer = ipc::detail::compute_answer(bytes_of(secret), ipc::detail::AuthSide::kConnector,
                                         h.dispatcher_nonce, *mine);
  p.write(h.greeting.data(), h.greeting.size());
  p.write(h.answer.data(), h.answer.size());
  ipc::detail::Answer back;
  REQUIRE(p.read_exact(back.data(), back.size()));
  CHECK(ipc::detail::verify_answer(bytes_of(secret), ipc::detail::AuthSide::kListener, *mine,
                                   h.dispatcher_nonce, back));
  return h;
}

// How many lines of `d`'s log contain `text`.
std::size_t log_count(EmbeddedDispatcher& d, const std::string& text) {
  const std::string log = d.log();
  std::size_t n = 0;
  for (std::size_t at = log.find(text); at != std::string::npos; at = log.find(text, at + 1)) ++n;
  return n;
}

double sum_of(ipc::Client& c, const std::string& name) {
  auto id = c.submit(call("sum", {ipc::Arg::ref(name)}));
  REQUIRE(id.is_ok());
  auto r = c.wait(*id);
  INFO(r.describe());
  REQUIRE(r.ok());
  auto xs = r.value().array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  REQUIRE(xs->size() == 1);
  return (*xs)[0];
}

// A shared array 0, 1, ..., n-1 and the sum a worker must find.
struct Numbers {
  explicit Numbers(std::size_t n) {
    std::vector<double> xs(n);
    for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i);
    auto s = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
    REQUIRE(s.is_ok());
    shared.emplace(std::move(s).value());
    sum = static_cast<double>(n - 1) * static_cast<double>(n) / 2;
  }
  std::string name() const { return shared->name(); }
  std::optional<shm::Shared> shared;
  double sum = 0;
};

// The kura tool as a dispatcher listening on tcp://HOST:0 and as a worker
// connecting to the address it printed; a local client's task runs there.
void remote_worker_sums(const std::string& host) {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret = make_secret(dir, "secret");
  Process dp({kKura, "dispatcher", "--socket", dir.socket(), "--listen", "tcp://" + host + ":0",
              "--secret-file", secret});
  auto unix_line = dp.read_line(20s);
  REQUIRE(unix_line);
  CHECK(*unix_line == "listening on " + dir.socket());
  auto tcp_line = dp.read_line(20s);
  INFO(dp.err());
  REQUIRE(tcp_line);
  const std::string prefix = "listening on tcp://" + host + ":";
  REQUIRE(tcp_line->rfind(prefix, 0) == 0);
  const std::string address = tcp_line->substr(std::strlen("listening on "));
  auto endpoint = ipc::detail::parse_endpoint(address);
  REQUIRE(endpoint.is_ok());
  CHECK(endpoint->port != 0);  // port 0 asked for any; the one it got is printed

  Process worker({kKura, "worker", "--connect", address, "--secret-file", secret});
  {
    auto c = connect(dir.socket());
    wait_workers(*c, 1);
    auto st = status_of(*c);
    REQUIRE(st.workers.size() == 1);
    CHECK(st.workers[0].pid == 0);  // over TCP no pid is known: not a managed worker
    Numbers numbers(100000);
    CHECK(sum_of(*c, numbers.name()) == numbers.sum);
    CHECK(sum_of(*c, numbers.name()) == numbers.sum);
  }
  dp.signal(SIGTERM);
  CHECK(dp.wait(20s) == 0);
  auto worker_code = worker.wait(20s);
  INFO(worker.err());
  CHECK(worker_code.has_value());
}

// Options of a dispatcher that also listens on 127.0.0.1 (any free port)
// for workers proving the secret in `secret_file`.
std::function<void(ipc::DispatcherOptions&)> on_loopback(const std::string& secret_file) {
  return [secret_file](ipc::DispatcherOptions& o) {
    o.tcp_listen = "tcp://127.0.0.1:0";
    o.secret_file = secret_file;
  };
}

}  // namespace

TEST_CASE("tcp: a kura worker over tcp://127.0.0.1 runs a local client's tasks", "[ipc][multiprocess][tcp]") {
  remote_worker_sums("127.0.0.1");
}

TEST_CASE("tcp: a kura worker over tcp://[::1] runs a local client's tasks", "[ipc][multiprocess][tcp]") {
  if (!ipv6_loopback()) {
    WARN("skipped: this machine has no IPv6 loopback address (::1) to listen on");
    return;
  }
  remote_worker_sums("[::1]");
}

TEST_CASE("tcp: wrong secret, no handshake, a replayed handshake, garbage and a silent peer are refused",
          "[ipc][multiprocess][tcp]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  const std::string other_file = make_secret(dir, "other");
  const std::string secret = read_secret(secret_file);
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  const std::string address = d.get().tcp_address();
  REQUIRE(address.rfind("tcp://127.0.0.1:", 0) == 0);
  const TcpAddress at = tcp_address(address);

  Process good({kKura, "worker", "--connect", address, "--secret-file", secret_file});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  Numbers numbers(1000);
  REQUIRE(sum_of(*c, numbers.name()) == numbers.sum);

  const std::string wrong = "the peer's answer is wrong";
  const std::string not_kura = "did not start a kura handshake";

  // A worker with another secret.
  {
    Process bad({kKura, "worker", "--connect", address, "--secret-file", other_file});
    auto code = bad.wait(20s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    // The worker finds the dispatcher's answer wrong; or the dispatcher,
    // finding the worker's wrong first, closes before the worker has read
    // the dispatcher's (unread bytes make the close a reset).
    CHECK_THAT(bad.err(), Catch::Contains("handshake") &&
                              (Catch::Contains(wrong) || Catch::Contains("closed the connection")));
    REQUIRE(d.wait_log("refused a TCP connection from tcp://127.0.0.1:"));
    CHECK(sum_of(*c, numbers.name()) == numbers.sum);
  }
  // No secret: a peer that sends a worker's hello straight away.
  {
    RawPeer p(at.get(), at.len);
    p.hello_worker({"sum"});
    CHECK(p.closed_by_peer());
    REQUIRE(d.wait_log(not_kura));
  }
  // Garbage.
  {
    RawPeer p(at.get(), at.len);
    const std::vector<std::uint8_t> junk(200, 0xab);
    p.try_write(junk.data(), junk.size());
    CHECK(p.closed_by_peer());
    eventually([&] { return log_count(d, not_kura) == 2; }, 20s, "the garbage to be logged");
  }
  // A replayed handshake: the bytes of a good one, sent on a new connection,
  // answer a nonce the dispatcher no longer uses.
  {
    RawPeer first(at.get(), at.len);
    const RawHandshake recorded = handshake(first, secret);
    RawPeer again(at.get(), at.len);
    std::array<std::byte, ipc::detail::kGreetingSize> fresh;
    REQUIRE(again.read_exact(fresh.data(), fresh.size()));
    CHECK(std::memcmp(fresh.data() + ipc::detail::kAuthMagic.size(), recorded.dispatcher_nonce.data(),
                      ipc::detail::kNonceSize) != 0);
    again.write(recorded.greeting.data(), recorded.greeting.size());
    again.write(recorded.answer.data(), recorded.answer.size());
    CHECK(again.closed_by_peer());
    REQUIRE(d.wait_log(wrong));
  }
  // A silent peer: closed when the handshake's time is up.
  {
    RawPeer p(at.get(), at.len);
    CHECK(p.closed_by_peer(30000));
    REQUIRE(d.wait_log("did not complete the handshake within"));
  }
  // The authenticated worker never noticed.
  CHECK(sum_of(*c, numbers.name()) == numbers.sum);
  auto st = status_of(*c);
  REQUIRE(st.workers.size() == 1);
  CHECK(st.workers[0].tasks_done == 3);
  CHECK(d.log().find("closed connection of worker") == std::string::npos);
}

TEST_CASE("tcp: connections in their handshake are bounded, and their slots free when they go",
          "[ipc][multiprocess][tcp]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  const std::string address = d.get().tcp_address();
  const TcpAddress at = tcp_address(address);
  {
    std::vector<std::unique_ptr<RawPeer>> silent;
    for (std::size_t i = 0; i < ipc::detail::kMaxHandshakes; ++i) {
      silent.push_back(std::make_unique<RawPeer>(at.get(), at.len));
      // Each has its greeting: the dispatcher holds it in its handshake.
      std::array<std::byte, ipc::detail::kGreetingSize> greeting;
      REQUIRE(silent.back()->read_exact(greeting.data(), greeting.size()));
    }
    RawPeer one_more(at.get(), at.len);
    CHECK(one_more.closed_by_peer());
    REQUIRE(d.wait_log("connections are in their handshake already"));
  }
  // The silent peers hung up: their slots are free, and a worker gets in.
  Process worker({kKura, "worker", "--connect", address, "--secret-file", secret_file});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  Numbers numbers(10);
  CHECK(sum_of(*c, numbers.name()) == numbers.sum);
}

TEST_CASE("tcp: a client over TCP is refused, even with the secret", "[ipc][multiprocess][tcp]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  const TcpAddress at = tcp_address(d.get().tcp_address());
  RawPeer p(at.get(), at.len);
  handshake(p, read_secret(secret_file));
  p.hello_client();
  auto refused = p.next_of(ipc::FrameType::kRefused);
  REQUIRE(refused.has_value());
  CHECK(p.closed_by_peer());
  REQUIRE(d.wait_log("a client connecting over TCP"));
  // The local client on the Unix socket is served as always.
  auto c = connect(d.socket());
  eventually([&] { return status_of(*c).connections == 1; }, 20s, "the refused connection to be gone");
}

TEST_CASE("tcp: a TCP listener without a secret does not start", "[ipc][tcp]") {
  SocketDir dir;
  ipc::DispatcherOptions o;
  o.socket_path = dir.socket();
  o.tcp_listen = "tcp://127.0.0.1:0";
  o.log = [](const std::string&) {};
  auto d = ipc::Dispatcher::start(o);
  REQUIRE_FALSE(d.is_ok());
  CHECK(d.status().code() == Code::kInvalidArgument);
  CHECK_THAT(d.status().message(), Catch::Contains("needs a shared secret"));
  struct stat st;
  CHECK(::lstat(dir.socket().c_str(), &st) != 0);  // the Unix listener is gone too

  auto cli = run({kKura, "dispatcher", "--socket", dir.socket(), "--listen", "tcp://[::1]:0"});
  CHECK(cli.code != 0);
  CHECK_THAT(cli.err, Catch::Contains("needs a shared secret"));
}

TEST_CASE(
    "tcp: kura secret writes a 0600 file once, and a secret open to others or behind a symlink is refused",
    "[ipc][tcp]") {
  SocketDir dir;
  const std::string path = make_secret(dir, "secret");
  struct stat st;
  REQUIRE(::lstat(path.c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK((st.st_mode & 0777) == 0600);
  const std::string text = file_text(path);
  CHECK(text.size() == 65);
  auto secret = ipc::read_secret_file(path);
  REQUIRE(secret.is_ok());
  CHECK(secret->size() == 32);
  CHECK(read_secret(make_secret(dir, "another")) != *secret);

  auto again = run({kKura, "secret", path});
  CHECK(again.code != 0);
  CHECK_THAT(again.err, Catch::Contains("exists already"));
  CHECK(file_text(path) == text);

  REQUIRE(::chmod(path.c_str(), 0640) == 0);
  auto group = ipc::read_secret_file(path);
  REQUIRE_FALSE(group.is_ok());
  CHECK(group.status().code() == Code::kPermission);
  CHECK_THAT(group.status().message(), Catch::Contains("chmod 600"));
  auto dp = run({kKura, "dispatcher", "--socket", dir.socket(), "--listen", "tcp://127.0.0.1:0",
                 "--secret-file", path});
  CHECK(dp.code != 0);
  CHECK_THAT(dp.err, Catch::Contains("open to group or other"));
  REQUIRE(::chmod(path.c_str(), 0600) == 0);

  const std::string link = dir.dir() + "/link";
  REQUIRE(::symlink(path.c_str(), link.c_str()) == 0);
  auto linked = ipc::read_secret_file(link);
  REQUIRE_FALSE(linked.is_ok());
  CHECK(linked.status().code() == Code::kPermission);
  CHECK_THAT(linked.status().message(), Catch::Contains("symbolic link"));
  auto worker = run({kKura, "worker", "--connect", "tcp://127.0.0.1:9", "--secret-file", link});
  CHECK(worker.code != 0);
  CHECK_THAT(worker.err, Catch::Contains("symbolic link"));

  const std::string bad = dir.dir() + "/bad";
  {
    std::ofstream out(bad);
    out << "not hex\n";
  }
  REQUIRE(::chmod(bad.c_str(), 0600) == 0);
  auto garbled = ipc::read_secret_file(bad);
  REQUIRE_FALSE(garbled.is_ok());
  CHECK(garbled.status().code() == Code::kInvalidArgument);
}
