// Objects that follow names (issue 16): a worker whose region directory is
// not the dispatcher's (as on another host) pulls the bytes behind its
// tasks' names over its TCP connection, checked, into its own directory,
// keeps them for the next task, and sends its results back as regions the
// client maps by name.
#include <arpa/inet.h>
#include <dirent.h>
#include <netinet/in.h>
#include <poll.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "endpoint_internal.hpp"
#include "ipc_util.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "objects_util.hpp"
#include "private_shm_dir.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// A TCP relay between a worker and the dispatcher that flips one byte of
// what the dispatcher sends, `at` bytes into the stream.
class FlippingRelay {
 public:
  FlippingRelay(const std::string& to, std::uint64_t at) : flip_at_(at) {
    auto e = ipc::detail::parse_endpoint(to);
    REQUIRE(e.is_ok());
    target_.sin_family = AF_INET;
    target_.sin_port = htons(e->port);
    REQUIRE(::inet_pton(AF_INET, e->host.c_str(), &target_.sin_addr) == 1);
    listen_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in me{};
    me.sin_family = AF_INET;
    me.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(::bind(listen_, reinterpret_cast<sockaddr*>(&me), sizeof me) == 0);
    REQUIRE(::listen(listen_, 1) == 0);
    socklen_t len = sizeof me;
    REQUIRE(::getsockname(listen_, reinterpret_cast<sockaddr*>(&me), &len) == 0);
    address_ = "tcp://127.0.0.1:" + std::to_string(ntohs(me.sin_port));
    thread_ = std::thread([this] { relay(); });
  }
  ~FlippingRelay() {
    stop_ = true;
    thread_.join();
    ::close(listen_);
  }
  const std::string& address() const { return address_; }
  bool flipped() const { return flipped_; }

 private:
  void relay() {
    pollfd p{listen_, POLLIN, 0};
    while (!stop_ && ::poll(&p, 1, 50) == 0) {
    }
    if (stop_) return;
    const int worker = ::accept4(listen_, nullptr, nullptr, SOCK_CLOEXEC);
    const int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (worker < 0 || ::connect(up, reinterpret_cast<sockaddr*>(&target_), sizeof target_) != 0) return;
    std::vector<char> buf(1 << 16);
    std::uint64_t down = 0;
    while (!stop_) {
      pollfd fds[2] = {{worker, POLLIN, 0}, {up, POLLIN, 0}};
      if (::poll(fds, 2, 50) <= 0) continue;
      bool closed = false;
      for (int i = 0; i < 2 && !closed; ++i) {
        if ((fds[i].revents & (POLLIN | POLLHUP | POLLERR)) == 0) continue;
        const ssize_t n = ::read(fds[i].fd, buf.data(), buf.size());
        if (n <= 0) {
          closed = true;
          break;
        }
        if (i == 1 && !flipped_ && down + static_cast<std::uint64_t>(n) > flip_at_) {
          buf[flip_at_ - down] ^= 0x20;
          flipped_ = true;
        }
        if (i == 1) down += static_cast<std::uint64_t>(n);
        const int to = i == 0 ? up : worker;
        for (ssize_t off = 0; off < n;) {
          const ssize_t w = ::write(to, buf.data() + off, static_cast<std::size_t>(n - off));
          if (w <= 0) break;
          off += w;
        }
      }
      if (closed) break;
    }
    ::close(worker);
    ::close(up);
  }

  std::uint64_t flip_at_;
  sockaddr_in target_{};
  int listen_ = -1;
  std::string address_;
  std::thread thread_;
  std::atomic<bool> stop_{false};
  std::atomic<bool> flipped_{false};
};

}  // namespace

