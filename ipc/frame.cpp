#include "kura/ipc/frame.hpp"

#include <algorithm>
#include <cstring>
#include <new>
#include <string>

namespace kura::ipc {

namespace {

constexpr char kMagic[4] = {'K', 'I', 'P', 'C'};

template <class T>
void put(std::byte* at, T v) {
  std::memcpy(at, &v, sizeof v);  // little-endian host (core/layout.hpp asserts it)
}

template <class T>
T get(const std::byte* at) {
  T v;
  std::memcpy(&v, at, sizeof v);
  return v;
}

}  // namespace

void encode_frame_header(const FrameHeader& h, std::span<std::byte, kFrameHeaderSize> out) noexcept {
  std::memcpy(out.data(), kMagic, 4);
  put<std::uint8_t>(out.data() + 4, kFrameVersion);
  put<std::uint8_t>(out.data() + 5, static_cast<std::uint8_t>(h.type));
  put<std::uint16_t>(out.data() + 6, h.flags);
  put<std::uint64_t>(out.data() + 8, h.id);
  put<std::uint32_t>(out.data() + 16, h.length);
  put<std::uint32_t>(out.data() + 20, 0);
}

Result<FrameHeader> decode_frame_header(std::span<const std::byte, kFrameHeaderSize> in,
                                        std::uint32_t limit) noexcept {
  try {
    if (std::memcmp(in.data(), kMagic, 4) != 0) return corrupt("frame: bad magic (not a kura peer)");
    const auto version = get<std::uint8_t>(in.data() + 4);
    if (version != kFrameVersion)
      return corrupt("frame: framing version " + std::to_string(version) + ", this side speaks " +
                     std::to_string(kFrameVersion));
    const auto type = get<std::uint8_t>(in.data() + 5);
    if (type == 0 || type > kMaxFrameType) return corrupt("frame: unknown type " + std::to_string(type));
    FrameHeader h;
    h.type = static_cast<FrameType>(type);
    h.flags = get<std::uint16_t>(in.data() + 6);
    if ((h.flags & ~kKnownFrameFlags) != 0) return corrupt("frame: unknown flags " + std::to_string(h.flags));
    h.id = get<std::uint64_t>(in.data() + 8);
    h.length = get<std::uint32_t>(in.data() + 16);
    if (get<std::uint32_t>(in.data() + 20) != 0) return corrupt("frame: reserved field is not 0");
    if (h.length > limit)
      return Status(Code::kOutOfRange, "frame: payload of " + std::to_string(h.length) +
                                           " bytes is over the limit of " + std::to_string(limit));
    return h;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status FrameReader::feed(std::span<const std::byte> bytes) noexcept {
  try {
    if (big_ && big_have_ < big_->payload.size()) {
      const std::size_t n = std::min(bytes.size(), big_->payload.size() - big_have_);
      std::memcpy(big_->payload.data() + big_have_, bytes.data(), n);
      big_have_ += n;
      bytes = bytes.subspan(n);
      if (bytes.empty()) return Status::ok();
    }
    if (start_ > 0 && start_ == buffer_.size()) {
      buffer_.clear();
      start_ = 0;
    }
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::optional<Frame>> FrameReader::next() noexcept {
  try {
    if (big_) {
      if (big_have_ < big_->payload.size()) return std::optional<Frame>();
      std::optional<Frame> done = std::move(big_);
      big_.reset();
      big_have_ = 0;
      return done;
    }
    if (buffered() < kFrameHeaderSize) return std::optional<Frame>();
    const std::byte* at = buffer_.data() + start_;
    KURA_ASSIGN_OR_RETURN(
        FrameHeader h,
        decode_frame_header(std::span<const std::byte, kFrameHeaderSize>(at, kFrameHeaderSize), limit_));
    if (buffered() - kFrameHeaderSize < h.length) {
      if (h.length >= kDirect) {
        // The rest of a large payload goes straight into its place.
        Frame f;
        f.header = h;
        f.payload.resize(h.length);
        const std::size_t have = buffered() - kFrameHeaderSize;
        std::memcpy(f.payload.data(), at + kFrameHeaderSize, have);
        buffer_.clear();
        start_ = 0;
        big_.emplace(std::move(f));
        big_have_ = have;
        return std::optional<Frame>();
      }
      // Keep the partial frame at the front so the buffer never grows past
      // one frame plus one read.
      if (start_ > 0) {
        buffer_.erase(buffer_.begin(), buffer_.begin() + static_cast<std::ptrdiff_t>(start_));
        start_ = 0;
      }
      return std::optional<Frame>();
    }
    Frame f;
    f.header = h;
    const std::byte* payload = at + kFrameHeaderSize;
    f.payload.assign(payload, payload + h.length);
    start_ += kFrameHeaderSize + h.length;
    return std::optional<Frame>(std::move(f));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc
