// A worker's reconnection (issue 16) in-process: the back-off between
// attempts, and which failures end it for good.
#include <catch2/catch.hpp>
#include <set>

#include "reconnect_internal.hpp"

using namespace kura;
using kura::ipc::detail::Backoff;
using kura::ipc::detail::CloseReason;

TEST_CASE("reconnect: each wait is drawn from [d/2, d], d doubling from the first to the cap", "[ipc]") {
  Backoff b(100, 5000, 42);
  const std::uint64_t expected_d[] = {100, 200, 400, 800, 1600, 3200, 5000, 5000, 5000};
  for (std::uint64_t d : expected_d) {
    const std::uint64_t w = b.next_ms();
    INFO("attempt " << b.attempts() << " waited " << w << " ms");
    CHECK(w >= d / 2);
    CHECK(w <= d);
  }
  CHECK(b.attempts() == 9);
  for (int i = 0; i < 100; ++i) CHECK(b.next_ms() <= 5000);  // no overflow, however long it goes on
  b.reset();
  CHECK(b.attempts() == 0);
  CHECK(b.next_ms() <= 100);
}

TEST_CASE("reconnect: workers that lost the same dispatcher spread their waits", "[ipc]") {
  std::set<std::uint64_t> firsts;
  for (std::uint64_t seed = 1; seed <= 32; ++seed) {
    Backoff b(1000, 5000, seed);
    firsts.insert(b.next_ms());
  }
  CHECK(firsts.size() > 16);  // 32 draws from 501 values: nearly all differ
  Backoff tiny(1, 1, 7);
  CHECK(tiny.next_ms() == 1);  // never 0
}

TEST_CASE("reconnect: a refusal or a wrong secret is final, nobody listening and network errors are not",
          "[ipc]") {
  using ipc::detail::connect_failure_is_final;
  CHECK(connect_failure_is_final(Status(Code::kPermission, "the peer's answer is wrong")));
  CHECK(connect_failure_is_final(Status(Code::kCorrupt, "did not start a kura handshake")));
  CHECK(connect_failure_is_final(Status(Code::kInvalidArgument, "no secret file")));
  CHECK_FALSE(connect_failure_is_final(Status(Code::kNotFound, "connection refused")));
  CHECK_FALSE(connect_failure_is_final(Status(Code::kIo, "network is unreachable")));

  using ipc::detail::close_is_final;
  CHECK(close_is_final(CloseReason::kProtocol));
  for (CloseReason r : {CloseReason::kPeerClosed, CloseReason::kIo, CloseReason::kTimeout,
                        CloseReason::kBacklog, CloseReason::kOutOfMemory, CloseReason::kLocal})
    CHECK_FALSE(close_is_final(r));
}
