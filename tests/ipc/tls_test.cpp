// TLS 1.3 for workers over TCP (issue 16): forced on loopback (127.0.0.1
// and ::1), a pinned certificate that does not match, garbage in and after
// the TLS handshake, and, in a network namespace of the test's own, a
// dispatcher and workers on an address that is not loopback, where TLS is
// always used and plaintext is refused. The kura tool is the dispatcher and
// the workers; raw peers do the handshake by hand.
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>

#include "ipc_util.hpp"
#include "kura/ipc/secret.hpp"
#include "shm_guard.hpp"
#include "tcp_util.hpp"
#include "tls_internal.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

using ipc::detail::TlsContext;
using ipc::detail::TlsSession;

// Hands `s`'s output to the socket `fd`.
void send_output(RawPeer& p, TlsSession& s) {
  Bytes out;
  REQUIRE(s.take_output(out).is_ok());
  if (!out.empty()) p.write(out.data(), out.size());
}

// The worker's half of TLS over a raw peer that proved the secret, pinning
// `fingerprint`: the session once its handshake completed, or its error.
Result<std::unique_ptr<TlsSession>> tls_client(RawPeer& p, const std::string& fingerprint) {
  auto ctx = TlsContext::client(fingerprint);
  REQUIRE(ctx.is_ok());
  auto s = TlsSession::make(*ctx);
  REQUIRE(s.is_ok());
  for (;;) {
    auto done = (*s)->handshake();
    send_output(p, **s);
    if (!done) return done.status();
    if (*done) return std::move(s).value();
    pollfd pfd{p.fd(), POLLIN, 0};
    if (::poll(&pfd, 1, 20000) != 1) return Status(Code::kIo, "no answer within 20 s");
    std::byte buf[4096];
    const ssize_t n = ::read(p.fd(), buf, sizeof buf);
    if (n <= 0) return Status(Code::kIo, "the dispatcher closed the connection");
    REQUIRE((*s)->feed(std::span<const std::byte>(buf, static_cast<std::size_t>(n))).is_ok());
  }
}

// Two sessions in memory, bytes passed between them until both are done or
// one fails: the first error, or ok.
Status converse(TlsSession& client, TlsSession& server) {
  for (int round = 0; round < 8; ++round) {
    auto c = client.handshake();
    if (!c) return c.status();
    Bytes wire;
    REQUIRE(client.take_output(wire).is_ok());
    REQUIRE(server.feed(wire).is_ok());
    auto s = server.handshake();
    if (!s) return s.status();
    wire.clear();
    REQUIRE(server.take_output(wire).is_ok());
    REQUIRE(client.feed(wire).is_ok());
    if (*c && *s) return Status::ok();
  }
  return Status(Code::kIo, "the TLS handshake did not finish");
}

}  // namespace

TEST_CASE("tls: sessions in memory agree on the pinned certificate and refuse another", "[ipc][tls]") {
  SocketDir dir;
  const std::string secret = dir.dir() + "/secret";
  const std::string other = dir.dir() + "/other";
  REQUIRE(ipc::write_secret_file(secret).is_ok());
  REQUIRE(ipc::write_secret_file(other).is_ok());
  auto server_ctx = TlsContext::server(secret);
  INFO((server_ctx.is_ok() ? std::string() : server_ctx.status().to_string()));
  REQUIRE(server_ctx.is_ok());

  SECTION("the pinned certificate: data goes both ways") {
    auto client = TlsSession::make(*TlsContext::client(fingerprint_of(secret)));
    auto server = TlsSession::make(*server_ctx);
    REQUIRE(converse(**client, **server).is_ok());
    CHECK_THAT((*client)->describe(), Catch::StartsWith("TLSv1.3 "));
    const std::string hello = "a frame";
    REQUIRE((*client)->write(bytes_of(hello)).is_ok());
    Bytes wire;
    REQUIRE((*client)->take_output(wire).is_ok());
    CHECK(wire.size() > hello.size());
    CHECK(std::search(wire.begin(), wire.end(), bytes_of(hello).begin(), bytes_of(hello).end()) ==
          wire.end());
    REQUIRE((*server)->feed(wire).is_ok());
    std::byte out[64];
    auto n = (*server)->read(out);
    REQUIRE(n.is_ok());
    CHECK(std::string(reinterpret_cast<const char*>(out), *n) == hello);
  }
  SECTION("another certificate: the worker refuses it, naming both fingerprints") {
    auto client = TlsSession::make(*TlsContext::client(fingerprint_of(other)));
    auto server = TlsSession::make(*server_ctx);
    Status s = converse(**client, **server);
    CHECK(s.code() == Code::kPermission);
    CHECK_THAT(s.message(),
               Catch::Contains(fingerprint_of(secret)) && Catch::Contains(fingerprint_of(other)));
  }
  SECTION("garbage to a listener's session") {
    auto server = TlsSession::make(*server_ctx);
    const Bytes junk(300, std::byte{0x16});
    REQUIRE((*server)->feed(junk).is_ok());
    auto done = (*server)->handshake();
    REQUIRE_FALSE(done.is_ok());
    CHECK(done.status().code() == Code::kCorrupt);
  }
  SECTION("a key that is not the certificate's") {
    REQUIRE(::rename(ipc::key_path(other).c_str(), ipc::key_path(secret).c_str()) == 0);
    auto mismatched = TlsContext::server(secret);
    REQUIRE_FALSE(mismatched.is_ok());
    CHECK(mismatched.status().code() == Code::kInvalidArgument);
  }
}