TEST_CASE(
    "objects: a worker that cannot see the dispatcher's regions pulls a name once, a sub-tree alone, and "
    "sends its results back",
    "[ipc][multiprocess][tcp][objects]") {
  ShmGuard guard;
  RemoteSetup setup;
  auto& [dir, remote, secret, d, worker, c] = setup;

  // 64 MiB the worker cannot map by name: it arrives once, whole.
  const std::size_t n = std::size_t{8} << 20;
  shm::Shared big = share_f64(n, 1.0);
  {
    auto r = run_task(*c, call("sum", {ipc::Arg::ref(big.name())}));
    INFO(r.describe() << "\n" << worker->err());
    REQUIRE(r.ok());
    CHECK(f64_at(r.value(), 0) == static_cast<double>(n - 1) * static_cast<double>(n) / 2);
  }
  auto s1 = status_of(*c);
  CHECK(s1.pulls == 1);
  CHECK(s1.pulled_bytes == big.size());
  // Its copy lives in the worker's own directory, under the worker's owner.
  CHECK(remote.regions().size() == 1);

  // The same name again: the worker's copy is current, nothing is sent.
  {
    auto r = run_task(*c, call("sum", {ipc::Arg::ref(big.name())}));
    REQUIRE(r.ok());
  }
  auto s2 = status_of(*c);
  CHECK(s2.pulls == 2);
  CHECK(s2.pulled_bytes == s1.pulled_bytes);

  // A path-form name: only the addressed sub-tree crosses, in a region of
  // its own (the 8 MB sibling stays behind).
  std::vector<double> ones(1'000'000, 1.0);
  auto list = shm::share(Value::list(
      {Value::array<Dtype::kF64>(std::span<const double>(ones)), Value::f64({1, 2, 3, 4, 5, 6, 7, 8, 9})}));
  REQUIRE(list.is_ok());
  {
    auto r = run_task(*c, call("sum", {ipc::Arg::ref(list->name() + "[2]")}));
    INFO(r.describe());
    REQUIRE(r.ok());
    CHECK(f64_at(r.value(), 0) == 45);
  }
  auto s3 = status_of(*c);
  CHECK(s3.pulls == 3);
  CHECK(s3.pulled_bytes - s2.pulled_bytes < 4096);

  // Results come back as regions of the client's, mapped by name here: one
  // the function wrote in place (scale), and a large value (echo).
  shm::Shared mid = share_f64(1'000'000, 1.0);
  {
    auto r = run_task(*c, call("scale", {ipc::Arg::ref(mid.name()), num(2.0)}));
    INFO(r.describe());
    REQUIRE(r.ok());
    CHECK_FALSE(r.name().empty());
    CHECK(r.region_size() > 8'000'000);
    CHECK(f64_at(r.value(), 123456) == 2.0 * 123456);
    auto pushed = status_of(*c).pushed_bytes;
    CHECK(pushed >= 8'000'000);
  }
  {
    auto r = run_task(*c, call("echo", {ipc::Arg::ref(mid.name())}));
    INFO(r.describe());
    REQUIRE(r.ok());
    CHECK_FALSE(r.name().empty());
    CHECK(f64_at(r.value(), 999'999) == 999'999.0);
  }
  // The second use of `mid` sent nothing again.
  CHECK(status_of(*c).pulled_bytes == s3.pulled_bytes + mid.size());

  c.reset();
  d.stop();
  auto code = worker->wait(20s);
  INFO(worker->err());
  CHECK(code.has_value());
  // The worker's copies went with it; results were pushed, not left there.
  CHECK(remote.regions().empty());
}

TEST_CASE("objects: a byte flipped on the way is caught, the task ends in an error and the worker goes on",
          "[ipc][multiprocess][tcp][objects]") {
  ShmGuard guard;
  SocketDir dir;
  RemoteDir remote;
  const std::string secret = make_secret(dir);
  EmbeddedDispatcher d(dir, 0, on_loopback(secret));
  // 16 MiB of unhashed data: the per-chunk checksums are what catch it.
  shm::Shared data = share_f64(std::size_t{2} << 20, 1.0, false);
  FlippingRelay relay(d.get().tcp_address(), std::uint64_t{4} << 20);
  auto worker = remote_worker(remote, relay.address(), secret);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  auto r = run_task(*c, call("sum", {ipc::Arg::ref(data.name())}));
  CHECK(relay.flipped());
  CHECK(r.outcome() == ipc::Outcome::kError);
  CHECK_THAT(r.message(), Catch::Contains("damaged"));
  // The connection and the worker are fine: the next task pulls again.
  auto again = run_task(*c, call("sum", {ipc::Arg::ref(data.name())}));
  INFO(again.describe());
  REQUIRE(again.ok());
  const double m = static_cast<double>(std::size_t{2} << 20);
  CHECK(f64_at(again.value(), 0) == (m - 1) * m / 2);
  c.reset();
  d.stop();
  CHECK(worker->wait(20s).has_value());
  CHECK(remote.regions().empty());
}

TEST_CASE("objects: a remote worker killed mid-transfer ends its task and leaves nothing either side",
          "[ipc][multiprocess][tcp][objects]") {
  ShmGuard guard;
  SocketDir dir;
  RemoteDir remote;
  const std::string secret = make_secret(dir);
  EmbeddedDispatcher d(dir, 0, on_loopback(secret));
  shm::Shared data = share_f64(std::size_t{32} << 20, 1.0);  // 256 MiB
  auto worker = remote_worker(remote, d.get().tcp_address(), secret);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  auto id = c->submit(call("sum", {ipc::Arg::ref(data.name())}));
  REQUIRE(id.is_ok());
  eventually([&] { return status_of(*c).pulls == 1; }, 20s, "the worker's pull");
  worker->signal(SIGKILL);
  auto r = c->wait(*id);
  CHECK(r.outcome() == ipc::Outcome::kWorkerLost);
  CHECK(worker->wait(20s).has_value());
  // The worker's half-written copy is an orphan of a dead writer: prune
  // takes it, as it takes any dead process's files.
  auto pruned = run({"/usr/bin/env", "KURA_SHM_DIR=" + remote.path(), kKura, "prune"});
  INFO(pruned.err);
  CHECK(pruned.code == 0);
  CHECK(remote.regions().empty());
}

TEST_CASE("objects: a worker gets only the names of the task it runs, a sub-tree without its parent",
          "[ipc][multiprocess][objects]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0);
  auto c = connect(d.socket());
  auto secret_data = shm::share(Value::f64({42}));
  REQUIRE(secret_data.is_ok());
  auto list = shm::share(Value::list({Value::f64({1, 2}), Value::f64({3, 4, 5})}));
  REQUIRE(list.is_ok());
  const std::string child = list->name() + "[2]";

  auto pull = [](const std::string& name, std::uint64_t have = 0) {
    auto p = ipc::detail::encode_pull(ipc::detail::Pull{name, have});
    REQUIRE(p.is_ok());
    return std::move(p).value();
  };
  RawPeer fake(d.socket());
  fake.hello_worker({"fake"});
  REQUIRE(fake.next_of(ipc::FrameType::kWelcome).has_value());
  auto id = c->submit(call("fake", {ipc::Arg::ref(child)}));
  REQUIRE(id.is_ok());
  auto task = fake.next_of(ipc::FrameType::kTask);
  REQUIRE(task.has_value());

  // Its own argument: the sub-tree alone, in a region of its own.
  fake.frame(ipc::FrameType::kPull, task->header.id, pull(child));
  auto info_frame = fake.next_of(ipc::FrameType::kObject);
  REQUIRE(info_frame.has_value());
  auto info = ipc::detail::decode_object(info_frame->payload);
  REQUIRE(info.is_ok());
  CHECK(info->message.empty());
  CHECK(info->size < list->size());
  Bytes image;
  while (image.size() < info->size) {
    auto chunk = fake.next_of(ipc::FrameType::kChunk);
    REQUIRE(chunk.has_value());
    auto data = ipc::detail::decode_chunk(chunk->payload, info->checksums);
    REQUIRE(data.is_ok());
    REQUIRE(data->offset == image.size());
    image.insert(image.end(), data->data.begin(), data->data.end());
  }
  auto region = Region::open(image);
  REQUIRE(region.is_ok());
  auto root = region->root();
  REQUIRE(root.is_ok());
  auto xs = root->array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  CHECK(std::vector<double>(xs->begin(), xs->end()) == std::vector<double>{3, 4, 5});

  // The same again with the identity it was given: unchanged, no bytes.
  fake.frame(ipc::FrameType::kPull, task->header.id, pull(child, info->identity));
  auto again = fake.next_of(ipc::FrameType::kObject);
  REQUIRE(again.has_value());
  auto same = ipc::detail::decode_object(again->payload);
  REQUIRE(same.is_ok());
  CHECK(same->unchanged);

  // The parent of its argument, or a name of nobody's task: the connection goes.
  SECTION("the parent") {
    fake.frame(ipc::FrameType::kPull, task->header.id, pull(list->name()));
  }
  SECTION("another region") {
    fake.frame(ipc::FrameType::kPull, task->header.id, pull(secret_data->name()));
  }
  SECTION("a task it does not run") {
    fake.frame(ipc::FrameType::kPull, task->header.id + 1, pull(child));
  }
  CHECK(fake.closed_by_peer());
  CHECK(d.wait_log("pull: "));
  auto r = c->wait_for(*id, 20s);
  REQUIRE(r.has_value());
  CHECK(r->outcome() == ipc::Outcome::kWorkerLost);
}

TEST_CASE("objects: a function sees the name the task gave and the name of the worker's copy",
          "[ipc][multiprocess][tcp][objects]") {
  ShmGuard guard;
  RemoteSetup setup({"--plugin", KURA_TEST_PLUGIN});
  shm::Shared data = share_f64(1000, 1.0);
  auto r = run_task(*setup.c, call("arg_names", {ipc::Arg::ref(data.name()), num(1.0)}));
  INFO(r.describe() << "\n" << setup.worker->err());
  REQUIRE(r.ok());
  auto names = r.value();
  REQUIRE(names.length() == 4);
  auto at = [&](std::uint64_t i) { return std::string(names.string(i)->bytes); };
  // The task's name, and a copy of the worker's own under another name.
  CHECK(at(0) == data.name());
  CHECK_FALSE(at(1).empty());
  CHECK(at(1) != data.name());
  // An inline argument has neither.
  CHECK(at(2).empty());
  CHECK(at(3).empty());
}
