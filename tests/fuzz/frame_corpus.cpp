// Writes seed inputs for kura_frame_fuzz into DIR: streams of well-formed
// frames carrying each kind of message, as the fuzzer's first input byte
// (the chunk size) followed by the stream.
#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include "kura/ipc/frame.hpp"
#include "message_internal.hpp"

namespace {

using namespace kura;
using namespace kura::ipc;
namespace msg = kura::ipc::detail;

void append(std::vector<char>& out, FrameType t, std::uint64_t id, const Result<Bytes>& payload) {
  if (!payload) return;
  std::byte h[kFrameHeaderSize];
  encode_frame_header(FrameHeader{t, 0, id, static_cast<std::uint32_t>(payload->size())},
                      std::span<std::byte, kFrameHeaderSize>(h, sizeof h));
  out.insert(out.end(), reinterpret_cast<char*>(h), reinterpret_cast<char*>(h) + sizeof h);
  out.insert(out.end(), reinterpret_cast<const char*>(payload->data()),
             reinterpret_cast<const char*>(payload->data()) + payload->size());
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  const std::string dir = argv[1];
  Value v = Value::list({Value::f64({1.5}), Value::strings_utf8({"a", "b"})});
  Call call{"scale", {Arg::ref("/kura_1f_2a[2,1]"), Arg::copy(Value::f64({2}))}};
  std::vector<std::vector<char>> seeds(4);
  append(seeds[0], FrameType::kHello, 0, msg::encode_hello(msg::Hello{"client", 1, 7, 0, {}}));
  append(seeds[0], FrameType::kHello, 0, msg::encode_hello(msg::Hello{"worker", 2, 0, 3, {"echo", "sum"}}));
  append(seeds[0], FrameType::kSubmit, 1, msg::encode_submit(call, 7, {}));
  append(seeds[1], FrameType::kResult, 1, msg::encode_result(Outcome::kOk, "", "", &v));
  append(seeds[1], FrameType::kResult, 2, msg::encode_result(Outcome::kOk, "", "/kura_7_9", nullptr));
  append(seeds[2], FrameType::kWelcome, 0,
         msg::encode_welcome(msg::Welcome{1u << 20, 5, 0, 500, 5000, "boot:1:2"}));
  DispatcherStatus s;
  s.workers = {{1, 10, "idle", 3, {"echo"}}};
  append(seeds[2], FrameType::kStatus, 3, msg::encode_status(s));
  append(seeds[2], FrameType::kRefused, 0, msg::encode_refused("kura protocol 1, this side speaks 2"));
  append(seeds[2], FrameType::kHeartbeat, 0, Result<Bytes>(Bytes()));
  append(seeds[2], FrameType::kGoodbye, 0, Result<Bytes>(Bytes()));
  append(seeds[2], FrameType::kRevoke, 0, Result<Bytes>(Bytes()));
  append(seeds[3], FrameType::kResult, 4, msg::encode_result(Outcome::kTimeout, "timed out", "", nullptr));
  TaskOptions traced;
  traced.traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
  append(seeds[3], FrameType::kSubmit, 5, msg::encode_submit(call, 7, traced));
  const msg::Timing timing{1, 2, 3};
  append(seeds[3], FrameType::kResult, 5,
         msg::encode_result(Outcome::kOk, "", "/kura_7_a", nullptr, &timing));
  append(seeds[3], FrameType::kPull, 6, msg::encode_pull(msg::Pull{"/kura_1f_2a[2]", 9}));
  append(seeds[3], FrameType::kObject, 6, msg::encode_object(msg::ObjectInfo{"", 4096, 9, false, true}));
  const Bytes data(64, std::byte{7});
  Bytes chunk = msg::encode_chunk_head(0, data, true);
  chunk.insert(chunk.end(), data.begin(), data.end());
  append(seeds[3], FrameType::kChunk, 6, Result<Bytes>(std::move(chunk)));
  append(seeds[3], FrameType::kAck, 6, Result<Bytes>(msg::encode_ack(64)));
  append(seeds[3], FrameType::kPush, 6, msg::encode_push(msg::PushInfo{4096, false}));
  append(seeds[3], FrameType::kStored, 6, msg::encode_stored(msg::Stored{"", "/kura_7_b"}));
  int n = 0;
  for (const auto& stream : seeds) {
    for (char chunk : {char(0), char(7), char(255)}) {
      std::ofstream f(dir + "/seed-" + std::to_string(n++), std::ios::binary);
      f.put(chunk);
      f.write(stream.data(), static_cast<std::streamsize>(stream.size()));
    }
  }
  return 0;
}
