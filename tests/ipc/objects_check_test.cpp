// The dispatcher checks a result region a remote worker pushed off its loop
// (issue 16): meanwhile it serves every other peer, and a worker or client
// that leaves before the check ends leaves nothing behind.
#include <catch2/catch.hpp>
#include <chrono>

#include "ipc_util.hpp"
#include "kura/shm/region.hpp"
#include "message_internal.hpp"
#include "objects_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// A million nodes take seconds to check, a minute under ASan on a loaded
// machine: every wait for the check's end allows this long.
constexpr int kCheckMs = 300'000;

// A hashed region that is slow to check for its size: a million nodes, each
// hashed and checked on its own (about 140 MiB).
shm::Shared many_nodes() {
  std::vector<Value> kids;
  kids.reserve(std::size_t{1} << 20);
  for (std::size_t i = 0; i < (std::size_t{1} << 20); ++i)
    kids.push_back(Value::f64({static_cast<double>(i)}));
  auto s = shm::share(Value::list(std::move(kids)));
  REQUIRE(s.is_ok());
  return std::move(s).value();
}

// A worker on a raw connection with the function "fake", whose result it
// pushes by hand.
struct FakePusher {
  RawPeer peer;
  std::uint64_t task = 0;

  explicit FakePusher(const std::string& socket) : peer(socket) {
    peer.hello_worker({"fake"});
    REQUIRE(peer.next_of(ipc::FrameType::kWelcome).has_value());
  }

  // Submits a task of "fake" through `c`, takes it, and pushes `image` as
  // its result.
  ipc::TaskId run(ipc::Client& c, std::span<const std::byte> image) {
    auto id = c.submit(call("fake"));
    REQUIRE(id.is_ok());
    auto t = peer.next_of(ipc::FrameType::kTask);
    REQUIRE(t.has_value());
    task = t->header.id;
    auto info = ipc::detail::encode_push(ipc::detail::PushInfo{image.size(), false});
    REQUIRE(info.is_ok());
    peer.frame(ipc::FrameType::kPush, task, *info);
    for (std::uint64_t at = 0; at < image.size(); at += ipc::detail::kChunkData) {
      const auto data =
          image.subspan(at, std::min<std::uint64_t>(ipc::detail::kChunkData, image.size() - at));
      const Bytes head = ipc::detail::encode_chunk_head(at, data, false);
      peer.header(ipc::FrameType::kChunk, task, static_cast<std::uint32_t>(head.size() + data.size()));
      peer.write(head.data(), head.size());
      peer.write(data.data(), data.size());
    }
    for (;;) {
      auto ack = peer.next_of(ipc::FrameType::kAck, kCheckMs);
      REQUIRE(ack.has_value());
      auto received = ipc::detail::decode_ack(ack->payload);
      REQUIRE(received.is_ok());
      if (*received == image.size()) return *id;
    }
  }
};

// The hand-driven worker sends no heartbeats: a dispatcher that waits for
// them as long as a check may take.
void patient(ipc::DispatcherOptions& o) {
  o.heartbeat_timeout_ms = kCheckMs;
}

}  // namespace

TEST_CASE("objects: while a pushed result is checked the dispatcher answers status and runs other tasks",
          "[ipc][multiprocess][objects]") {
  ShmGuard guard;
  // Made first: the raw worker sends no heartbeat while it is made.
  shm::Shared result = many_nodes();
  auto mapped = result.map();
  REQUIRE(mapped.is_ok());
  SocketDir dir;
  EmbeddedDispatcher d(dir, 1, patient);
  auto c = connect(d.socket());
  wait_workers(*c, 1);
  FakePusher fake(d.socket());
  wait_workers(*c, 2);

  const ipc::TaskId id = fake.run(*c, mapped->region().bytes());
  // Every byte is in; the check takes a while (seconds here). Another
  // client is answered, and a task on the other worker runs to its end,
  // meanwhile. Whether they finish before the check does depends on the
  // machine's load, so the order is not asserted: the check running off
  // the loop is what lets them not wait for it.
  auto other = connect(d.socket());
  CHECK(status_of(*other).pushed_bytes == result.size());
  auto small = run_task(*other, call("sum", {num(2.5)}));
  INFO(small.describe());
  REQUIRE(small.ok());

  auto stored_frame = fake.peer.next_of(ipc::FrameType::kStored, kCheckMs);
  REQUIRE(stored_frame.has_value());
  auto stored = ipc::detail::decode_stored(stored_frame->payload);
  REQUIRE(stored.is_ok());
  INFO(stored->message);
  REQUIRE(stored->message.empty());
  auto done = ipc::detail::encode_result(ipc::Outcome::kOk, "", stored->name, nullptr);
  REQUIRE(done.is_ok());
  fake.peer.frame(ipc::FrameType::kDone, fake.task, *done);
  auto r = c->wait(id);
  INFO(r.describe());
  REQUIRE(r.ok());
  CHECK(r.name() == stored->name);
  CHECK(r.value().length() == result.map()->node().length());
}

TEST_CASE("objects: a worker or client that leaves while a pushed result is checked leaves no region behind",
          "[ipc][multiprocess][objects]") {
  ShmGuard guard;
  shm::Shared result = many_nodes();
  auto mapped = result.map();
  REQUIRE(mapped.is_ok());
  const auto before = shm_entries();
  SocketDir dir;
  EmbeddedDispatcher d(dir, 0, patient);
  auto c = connect(d.socket());
  auto fake = std::make_unique<FakePusher>(d.socket());
  wait_workers(*c, 1);

  SECTION("the worker") {
    const ipc::TaskId id = fake->run(*c, mapped->region().bytes());
    fake.reset();
    auto r = c->wait(id);
    CHECK(r.outcome() == ipc::Outcome::kWorkerLost);
  }
  SECTION("the client") {
    auto client = connect(d.socket());
    (void)fake->run(*client, mapped->region().bytes());
    client.reset();
    // The worker is told to stop, and that its result is stored (in either
    // order); that result goes when it reports the task done.
    bool cancelled = false;
    std::optional<ipc::Frame> stored_frame;
    while (!cancelled || !stored_frame) {
      auto f = fake->peer.read_frame(kCheckMs);
      REQUIRE(f.has_value());
      cancelled = cancelled || f->header.type == ipc::FrameType::kCancel;
      if (f->header.type == ipc::FrameType::kStored) stored_frame = std::move(f);
    }
    auto stored = ipc::detail::decode_stored(stored_frame->payload);
    REQUIRE(stored.is_ok());
    auto done = ipc::detail::encode_result(ipc::Outcome::kOk, "", stored->name, nullptr);
    REQUIRE(done.is_ok());
    fake->peer.frame(ipc::FrameType::kDone, fake->task, *done);
  }
  eventually([&] { return shm_entries() == before; }, std::chrono::milliseconds(kCheckMs),
             "the checked result to be removed");
  CHECK(status_of(*c).connections >= 1);
}
