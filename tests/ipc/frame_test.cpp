// Frames: the header codec and the stream reader, fed whole, byte by byte and
// with garbage.
#include "kura/ipc/frame.hpp"

#include <catch2/catch.hpp>
#include <cstring>

using namespace kura;
using namespace kura::ipc;

namespace {

Bytes frame_bytes(FrameType t, std::uint16_t flags, std::uint64_t id, const std::string& payload) {
  Bytes out(kFrameHeaderSize + payload.size());
  encode_frame_header(FrameHeader{t, flags, id, static_cast<std::uint32_t>(payload.size())},
                      std::span<std::byte, kFrameHeaderSize>(out.data(), kFrameHeaderSize));
  std::memcpy(out.data() + kFrameHeaderSize, payload.data(), payload.size());
  return out;
}

Result<FrameHeader> decode(const Bytes& b, std::uint32_t limit = kDefaultFrameLimit) {
  return decode_frame_header(std::span<const std::byte, kFrameHeaderSize>(b.data(), kFrameHeaderSize), limit);
}

}  // namespace

TEST_CASE("a frame header round-trips and is laid out as documented", "[ipc]") {
  Bytes b = frame_bytes(FrameType::kSubmit, kFlagTry, 0x0102030405060708ull, "abc");
  CHECK(std::memcmp(b.data(), "KIPC", 4) == 0);
  CHECK(std::to_integer<int>(b[4]) == kFrameVersion);
  CHECK(std::to_integer<int>(b[5]) == 3);
  CHECK(std::to_integer<int>(b[6]) == 1);     // flags, little-endian
  CHECK(std::to_integer<int>(b[8]) == 0x08);  // id, little-endian
  CHECK(std::to_integer<int>(b[16]) == 3);    // length
  auto h = decode(b);
  REQUIRE(h.is_ok());
  CHECK(h->type == FrameType::kSubmit);
  CHECK(h->flags == kFlagTry);
  CHECK(h->id == 0x0102030405060708ull);
  CHECK(h->length == 3);
}

TEST_CASE("a bad frame header is refused with its reason", "[ipc]") {
  Bytes good = frame_bytes(FrameType::kCancel, 0, 1, "");
  auto with = [&](std::size_t at, std::uint8_t v) {
    Bytes b = good;
    b[at] = std::byte{v};
    return decode(b);
  };
  auto magic = with(0, 'X');
  REQUIRE_FALSE(magic.is_ok());
  CHECK(magic.status().message().find("magic") != std::string::npos);
  CHECK(with(4, 2).status().message().find("framing version") != std::string::npos);
  CHECK(with(5, 0).status().message().find("unknown type") != std::string::npos);
  CHECK(with(5, kMaxFrameType + 1).status().code() == Code::kCorrupt);
  CHECK(with(7, 0x80).status().message().find("unknown flags") != std::string::npos);
  CHECK(with(20, 1).status().message().find("reserved") != std::string::npos);
  Bytes big = frame_bytes(FrameType::kSubmit, 0, 1, std::string(100, 'x'));
  auto over = decode(big, 99);
  REQUIRE_FALSE(over.is_ok());
  CHECK(over.status().code() == Code::kOutOfRange);
  CHECK(decode(big, 100).is_ok());
}

TEST_CASE("FrameReader cuts a stream fed byte by byte and in one piece", "[ipc]") {
  Bytes stream;
  for (int i = 1; i <= 3; ++i) {
    Bytes f =
        frame_bytes(FrameType::kResult, 0, i, std::string(static_cast<std::size_t>(i * 50), char('a' + i)));
    stream.insert(stream.end(), f.begin(), f.end());
  }
  for (bool one_by_one : {true, false}) {
    FrameReader r;
    std::vector<Frame> frames;
    auto take = [&] {
      for (;;) {
        auto f = r.next();
        REQUIRE(f.is_ok());
        if (!f->has_value()) return;
        frames.push_back(std::move(**f));
      }
    };
    if (one_by_one) {
      for (std::byte b : stream) {
        REQUIRE(r.feed(std::span<const std::byte>(&b, 1)).is_ok());
        take();
      }
    } else {
      REQUIRE(r.feed(stream).is_ok());
      take();
    }
    REQUIRE(frames.size() == 3);
    for (int i = 0; i < 3; ++i) {
      CHECK(frames[i].header.id == static_cast<std::uint64_t>(i + 1));
      CHECK(frames[i].payload.size() == static_cast<std::size_t>((i + 1) * 50));
      CHECK(reinterpret_cast<std::uintptr_t>(frames[i].payload.data()) % 64 ==
            0);  // Region::open reads it in place
    }
    CHECK(r.buffered() == 0);
  }
}

TEST_CASE("FrameReader reads large payloads in place, in any cut, between small frames", "[ipc]") {
  // Small, large (read into its own payload as it comes), small, large.
  std::vector<std::string> payloads = {std::string(10, 'a'), std::string(200000, 'b'), std::string(3, 'c'),
                                       std::string(65536, 'd')};
  for (std::size_t i = 0; i < payloads[1].size(); i += 997) payloads[1][i] = static_cast<char>('0' + i % 10);
  Bytes stream;
  for (std::size_t i = 0; i < payloads.size(); ++i) {
    Bytes f = frame_bytes(FrameType::kChunk, 0, i + 1, payloads[i]);
    stream.insert(stream.end(), f.begin(), f.end());
  }
  for (std::size_t cut :
       {std::size_t{1}, std::size_t{7}, std::size_t{4096}, std::size_t{65536}, stream.size()}) {
    INFO("fed in pieces of " << cut);
    FrameReader r;
    std::vector<Frame> frames;
    for (std::size_t at = 0; at < stream.size(); at += cut) {
      const std::size_t n = std::min(cut, stream.size() - at);
      REQUIRE(r.feed(std::span<const std::byte>(stream.data() + at, n)).is_ok());
      CHECK(r.buffered() > 0);
      for (;;) {
        auto f = r.next();
        REQUIRE(f.is_ok());
        if (!f->has_value()) break;
        frames.push_back(std::move(**f));
      }
    }
    REQUIRE(frames.size() == payloads.size());
    for (std::size_t i = 0; i < payloads.size(); ++i) {
      CHECK(frames[i].header.id == i + 1);
      CHECK(std::string(reinterpret_cast<const char*>(frames[i].payload.data()), frames[i].payload.size()) ==
            payloads[i]);
      CHECK(reinterpret_cast<std::uintptr_t>(frames[i].payload.data()) % 64 == 0);
    }
    CHECK(r.buffered() == 0);
  }
}

TEST_CASE("FrameReader stops at an oversized length before reading the payload", "[ipc]") {
  FrameReader r(1024);
  Bytes head = frame_bytes(FrameType::kSubmit, 0, 1, "");
  FrameHeader h{FrameType::kSubmit, 0, 1, 0xFFFFFFFFu};
  encode_frame_header(h, std::span<std::byte, kFrameHeaderSize>(head.data(), kFrameHeaderSize));
  REQUIRE(r.feed(head).is_ok());
  auto f = r.next();
  REQUIRE_FALSE(f.is_ok());
  CHECK(f.status().code() == Code::kOutOfRange);
}
