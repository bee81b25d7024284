// Helpers of the TCP and TLS tests (tcp_util.hpp).
#include "tcp_util.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <iterator>

#include "endpoint_internal.hpp"
#include "kura/ipc/secret.hpp"
#include "shm_guard.hpp"

namespace kura::test {

using namespace std::chrono_literals;

// Writes a secret with `kura secret` into `dir`; returns its path.
std::string make_secret(const SocketDir& dir, const std::string& name) {
  const std::string path = dir.dir() + "/" + name;
  auto r = run({kKura, "secret", path});
  INFO(r.err);
  REQUIRE(r.code == 0);
  // It prints the certificate's fingerprint.
  CHECK_THAT(r.out, Catch::Contains("fingerprint: " + fingerprint_of(path) + "\n"));
  return path;
}

std::string fingerprint_of(const std::string& secret_file) {
  auto fp = ipc::certificate_fingerprint(ipc::certificate_path(secret_file));
  INFO((fp.is_ok() ? std::string() : fp.status().to_string()));
  REQUIRE(fp.is_ok());
  return *fp;
}

std::string file_text(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

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

std::string read_secret(const std::string& path) {
  auto s = ipc::read_secret_file(path);
  INFO((s.is_ok() ? std::string() : s.status().to_string()));
  REQUIRE(s.is_ok());
  return *s;
}

std::span<const std::byte> bytes_of(const std::string& s) {
  return std::span<const std::byte>(reinterpret_cast<const std::byte*>(s.data()), s.size());
}

// Does the connector's half of the handshake by hand with `secret`,
// greeting with `flags`, and checks the dispatcher's answer.
RawHandshake handshake(RawPeer& p, const std::string& secret, std::uint8_t flags) {
  RawHandshake h;
  ipc::detail::Greeting theirs;
  REQUIRE(p.read_exact(theirs.data(), theirs.size()));
  REQUIRE(std::memcmp(theirs.data(), ipc::detail::kAuthMagic.data(), ipc::detail::kAuthMagic.size()) == 0);
  std::memcpy(h.dispatcher_nonce.data(), theirs.data() + ipc::detail::kAuthMagic.size(),
              ipc::detail::kNonceSize);
  auto mine = ipc::detail::make_nonce();
  REQUIRE(mine.is_ok());
  h.greeting = ipc::detail::make_greeting(*mine, flags);
  h.answer =
      ipc::detail::compute_answer(bytes_of(secret), ipc::detail::AuthSide::kConnector, theirs, h.greeting);
  p.write(h.greeting.data(), h.greeting.size());
  p.write(h.answer.data(), h.answer.size());
  ipc::detail::Answer back;
  REQUIRE(p.read_exact(back.data(), back.size()));
  CHECK(ipc::detail::verify_answer(bytes_of(secret), ipc::detail::AuthSide::kListener, h.greeting, theirs,
                                   back));
  h.tls = ((std::to_integer<unsigned>(theirs.back()) | flags) & ipc::detail::kWantTls) != 0;
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

Numbers::Numbers(std::size_t n) {
  std::vector<double> xs(n);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i);
  auto s = shm::share(Value::array<Dtype::kF64>(std::span<const double>(xs)));
  REQUIRE(s.is_ok());
  shared.emplace(std::move(s).value());
  sum = static_cast<double>(n - 1) * static_cast<double>(n) / 2;
}

void remote_worker_sums(const std::string& host, bool tls) {
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

  std::vector<std::string> argv{kKura, "worker", "--connect", address, "--secret-file", secret};
  if (tls) argv.insert(argv.end(), {"--tls", "--fingerprint", fingerprint_of(secret)});
  Process worker(argv);
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
  const bool used_tls = dp.err().find("accepted a TCP connection from tcp://" + host) != std::string::npos &&
                        dp.err().find("over TLS 1.3") != std::string::npos;
  CHECK(used_tls == tls);
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

}  // namespace kura::test
