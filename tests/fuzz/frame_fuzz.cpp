// libFuzzer target for what a peer sends the dispatcher, a worker or a client:
// any bytes, cut into frames however the socket delivers them, and each
// payload read as every message it could be. Every outcome must be a frame,
// a status with a code the receiver expects, never a crash, a read outside
// the input (ASan) or undefined behaviour (UBSan). A submit or result that
// decodes must encode again to something that decodes the same.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>

#include "kura/core/view.hpp"
#include "kura/ipc/frame.hpp"
#include "message_internal.hpp"

namespace {

using kura::Code;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "frame_fuzz: %s\n", what);
    std::abort();
  }
}

bool decode_code_ok(Code c) {
  return c == Code::kCorrupt || c == Code::kOutOfMemory;
}

void submit_round_trip(const kura::ipc::detail::Submit& s) {
  kura::ipc::Call call{s.fn, {}};
  for (const auto& a : s.args) {
    if (!a.name.empty()) {
      call.args.push_back(kura::ipc::Arg::ref(a.name));
    } else {
      auto v = kura::to_value(*a.value);
      if (!v) return;  // a corrupt inline value: decode_submit reads lazily
      call.args.push_back(kura::ipc::Arg::copy(std::move(v).value()));
    }
  }
  kura::ipc::TaskOptions o;
  o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(s.timeout_ms & 0x3FFFFFFFFFFFFFFFull));
  o.retries = s.retries;
  auto again = kura::ipc::detail::encode_submit(call, s.owner, o);
  require(again.is_ok(), "a decoded submit does not encode again");
  auto back = kura::ipc::detail::decode_submit(std::make_shared<const kura::Bytes>(std::move(again).value()));
  require(back.is_ok(), "a re-encoded submit does not decode");
  require(back->fn == s.fn && back->owner == s.owner && back->retries == s.retries &&
              back->args.size() == s.args.size(),
          "a submit changed in a round trip");
}

void read_as_messages(const kura::Bytes& payload) {
  namespace d = kura::ipc::detail;
  auto shared = std::make_shared<const kura::Bytes>(payload);
  auto s = d::decode_submit(shared);
  if (s) {
    submit_round_trip(*s);
  } else {
    require(decode_code_ok(s.status().code()), "decode_submit: unexpected code");
  }
  auto r = d::decode_result(shared);
  if (r) {
    if (r->value) (void)kura::to_value(*r->value);
  } else {
    require(decode_code_ok(r.status().code()), "decode_result: unexpected code");
  }
  auto h = d::decode_hello(payload);
  require(h.is_ok() || decode_code_ok(h.status().code()), "decode_hello: unexpected code");
  auto w = d::decode_welcome(payload);
  require(w.is_ok() || decode_code_ok(w.status().code()), "decode_welcome: unexpected code");
  auto st = d::decode_status(payload);
  require(st.is_ok() || decode_code_ok(st.status().code()), "decode_status: unexpected code");
  auto rf = d::decode_refused(payload);
  require(rf.is_ok() || decode_code_ok(rf.status().code()), "decode_refused: unexpected code");
  // Objects that follow names: four images, and the raw chunk and ack.
  auto pl = d::decode_pull(payload);
  require(pl.is_ok() || decode_code_ok(pl.status().code()), "decode_pull: unexpected code");
  auto ob = d::decode_object(payload);
  require(ob.is_ok() || decode_code_ok(ob.status().code()), "decode_object: unexpected code");
  auto pu = d::decode_push(payload);
  require(pu.is_ok() || decode_code_ok(pu.status().code()), "decode_push: unexpected code");
  auto so = d::decode_stored(payload);
  require(so.is_ok() || decode_code_ok(so.status().code()), "decode_stored: unexpected code");
  for (bool checksum : {false, true}) {
    auto ch = d::decode_chunk(payload, checksum);
    if (ch) {
      require(ch->data.size() + d::kChunkHead == payload.size(), "a chunk's data is not the rest of it");
    } else {
      require(ch.status().code() == Code::kCorrupt, "decode_chunk: unexpected code");
    }
  }
  auto ack = d::decode_ack(payload);
  require(ack.is_ok() || ack.status().code() == Code::kCorrupt, "decode_ack: unexpected code");
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  // The first byte says how the socket cuts the stream: chunks of 1..256 bytes.
  const std::size_t chunk = static_cast<std::size_t>(data[0]) + 1;
  ++data;
  --size;
  kura::ipc::FrameReader reader(1u << 16);
  for (std::size_t at = 0; at < size; at += chunk) {
    const std::size_t n = std::min(chunk, size - at);
    require(reader.feed(std::span<const std::byte>(reinterpret_cast<const std::byte*>(data + at), n)).is_ok(),
            "feed failed");
    for (;;) {
      auto f = reader.next();
      if (!f) {
        const Code c = f.status().code();
        require(c == Code::kCorrupt || c == Code::kOutOfRange, "next: unexpected code");
        return 0;  // the receiver closes the connection here
      }
      if (!f->has_value()) break;
      require((*f)->payload.size() == (*f)->header.length, "payload length differs from the header");
      read_as_messages((*f)->payload);
    }
  }
  return 0;
}
