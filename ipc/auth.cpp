// Nonces, answers and the handshake that proves the shared secret both ways
// (auth_internal.hpp).
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string_view>

#include "auth_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr std::string_view kListenerLabel = "kura auth v2: listener answers";
constexpr std::string_view kConnectorLabel = "kura auth v2: connector answers";

}  // namespace

Status fill_random(std::span<std::byte> out) noexcept {
  std::size_t got = 0;
  while (got < out.size()) {
    const ssize_t n = ::getrandom(out.data() + got, out.size() - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status(Code::kIo, std::string("getrandom failed: ") + std::strerror(errno), errno);
    }
    got += static_cast<std::size_t>(n);
  }
  return Status::ok();
}

Result<Nonce> make_nonce() noexcept {
  Nonce n;
  KURA_RETURN_IF_ERROR(fill_random(n));
  return n;
}

Greeting make_greeting(const Nonce& nonce, std::uint8_t flags) noexcept {
  Greeting g{};
  std::memcpy(g.data(), kAuthMagic.data(), kAuthMagic.size());
  std::memcpy(g.data() + kAuthMagic.size(), nonce.data(), kNonceSize);
  g[kGreetingSize - 1] = static_cast<std::byte>(flags);
  return g;
}

Answer compute_answer(std::span<const std::byte> secret, AuthSide from, const Greeting& theirs,
                      const Greeting& mine) noexcept {
  const std::string_view label = from == AuthSide::kListener ? kListenerLabel : kConnectorLabel;
  std::array<unsigned char, kAnswerSize> out{};
  unsigned int len = 0;
  // The label, then the greetings: fixed sizes, so no two inputs concatenate
  // alike.
  std::array<unsigned char, kConnectorLabel.size() + 2 * kGreetingSize> msg{};
  std::size_t at = 0;
  std::memcpy(msg.data(), label.data(), label.size());
  at += label.size();
  std::memcpy(msg.data() + at, theirs.data(), kGreetingSize);
  at += kGreetingSize;
  std::memcpy(msg.data() + at, mine.data(), kGreetingSize);
  at += kGreetingSize;
  const unsigned char* mac =
      HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), msg.data(), at, out.data(), &len);
  KURA_CHECK(mac != nullptr && len == kAnswerSize);
  Answer a;
  std::memcpy(a.data(), out.data(), kAnswerSize);
  return a;
}

bool verify_answer(std::span<const std::byte> secret, AuthSide from, const Greeting& theirs,
                   const Greeting& mine, std::span<const std::byte, kAnswerSize> answer) noexcept {
  const Answer expected = compute_answer(secret, from, theirs, mine);
  return CRYPTO_memcmp(expected.data(), answer.data(), kAnswerSize) == 0;
}

Handshake::Handshake(AuthSide side, std::span<const std::byte> secret, const Nonce& mine, std::uint8_t flags)
    : side_(side), mine_(make_greeting(mine, flags)) {
  KURA_CHECK(secret.size() == kSecretSize);
  std::copy(secret.begin(), secret.end(), secret_.begin());
}

Handshake::~Handshake() {
  OPENSSL_cleanse(secret_.data(), secret_.size());
}

bool Handshake::tls() const noexcept {
  const auto theirs = std::to_integer<std::uint8_t>(got_[kGreetingSize - 1]);
  const auto mine = std::to_integer<std::uint8_t>(mine_[kGreetingSize - 1]);
  return proved_ && ((theirs | mine) & kWantTls) != 0;
}

Result<std::size_t> Handshake::feed(std::span<const std::byte> in, Bytes& reply) noexcept {
  try {
    if (failed_) return invalid_argument("the handshake failed already");
    failed_ = true;  // until this call succeeds
    const std::size_t before = have_;
    const std::size_t take = std::min(in.size(), wanted());
    std::memcpy(got_.data() + have_, in.data(), take);
    have_ += take;
    if (before < kAuthMagic.size() && have_ >= kAuthMagic.size() &&
        std::memcmp(got_.data(), kAuthMagic.data(), kAuthMagic.size()) != 0)
      return corrupt("the peer did not start a kura handshake (it sent other bytes first)");
    Greeting theirs;
    std::memcpy(theirs.data(), got_.data(), kGreetingSize);
    if (before < kGreetingSize && have_ >= kGreetingSize) {
      if ((std::to_integer<std::uint8_t>(theirs[kGreetingSize - 1]) & ~kWantTls) != 0)
        return corrupt("the peer's greeting asks for options this version of kura does not know");
      const Answer a = compute_answer(secret_, side_, theirs, mine_);
      reply.insert(reply.end(), a.begin(), a.end());
    }
    if (before < kHandshakeSize && have_ == kHandshakeSize) {
      const AuthSide peer = side_ == AuthSide::kListener ? AuthSide::kConnector : AuthSide::kListener;
      if (!verify_answer(secret_, peer, mine_, theirs,
                         std::span<const std::byte, kAnswerSize>(got_.data() + kGreetingSize, kAnswerSize)))
        return Status(Code::kPermission,
                      "the peer's answer is wrong: it has another secret, replayed an old handshake, or "
                      "its greeting was changed on the way");
      proved_ = true;
    }
    failed_ = false;
    return take;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc::detail
