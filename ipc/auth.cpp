// The shared secret: its file, nonces, answers and the handshake that
// proves it both ways (auth_internal.hpp).
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <new>
#include <string_view>

#include "auth_internal.hpp"
#include "kura/ipc/secret.hpp"

namespace kura::ipc {

namespace {

constexpr std::string_view kListenerLabel = "kura auth v1: listener answers";
constexpr std::string_view kConnectorLabel = "kura auth v1: connector answers";
constexpr std::size_t kSecretHex = 2 * detail::kSecretSize;

Status errno_status(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == ENOENT) code = Code::kNotFound;
  if (err == EEXIST) code = Code::kExists;
  if (err == EACCES || err == EPERM || err == ELOOP) code = Code::kPermission;
  return Status(code, what + ": " + std::strerror(err), err);
}

Status fill_random(std::span<std::byte> out) {
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

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

}  // namespace

Status write_secret_file(const std::string& path) noexcept {
  try {
    std::array<std::byte, detail::kSecretSize> secret{};
    KURA_RETURN_IF_ERROR(fill_random(secret));
    std::string text;
    constexpr char kHex[] = "0123456789abcdef";
    for (std::byte b : secret) {
      text += kHex[std::to_integer<unsigned>(b) >> 4];
      text += kHex[std::to_integer<unsigned>(b) & 0xf];
    }
    text += '\n';
    OPENSSL_cleanse(secret.data(), secret.size());
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
      if (errno == EEXIST)
        return Status(Code::kExists, "secret file " + path + " exists already; refusing to replace it",
                      EEXIST);
      return errno_status("cannot create secret file " + path, errno);
    }
    // The mode of open() is masked by the umask; 0600 is meant, no less.
    Status s = ::fchmod(fd, 0600) == 0 ? Status::ok() : errno_status("cannot chmod " + path, errno);
    std::size_t done = 0;
    while (s && done < text.size()) {
      const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = errno_status("cannot write secret file " + path, errno);
      if (n > 0) done += static_cast<std::size_t>(n);
    }
    if (s && ::fsync(fd) != 0) s = errno_status("cannot sync secret file " + path, errno);
    OPENSSL_cleanse(text.data(), text.size());
    ::close(fd);
    if (!s) ::unlink(path.c_str());
    return s;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::string> read_secret_file(const std::string& path) noexcept {
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ELOOP)
        return Status(Code::kPermission, "secret file " + path + " is a symbolic link; refusing it", ELOOP);
      return errno_status("cannot open secret file " + path, errno);
    }
    struct stat st;
    Status s = ::fstat(fd, &st) == 0 ? Status::ok() : errno_status("cannot stat secret file " + path, errno);
    if (s && !S_ISREG(st.st_mode))
      s = Status(Code::kPermission, "secret file " + path + " is not a regular file; refusing it");
    if (s && st.st_uid != ::geteuid())
      s = Status(Code::kPermission, "secret file " + path + " belongs to user " + std::to_string(st.st_uid) +
                                        ", not to this user; refusing it");
    if (s && (st.st_mode & 077) != 0)
      s = Status(Code::kPermission,
                 "secret file " + path + " is open to group or other; it must be mode 0600 (chmod 600 it)");
    char buf[kSecretHex + 2];
    std::size_t len = 0;
    while (s && len < sizeof buf) {
      const ssize_t n = ::read(fd, buf + len, sizeof buf - len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = errno_status("cannot read secret file " + path, errno);
      if (n <= 0) break;
      len += static_cast<std::size_t>(n);
    }
    ::close(fd);
    KURA_RETURN_IF_ERROR(s);
    if (len == kSecretHex + 1 && buf[kSecretHex] == '\n') len = kSecretHex;
    std::string secret;
    bool ok = len == kSecretHex;
    for (std::size_t i = 0; ok && i < kSecretHex; i += 2) {
      const int hi = hex_digit(buf[i]);
      const int lo = hex_digit(buf[i + 1]);
      ok = hi >= 0 && lo >= 0;
      if (ok) secret += static_cast<char>(hi * 16 + lo);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    if (!ok)
      return invalid_argument("secret file " + path + " does not hold a secret (" +
                              std::to_string(kSecretHex) +
                              " hex digits and a newline, as kura secret writes)");
    return secret;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

namespace detail {

Result<Nonce> make_nonce() noexcept {
  Nonce n;
  KURA_RETURN_IF_ERROR(fill_random(n));
  return n;
}

Answer compute_answer(std::span<const std::byte> secret, AuthSide from, const Nonce& theirs,
                      const Nonce& mine) noexcept {
  const std::string_view label = from == AuthSide::kListener ? kListenerLabel : kConnectorLabel;
  std::array<unsigned char, kAnswerSize> out{};
  unsigned int len = 0;
  // The label, then the nonces: fixed sizes, so no two inputs concatenate alike.
  std::array<unsigned char, kConnectorLabel.size() + 2 * kNonceSize> msg{};
  std::size_t at = 0;
  std::memcpy(msg.data(), label.data(), label.size());
  at += label.size();
  std::memcpy(msg.data() + at, theirs.data(), kNonceSize);
  at += kNonceSize;
  std::memcpy(msg.data() + at, mine.data(), kNonceSize);
  at += kNonceSize;
  const unsigned char* mac =
      HMAC(EVP_sha256(), secret.data(), static_cast<int>(secret.size()), msg.data(), at, out.data(), &len);
  KURA_CHECK(mac != nullptr && len == kAnswerSize);
  Answer a;
  std::memcpy(a.data(), out.data(), kAnswerSize);
  return a;
}

bool verify_answer(std::span<const std::byte> secret, AuthSide from, const Nonce& theirs, const Nonce& mine,
                   std::span<const std::byte, kAnswerSize> answer) noexcept {
  const Answer expected = compute_answer(secret, from, theirs, mine);
  return CRYPTO_memcmp(expected.data(), answer.data(), kAnswerSize) == 0;
}

Handshake::Handshake(AuthSide side, std::span<const std::byte> secret, const Nonce& mine)
    : side_(side), mine_(mine) {
  KURA_CHECK(secret.size() == kSecretSize);
  std::copy(secret.begin(), secret.end(), secret_.begin());
}

Handshake::~Handshake() {
  OPENSSL_cleanse(secret_.data(), secret_.size());
}

std::array<std::byte, kGreetingSize> Handshake::greeting() const noexcept {
  std::array<std::byte, kGreetingSize> g{};
  std::memcpy(g.data(), kAuthMagic.data(), kAuthMagic.size());
  std::memcpy(g.data() + kAuthMagic.size(), mine_.data(), kNonceSize);
  return g;
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
    Nonce theirs;
    std::memcpy(theirs.data(), got_.data() + kAuthMagic.size(), kNonceSize);
    if (before < kGreetingSize && have_ >= kGreetingSize) {
      const Answer a = compute_answer(secret_, side_, theirs, mine_);
      reply.insert(reply.end(), a.begin(), a.end());
    }
    if (before < kHandshakeSize && have_ == kHandshakeSize) {
      const AuthSide peer = side_ == AuthSide::kListener ? AuthSide::kConnector : AuthSide::kListener;
      if (!verify_answer(secret_, peer, mine_, theirs,
                         std::span<const std::byte, kAnswerSize>(got_.data() + kGreetingSize, kAnswerSize)))
        return Status(Code::kPermission,
                      "the peer's answer is wrong: it has another secret, or replayed an old handshake");
      proved_ = true;
    }
    failed_ = false;
    return take;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace detail

}  // namespace kura::ipc
