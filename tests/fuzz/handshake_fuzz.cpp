// libFuzzer target for the TCP handshake (ipc/auth.cpp), what a listener
// reads from anyone who reaches its port: any bytes, cut anywhere, give an
// error (Corrupt, Permission) or need more; never a crash, never more than
// the handshake's 73 bytes taken, never an answer before a whole greeting,
// and never a peer taken as proved without the secret's answer.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>

#include "auth_internal.hpp"

namespace {

using namespace kura::ipc::detail;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "handshake_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  if (size == 0) return 0;
  std::array<std::byte, kSecretSize> secret{};
  for (std::size_t i = 0; i < secret.size(); ++i) secret[i] = static_cast<std::byte>(i * 7);
  const Nonce mine{};
  // The first byte picks the side, its flags and the size of the pieces the
  // bytes come in.
  const AuthSide side = (data[0] & 1) != 0 ? AuthSide::kListener : AuthSide::kConnector;
  const std::uint8_t flags = (data[0] & 2) != 0 ? kWantTls : 0;
  const std::size_t piece = 1 + (data[0] >> 2);
  Handshake h(side, secret, mine, flags);
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  kura::Bytes reply;
  std::size_t taken = 0;
  while (!in.empty()) {
    const std::span<const std::byte> now = in.first(std::min(piece, in.size()));
    auto used = h.feed(now, reply);
    if (!used) {
      const kura::Code c = used.status().code();
      require(c == kura::Code::kCorrupt || c == kura::Code::kPermission || c == kura::Code::kOutOfMemory,
              "an unexpected error code");
      require(!h.done(), "done after an error");
      return 0;
    }
    require(*used <= now.size(), "took more than it was given");
    taken += *used;
    require(taken <= kHandshakeSize, "took more than the handshake");
    require(reply.empty() || taken >= kGreetingSize, "answered before a whole greeting");
    require(reply.size() <= kAnswerSize, "answered more than once");
    in = in.subspan(now.size());
  }
  // The answer for `mine` is HMAC under the secret: random bytes do not
  // find it, so a peer is never proved here.
  require(!h.done(), "a peer proved without the secret's answer");
  return 0;
}