TEST_CASE("tls: kura secret writes a 0600 key and a certificate beside the secret, and replaces none",
          "[ipc][tls]") {
  SocketDir dir;
  const std::string path = make_secret(dir, "secret");
  struct stat st;
  REQUIRE(::lstat(ipc::key_path(path).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0600);
  REQUIRE(::lstat(ipc::certificate_path(path).c_str(), &st) == 0);
  CHECK(S_ISREG(st.st_mode));
  CHECK(file_text(ipc::certificate_path(path)).rfind("-----BEGIN CERTIFICATE-----", 0) == 0);
  CHECK(fingerprint_of(make_secret(dir, "another")) != fingerprint_of(path));
  auto parsed = ipc::parse_fingerprint("SHA256:00");
  CHECK_FALSE(parsed.is_ok());
  auto upper = fingerprint_of(path);
  std::transform(upper.begin() + 7, upper.end(), upper.begin() + 7, ::toupper);
  CHECK(*ipc::parse_fingerprint(upper) == fingerprint_of(path));

  // A key left where a new secret's would go: nothing is written.
  const std::string fresh = dir.dir() + "/fresh";
  { std::ofstream(ipc::key_path(fresh)) << "mine\n"; }
  auto r = run({kKura, "secret", fresh});
  CHECK(r.code != 0);
  CHECK_THAT(r.err, Catch::Contains("exists already"));
  CHECK(::lstat(fresh.c_str(), &st) != 0);
  CHECK(::lstat(ipc::certificate_path(fresh).c_str(), &st) != 0);
  CHECK(file_text(ipc::key_path(fresh)) == "mine\n");
  // A key open to others is refused.
  REQUIRE(::chmod(ipc::key_path(path).c_str(), 0644) == 0);
  auto open_key = TlsContext::server(path);
  REQUIRE_FALSE(open_key.is_ok());
  CHECK(open_key.status().code() == Code::kPermission);
}

TEST_CASE("tls: a kura worker forced to TLS over tcp://127.0.0.1 runs a local client's tasks",
          "[ipc][multiprocess][tls]") {
  remote_worker_sums("127.0.0.1", true);
}

TEST_CASE("tls: a kura worker forced to TLS over tcp://[::1] runs a local client's tasks",
          "[ipc][multiprocess][tls]") {
  if (!ipv6_loopback()) {
    WARN("skipped: this machine has no IPv6 loopback address (::1) to listen on");
    return;
  }
  remote_worker_sums("[::1]", true);
}

TEST_CASE("tls: a worker pinning another certificate, or none, is refused while a TLS worker keeps working",
          "[ipc][multiprocess][tls]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  const std::string other_file = make_secret(dir, "other");
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  const std::string address = d.get().tcp_address();

  Process good({kKura, "worker", "--connect", address, "--secret-file", secret_file, "--tls", "--fingerprint",
                fingerprint_of(secret_file)});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  Numbers numbers(1000);
  REQUIRE(sum_of(*c, numbers.name()) == numbers.sum);
  REQUIRE(d.wait_log("over TLS 1.3"));
  // A frame of 480 KB inside TLS: many records, each byte as it was sent.
  {
    std::vector<double> xs(60000);
    for (std::size_t i = 0; i < xs.size(); ++i) xs[i] = static_cast<double>(i) * 0.5;
    auto id =
        c->submit(call("echo", {ipc::Arg::copy(Value::array<Dtype::kF64>(std::span<const double>(xs)))}));
    REQUIRE(id.is_ok());
    auto r = c->wait(*id);
    INFO(r.describe());
    REQUIRE(r.ok());
    auto ys = r.value().array<Dtype::kF64>();
    REQUIRE(ys.is_ok());
    CHECK(std::equal(xs.begin(), xs.end(), ys->begin(), ys->end()));
  }

  {
    Process bad({kKura, "worker", "--connect", address, "--secret-file", secret_file, "--tls",
                 "--fingerprint", fingerprint_of(other_file)});
    auto code = bad.wait(20s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    CHECK_THAT(bad.err(), Catch::Contains("the dispatcher's certificate is " + fingerprint_of(secret_file) +
                                          ", not the pinned " + fingerprint_of(other_file)));
    REQUIRE(d.wait_log("the worker refused this dispatcher's certificate: it pins another fingerprint"));
  }
  {
    auto none = run({kKura, "worker", "--connect", address, "--secret-file", secret_file, "--tls"});
    CHECK(none.code != 0);
    CHECK_THAT(none.err, Catch::Contains("TLS needs the fingerprint") && Catch::Contains("--fingerprint"));
    auto garbled = run(
        {kKura, "worker", "--connect", address, "--secret-file", secret_file, "--fingerprint", "sha256:xyz"});
    CHECK(garbled.code != 0);
    CHECK_THAT(garbled.err, Catch::Contains("is not a certificate fingerprint"));
  }
  CHECK(sum_of(*c, numbers.name()) == numbers.sum);
  auto st = status_of(*c);
  REQUIRE(st.workers.size() == 1);
  CHECK(st.workers[0].tasks_done == 3);
  CHECK(d.log().find("closed connection of worker") == std::string::npos);
}

TEST_CASE("tls: garbage in the TLS handshake or inside the TLS stream closes only that connection",
          "[ipc][multiprocess][tls]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  const std::string secret = read_secret(secret_file);
  const std::string fingerprint = fingerprint_of(secret_file);
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  const std::string address = d.get().tcp_address();
  const TcpAddress at = tcp_address(address);
  Process good({kKura, "worker", "--connect", address, "--secret-file", secret_file, "--tls", "--fingerprint",
                fingerprint});
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  Numbers numbers(1000);
  REQUIRE(sum_of(*c, numbers.name()) == numbers.sum);
  const std::vector<std::uint8_t> junk(500, 0xab);

  // Asked for TLS, then sent junk for a ClientHello.
  {
    RawPeer p(at.get(), at.len);
    CHECK(handshake(p, secret, ipc::detail::kWantTls).tls);
    p.try_write(junk.data(), junk.size());
    CHECK(p.closed_by_peer());
    REQUIRE(d.wait_log("TLS: the TLS handshake failed"));
  }
  // TLS up, a worker's hello inside it, then junk that is not a TLS record.
  {
    RawPeer p(at.get(), at.len);
    CHECK(handshake(p, secret, ipc::detail::kWantTls).tls);
    auto session = tls_client(p, fingerprint);
    INFO((session.is_ok() ? std::string() : session.status().to_string()));
    REQUIRE(session.is_ok());
    p.try_write(junk.data(), junk.size());
    CHECK(p.closed_by_peer());
    REQUIRE(d.wait_log("the peer sent bytes that are not valid TLS"));
  }
  // A frame in plaintext where TLS was agreed.
  {
    RawPeer p(at.get(), at.len);
    CHECK(handshake(p, secret, ipc::detail::kWantTls).tls);
    p.hello_worker({"sum"});
    CHECK(p.closed_by_peer());
    eventually([&] { return log_count(d, "TLS: the TLS handshake failed") == 2; }, 20s,
               "the plaintext hello to be refused and logged");
  }
  // The TLS worker never noticed.
  CHECK(sum_of(*c, numbers.name()) == numbers.sum);
  auto st = status_of(*c);
  REQUIRE(st.workers.size() == 1);
  CHECK(st.workers[0].tasks_done == 2);
  CHECK(d.log().find("closed connection of worker") == std::string::npos);
}

TEST_CASE(
    "tls: a loopback listener without a certificate refuses a worker asking for TLS, naming kura secret",
    "[ipc][multiprocess][tls]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  const std::string fingerprint = fingerprint_of(secret_file);
  REQUIRE(::unlink(ipc::certificate_path(secret_file).c_str()) == 0);
  REQUIRE(::unlink(ipc::key_path(secret_file).c_str()) == 0);
  EmbeddedDispatcher d(dir, 0, on_loopback(secret_file));
  auto w = run({kKura, "worker", "--connect", d.get().tcp_address(), "--secret-file", secret_file, "--tls",
                "--fingerprint", fingerprint});
  CHECK(w.code != 0);
  REQUIRE(d.wait_log("it asked for TLS, and this listener has no certificate"));
  CHECK_THAT(d.log(), Catch::Contains("run kura secret"));
}
