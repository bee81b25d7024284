// Internal to kura_ipc: proving a shared secret both ways before a TCP
// connection carries frames (DESIGN.md section 6, docs/design.md "Workers
// over TCP"). Pure: no libuv, no I/O but getrandom(2) for nonces, so the
// fuzz target builds this file alone.
//
// The handshake, the same for both sides and in fixed sizes:
//   1. each side sends its greeting: kAuthMagic (8 bytes), a fresh random
//      nonce (32 bytes), then its flags (1 byte: kWantTls or 0);
//   2. on the peer's greeting, each side sends its answer
//      HMAC-SHA256(secret, label || peer's greeting || own greeting) (32
//      bytes), where the label names the sender's side (listener or
//      connector), so an answer reflected back to its sender is wrong;
//   3. each side checks the peer's answer (constant-time compare), and only
//      then may anything follow: TLS 1.3 (tls_internal.hpp) when either
//      side's flags ask for it, else frames.
// The secret never crosses the wire; a recorded answer is worthless on a
// later connection because the other side's nonce is new. The answers cover
// both greetings whole, flags included: someone on the path who clears a
// kWantTls to keep the stream in plaintext makes both answers wrong.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <span>
#include <string>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"

namespace kura::ipc::detail {

constexpr std::size_t kSecretSize = 32;
constexpr std::size_t kNonceSize = 32;
constexpr std::size_t kAnswerSize = 32;  // an HMAC-SHA256
// Version 2: version 1 had no flags byte, and its peers are refused as not
// a kura handshake (Corrupt).
constexpr std::array<char, 8> kAuthMagic = {'K', 'U', 'R', 'A', 'A', 'U', 'T', '2'};
// The flags of a greeting: this side wants the stream after the handshake
// wrapped in TLS. Any other bit set is refused (Corrupt).
constexpr std::uint8_t kWantTls = 1;
constexpr std::size_t kGreetingSize = kAuthMagic.size() + kNonceSize + 1;
// Everything a side reads of the handshake: the peer's greeting and answer.
constexpr std::size_t kHandshakeSize = kGreetingSize + kAnswerSize;

using Nonce = std::array<std::byte, kNonceSize>;
using Answer = std::array<std::byte, kAnswerSize>;
using Greeting = std::array<std::byte, kGreetingSize>;

// Which end of the connection a side is: the one that accepted it or the
// one that connected.
enum class AuthSide : std::uint8_t { kListener, kConnector };

// Fills `out` from getrandom(2). Errors: Io (no randomness).
Status fill_random(std::span<std::byte> out) noexcept;

// A fresh random nonce from getrandom(2). Errors: Io (no randomness).
Result<Nonce> make_nonce() noexcept;

// The greeting of a side with nonce `nonce` and `flags`.
Greeting make_greeting(const Nonce& nonce, std::uint8_t flags) noexcept;

// The answer `from` sends: HMAC-SHA256(secret, label(from) || theirs ||
// mine), `theirs` the other side's greeting and `mine` the sender's.
Answer compute_answer(std::span<const std::byte> secret, AuthSide from, const Greeting& theirs,
                      const Greeting& mine) noexcept;

// True when `answer` is what `from` had to send (compared in constant time).
bool verify_answer(std::span<const std::byte> secret, AuthSide from, const Greeting& theirs,
                   const Greeting& mine, std::span<const std::byte, kAnswerSize> answer) noexcept;

// One side of a handshake: feed it the peer's bytes as they come; it says
// what to send and whether the peer proved the secret. Not thread-safe.
class Handshake {
 public:
  // `secret` is copied; `mine` is this side's fresh nonce, `flags` what
  // its greeting asks for (kWantTls or 0).
  Handshake(AuthSide side, std::span<const std::byte> secret, const Nonce& mine, std::uint8_t flags = 0);
  ~Handshake();
  Handshake(const Handshake&) = delete;
  Handshake& operator=(const Handshake&) = delete;

  // The first bytes to send: kAuthMagic, this side's nonce and flags.
  const Greeting& greeting() const noexcept { return mine_; }

  // Takes the peer's bytes: returns how many of `in` belong to the
  // handshake (the rest are frames that follow it). Once the peer's
  // greeting is complete, this side's answer is appended to `reply` (once).
  // Errors, after which the connection must close: Corrupt (not a kura
  // handshake: the first 8 bytes are not kAuthMagic, e.g. a peer that sent
  // a frame straight away, or flags this version does not know), Permission
  // (the peer's answer is wrong: another secret, an answer recorded from
  // another connection, or a greeting changed on the way). OutOfMemory.
  // After an error, every call fails (InvalidArgument).
  Result<std::size_t> feed(std::span<const std::byte> in, Bytes& reply) noexcept;

  // How many more bytes the handshake needs from the peer (0 once done).
  std::size_t wanted() const noexcept { return kHandshakeSize - have_; }
  // The peer proved the secret.
  bool done() const noexcept { return proved_; }
  // Once done(): TLS follows, because either side's greeting asked for it.
  bool tls() const noexcept;

 private:
  AuthSide side_;
  std::array<std::byte, kSecretSize> secret_{};
  Greeting mine_;
  std::array<std::byte, kHandshakeSize> got_{};
  std::size_t have_ = 0;
  bool proved_ = false;
  bool failed_ = false;  // feed() failed: every later call fails too
};

}  // namespace kura::ipc::detail
