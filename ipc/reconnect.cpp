// Which failures end a worker's connection for good, and the back-off
// between attempts to open it again (reconnect_internal.hpp).
#include <algorithm>

#include "reconnect_internal.hpp"

namespace kura::ipc::detail {

std::uint64_t Backoff::next_ms() noexcept {
  const std::uint32_t doublings = std::min<std::uint32_t>(attempts_, 32);
  ++attempts_;
  const std::uint64_t d = std::min(cap_ms_, first_ms_ << std::min<std::uint32_t>(doublings, 20));
  // splitmix64: enough for jitter, which needs spread, not secrecy.
  std::uint64_t z = (state_ += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  z ^= z >> 31;
  const std::uint64_t half = d / 2;
  return std::max<std::uint64_t>(1, half + z % (d - half + 1));
}

bool connect_failure_is_final(const Status& s) noexcept {
  switch (s.code()) {
    case Code::kPermission:
    case Code::kCorrupt:
    case Code::kInvalidArgument: return true;
    default: return false;
  }
}

bool close_is_final(CloseReason why) noexcept {
  return why == CloseReason::kProtocol;
}

}  // namespace kura::ipc::detail
