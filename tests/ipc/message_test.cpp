// The payloads of frames: round trips through kura images, and garbage.
#include <catch2/catch.hpp>
#include <cstring>

#include "ipc_util.hpp"
#include "kura/core/builder.hpp"
#include "message_internal.hpp"

using namespace kura;
using namespace kura::ipc;
using namespace kura::ipc::detail;

namespace {

std::shared_ptr<const Bytes> shared(Result<Bytes> b) {
  REQUIRE(b.is_ok());
  return std::make_shared<const Bytes>(std::move(b).value());
}

}  // namespace

TEST_CASE("a submit round-trips names and inline values", "[ipc]") {
  Call call{
      "scale",
      {Arg::ref("/kura_1f_2a[3]"), Arg::copy(Value::f64({2.5})), Arg::copy(Value::strings_utf8({"x"}))}};
  TaskOptions o;
  o.timeout = std::chrono::milliseconds(1500);
  o.retries = 2;
  auto payload = shared(encode_submit(call, 0xabc, o));
  auto s = decode_submit(payload);
  REQUIRE(s.is_ok());
  CHECK(s->fn == "scale");
  CHECK(s->owner == 0xabc);
  CHECK(s->timeout_ms == 1500);
  CHECK(s->retries == 2);
  REQUIRE(s->args.size() == 3);
  CHECK(s->args[0].name == "/kura_1f_2a[3]");
  CHECK_FALSE(s->args[0].value);
  REQUIRE(s->args[1].value);
  CHECK((*s->args[1].value->array<Dtype::kF64>())[0] == 2.5);
  CHECK(s->args[2].value->string(0)->bytes == "x");
}

TEST_CASE("a submit with a bad name is refused on both sides", "[ipc]") {
  Call bad{"sum", {Arg::ref("/kura_1F_2a")}};
  auto e = encode_submit(bad, 1, {});
  REQUIRE_FALSE(e.is_ok());
  CHECK(e.status().code() == Code::kInvalidArgument);
  // A peer that sends one anyway: built by hand with the same layout.
  auto d = decode_submit(shared(build(kura::test::forged_submit(1, "/kura_1f_2a[0]"), Stamp{}, false)));
  REQUIRE_FALSE(d.is_ok());
  CHECK(d.status().code() == Code::kCorrupt);
  CHECK(d.status().message().find("argument 1") != std::string::npos);
}

TEST_CASE("results, hello, welcome and status round-trip", "[ipc]") {
  Value v = Value::f64({1, 2, 3});
  auto r = decode_result(shared(encode_result(Outcome::kOk, "", "", &v)));
  REQUIRE(r.is_ok());
  CHECK(r->outcome == Outcome::kOk);
  REQUIRE(r->value);
  CHECK(r->value->length() == 3);
  auto named = decode_result(shared(encode_result(Outcome::kOk, "", "/kura_5_6", nullptr)));
  REQUIRE(named.is_ok());
  CHECK(named->name == "/kura_5_6");
  CHECK_FALSE(named->value);
  auto err = decode_result(shared(encode_result(Outcome::kWorkerLost, "gone", "", nullptr)));
  REQUIRE(err.is_ok());
  CHECK(err->outcome == Outcome::kWorkerLost);
  CHECK(err->message == "gone");
  // A name with a path, or with an error outcome, is refused.
  CHECK_FALSE(decode_result(shared(encode_result(Outcome::kOk, "", "/kura_5_6[1]", nullptr))).is_ok());
  CHECK_FALSE(decode_result(shared(encode_result(Outcome::kError, "x", "/kura_5_6", nullptr))).is_ok());

  auto h = decode_hello(*shared(encode_hello(Hello{"worker", 42, 7, 3, {"echo", "sum"}})));
  REQUIRE(h.is_ok());
  CHECK(h->role == "worker");
  CHECK(h->pid == 42);
  CHECK(h->owner == 7);
  CHECK(h->token == 3);
  CHECK(h->functions == std::vector<std::string>{"echo", "sum"});
  CHECK(h->protocol == kProtocolVersion);
  CHECK_FALSE(decode_hello(*shared(encode_hello(Hello{"admin", 1, 1, 0, {}}))).is_ok());
  auto w = decode_welcome(*shared(encode_welcome(Welcome{4096, 9, 0, 250, 1000, ""})));
  REQUIRE(w.is_ok());
  CHECK(w->frame_limit == 4096);
  CHECK(w->heartbeat_ms == 250);
  CHECK(w->heartbeat_timeout_ms == 1000);
  CHECK(w->features == kOurFeatures);
  CHECK(w->protocol == kProtocolVersion);

  DispatcherStatus s;
  s.connections = 3;
  s.queued_peak = 99;
  s.unroutable = 4;
  s.workers = {{1, 10, "idle", 5, {"echo"}}, {2, 11, "busy", 6, {"a", "b"}}};
  auto back = decode_status(*shared(encode_status(s)));
  REQUIRE(back.is_ok());
  CHECK(back->connections == 3);
  CHECK(back->queued_peak == 99);
  REQUIRE(back->workers.size() == 2);
  CHECK(back->workers[1].state == "busy");
  CHECK(back->workers[1].tasks_done == 6);
  CHECK(back->workers[1].id == 2);
  CHECK(back->workers[1].functions == std::vector<std::string>{"a", "b"});
  CHECK(back->unroutable == 4);
}

TEST_CASE("garbage payloads are Corrupt, never a crash", "[ipc]") {
  std::vector<Bytes> cases;
  cases.emplace_back();                                      // empty
  cases.emplace_back(64, std::byte{0xff});                   // not a region
  auto not_record = build(Value::f64({1}), Stamp{}, false);  // a region, not a record
  REQUIRE(not_record.is_ok());
  cases.push_back(*not_record);
  auto wrong_types = build(Value::list({Value::f64({1})}).with_names({String{"fn"}}), Stamp{}, false);
  REQUIRE(wrong_types.is_ok());
  cases.push_back(*wrong_types);
  for (const Bytes& b : cases) {
    auto p = std::make_shared<const Bytes>(b);
    CHECK(decode_submit(p).status().code() == Code::kCorrupt);
    CHECK(decode_result(p).status().code() == Code::kCorrupt);
    CHECK(decode_hello(*p).status().code() == Code::kCorrupt);
    CHECK(decode_status(*p).status().code() == Code::kCorrupt);
  }
}
