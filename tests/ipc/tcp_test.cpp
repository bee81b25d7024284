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
#include "tcp_util.hpp"
#include "transport_internal.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

TEST_CASE("tcp: a kura worker over tcp://127.0.0.1 runs a local client's tasks", "[ipc][multiprocess][tcp]") {
  remote_worker_sums("127.0.0.1", false);
}

TEST_CASE("tcp: a kura worker over tcp://[::1] runs a local client's tasks", "[ipc][multiprocess][tcp]") {
  if (!ipv6_loopback()) {
    WARN("skipped: this machine has no IPv6 loopback address (::1) to listen on");
    return;
  }
  remote_worker_sums("[::1]", false);
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
    const RawHandshake recorded = handshake(first, secret, 0);
    RawPeer again(at.get(), at.len);
    ipc::detail::Greeting fresh;
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
      ipc::detail::Greeting greeting;
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
  handshake(p, read_secret(secret_file), 0);
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
