// TLS off loopback (issue 16): in a network namespace of the test's own,
// with 10.77.0.1 on its loopback device (an address that is not loopback,
// and reaches nothing outside), a kura dispatcher listens there and kura
// workers connect: TLS is always used, a worker without the fingerprint
// refuses to connect, a plaintext peer is refused by the dispatcher, and a
// dispatcher without a certificate does not start. Where namespaces are
// refused (no privilege), the test says so and skips.
#include <fcntl.h>
#include <sched.h>
#include <sys/socket.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cstring>
#include <thread>

#include "ipc_util.hpp"
#include "kura/ipc/secret.hpp"
#include "shm_guard.hpp"
#include "tcp_util.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

constexpr const char* kAddress = "10.77.0.1";

std::string find_tool(const std::string& name) {
  for (const char* dir : {"/usr/sbin", "/usr/bin", "/sbin", "/bin"}) {
    const std::string path = std::string(dir) + "/" + name;
    if (::access(path.c_str(), X_OK) == 0) return path;
  }
  return "";
}

// The tools the test needs (iproute2, util-linux), and whether this
// process may make a network namespace; else why not.
struct Namespaces {
  std::string ip = find_tool("ip");
  std::string unshare = find_tool("unshare");
  std::string nsenter = find_tool("nsenter");
  std::string refused;

  Namespaces() {
    if (ip.empty() || unshare.empty() || nsenter.empty()) {
      refused = "ip (iproute2), unshare and nsenter (util-linux) are needed";
      return;
    }
    auto r = run({unshare, "--net", "/bin/true"});
    if (r.code != 0)
      refused = "this process may not create a network namespace (unshare --net: " + r.err + ")";
  }

  // argv that runs the kura dispatcher in a new network namespace whose
  // loopback device is up and also holds kAddress.
  std::vector<std::string> dispatcher(const std::string& socket, const std::string& secret_file) const {
    const std::string script = "set -e; \"$1\" link set lo up; \"$1\" addr add " + std::string(kAddress) +
                               "/32 dev lo; exec \"$2\" dispatcher --socket \"$3\" --listen tcp://" +
                               kAddress + ":0 --secret-file \"$4\"";
    return {unshare, "--net", "/bin/sh", "-c", script, "sh", ip, kKura, socket, secret_file};
  }

  // argv that runs `args` in the network namespace of process `pid`.
  std::vector<std::string> inside(pid_t pid, std::vector<std::string> args) const {
    args.insert(args.begin(), {nsenter, "--net=/proc/" + std::to_string(pid) + "/ns/net"});
    return args;
  }
};

// A TCP connection to `at` made inside the network namespace of process
// `pid` (a thread joins it, connects, and ends); -1 if that fails.
int connect_inside(pid_t pid, const TcpAddress& at) {
  int result = -1;
  std::thread t([&] {
    const int ns = ::open(("/proc/" + std::to_string(pid) + "/ns/net").c_str(), O_RDONLY | O_CLOEXEC);
    if (ns < 0) return;
    if (::setns(ns, CLONE_NEWNET) == 0) {
      const int fd = ::socket(at.addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
      if (fd >= 0 && ::connect(fd, at.get(), at.len) == 0) {
        result = fd;
      } else if (fd >= 0) {
        ::close(fd);
      }
    }
    ::close(ns);
  });
  t.join();
  return result;
}

}  // namespace

TEST_CASE("tls: off loopback (a network namespace) every worker connection is TLS, plaintext is refused",
          "[ipc][multiprocess][tls][netns]") {
  const Namespaces ns;
  if (!ns.refused.empty()) {
    WARN("skipped: " + ns.refused);
    return;
  }
  ShmGuard guard;
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  const std::string secret = read_secret(secret_file);
  const std::string fingerprint = fingerprint_of(secret_file);

  Process dp(ns.dispatcher(dir.socket(), secret_file));
  auto unix_line = dp.read_line(20s);
  INFO(dp.err());
  REQUIRE(unix_line);
  auto tcp_line = dp.read_line(20s);
  REQUIRE(tcp_line);
  REQUIRE(tcp_line->rfind("listening on tcp://" + std::string(kAddress) + ":", 0) == 0);
  const std::string address = tcp_line->substr(std::strlen("listening on "));

  // Without the fingerprint the worker refuses: it would have to be TLS.
  {
    Process none(ns.inside(dp.pid(), {kKura, "worker", "--connect", address, "--secret-file", secret_file}));
    auto code = none.wait(20s);
    REQUIRE(code.has_value());
    CHECK(*code != 0);
    CHECK_THAT(none.err(),
               Catch::Contains(address + " is not a loopback address, so the connection is TLS") &&
                   Catch::Contains("--fingerprint"));
  }
  // A plaintext peer with the secret: the dispatcher asks for TLS in its
  // greeting, and refuses the frame that comes instead.
  {
    RawPeer p(RawPeer::Adopt{}, connect_inside(dp.pid(), tcp_address(address)));
    CHECK(handshake(p, secret, 0).tls);
    p.hello_worker({"sum"});
    CHECK(p.closed_by_peer());
  }
  Process worker(ns.inside(dp.pid(), {kKura, "worker", "--connect", address, "--secret-file", secret_file,
                                      "--fingerprint", fingerprint}));
  {
    auto c = connect(dir.socket());
    wait_workers(*c, 1);
    Numbers numbers(100000);
    CHECK(sum_of(*c, numbers.name()) == numbers.sum);
    auto st = status_of(*c);
    REQUIRE(st.workers.size() == 1);
    CHECK(st.workers[0].tasks_done == 1);
  }
  dp.signal(SIGTERM);
  CHECK(dp.wait(20s) == 0);
  CHECK(worker.wait(20s).has_value());
  const std::string from = "a TCP connection from tcp://" + std::string(kAddress) + ":";
  CHECK_THAT(dp.err(), Catch::Contains("accepted " + from) && Catch::Contains("over TLS 1.3"));
  CHECK_THAT(dp.err(),
             Catch::Contains("refused " + from) && Catch::Contains("TLS: the TLS handshake failed"));
}

TEST_CASE("tls: a dispatcher off loopback without a certificate does not start, naming kura secret",
          "[ipc][multiprocess][tls][netns]") {
  const Namespaces ns;
  if (!ns.refused.empty()) {
    WARN("skipped: " + ns.refused);
    return;
  }
  SocketDir dir;
  const std::string secret_file = make_secret(dir, "secret");
  REQUIRE(::unlink(ipc::certificate_path(secret_file).c_str()) == 0);
  Process dp(ns.dispatcher(dir.socket(), secret_file));
  auto code = dp.wait(20s);
  REQUIRE(code.has_value());
  CHECK(*code != 0);
  CHECK_THAT(dp.err(), Catch::Contains("is missing") && Catch::Contains("kura secret"));
}
