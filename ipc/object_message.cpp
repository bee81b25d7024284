// The messages of objects that follow names (message_internal.hpp): pull,
// object, push and stored are images like every other message; chunk and
// ack are raw bytes, read by the pure decoders below (fuzzed).
#include <cstring>

#include "kura/core/hash.hpp"
#include "kura/core/name.hpp"
#include "message_internal.hpp"
#include "record_internal.hpp"

namespace kura::ipc::detail {

namespace {

void put_u64(std::byte* at, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) at[i] = static_cast<std::byte>(v >> (8 * i));
}

std::uint64_t get_u64(const std::byte* at) {
  std::uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<std::uint64_t>(at[i]) << (8 * i);
  return v;
}

Value lgl_of(bool b) {
  return Value::array<Dtype::kLgl>({b ? 1 : 0});
}

}  // namespace

Result<Bytes> encode_pull(const Pull& p) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"name", string_of(p.name)}, {"have", u64_of(p.have)}}));
  });
}

Result<Pull> decode_pull(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Pull> {
    constexpr const char* kMsg = "pull";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"name", "have"}));
    Pull p;
    KURA_ASSIGN_OR_RETURN(p.name, text(r[0], kMsg, "name"));
    if (auto n = parse_name(p.name); !n) return bad(kMsg, "not a kura name: " + n.status().message());
    KURA_ASSIGN_OR_RETURN(p.have, scalar<Dtype::kU64>(r[1], kMsg, "have"));
    return p;
  });
}

Result<Bytes> encode_object(const ObjectInfo& o) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"message", string_of(o.message)},
                            {"size", u64_of(o.size)},
                            {"identity", u64_of(o.identity)},
                            {"unchanged", lgl_of(o.unchanged)},
                            {"checksums", lgl_of(o.checksums)}}));
  });
}

Result<ObjectInfo> decode_object(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<ObjectInfo> {
    constexpr const char* kMsg = "object";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg,
                                                 {"message", "size", "identity", "unchanged", "checksums"}));
    ObjectInfo o;
    KURA_ASSIGN_OR_RETURN(o.message, text(r[0], kMsg, "message"));
    KURA_ASSIGN_OR_RETURN(o.size, scalar<Dtype::kU64>(r[1], kMsg, "size"));
    KURA_ASSIGN_OR_RETURN(o.identity, scalar<Dtype::kU64>(r[2], kMsg, "identity"));
    KURA_ASSIGN_OR_RETURN(o.unchanged, flag(r[3], kMsg, "unchanged"));
    KURA_ASSIGN_OR_RETURN(o.checksums, flag(r[4], kMsg, "checksums"));
    return o;
  });
}

Result<Bytes> encode_push(const PushInfo& p) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"size", u64_of(p.size)}, {"checksums", lgl_of(p.checksums)}}));
  });
}

Result<PushInfo> decode_push(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<PushInfo> {
    constexpr const char* kMsg = "push";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"size", "checksums"}));
    PushInfo p;
    KURA_ASSIGN_OR_RETURN(p.size, scalar<Dtype::kU64>(r[0], kMsg, "size"));
    KURA_ASSIGN_OR_RETURN(p.checksums, flag(r[1], kMsg, "checksums"));
    return p;
  });
}

Result<Bytes> encode_stored(const Stored& s) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"message", string_of(s.message)}, {"name", string_of(s.name)}}));
  });
}

Result<Stored> decode_stored(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Stored> {
    constexpr const char* kMsg = "stored";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"message", "name"}));
    Stored s;
    KURA_ASSIGN_OR_RETURN(s.message, text(r[0], kMsg, "message"));
    KURA_ASSIGN_OR_RETURN(s.name, text(r[1], kMsg, "name"));
    if (s.message.empty())
      if (auto n = parse_name(s.name); !n || !n->path.empty())
        return bad(kMsg, "not a region name: " + s.name);
    return s;
  });
}

Bytes encode_chunk_head(std::uint64_t offset, std::span<const std::byte> data, bool checksum) {
  Bytes head(kChunkHead);
  put_u64(head.data(), offset);
  put_u64(head.data() + 8, checksum ? checksum64(data) : 0);
  return head;
}

Result<Chunk> decode_chunk(std::span<const std::byte> payload, bool checksum) noexcept {
  if (payload.size() < kChunkHead) return corrupt("chunk: shorter than its head");
  if (payload.size() - kChunkHead > kChunkData)
    return corrupt("chunk: " + std::to_string(payload.size() - kChunkHead) +
                   " bytes of data, over the limit of " + std::to_string(kChunkData));
  Chunk c;
  c.offset = get_u64(payload.data());
  c.data = payload.subspan(kChunkHead);
  if (checksum && checksum64(c.data) != get_u64(payload.data() + 8))
    return corrupt("chunk: the data at offset " + std::to_string(c.offset) +
                   " does not match its checksum (damaged in transit)");
  return c;
}

Bytes encode_ack(std::uint64_t received) {
  Bytes b(8);
  put_u64(b.data(), received);
  return b;
}

Result<std::uint64_t> decode_ack(std::span<const std::byte> payload) noexcept {
  if (payload.size() != 8) return corrupt("ack: not 8 bytes");
  return get_u64(payload.data());
}

}  // namespace kura::ipc::detail
