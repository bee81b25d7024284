// The handshake's pure parts (ipc/auth.cpp): answers, the two directions,
// and two Handshake objects talking to each other.
#include <catch2/catch.hpp>
#include <cstring>
#include <string>

#include "auth_internal.hpp"

namespace kura::ipc {
namespace {

using detail::Answer;
using detail::AuthSide;
using detail::Greeting;
using detail::Handshake;
using detail::Nonce;

std::array<std::byte, detail::kSecretSize> test_secret() {
  std::array<std::byte, detail::kSecretSize> s{};
  for (std::size_t i = 0; i < s.size(); ++i) s[i] = static_cast<std::byte>(i);
  return s;
}

Nonce filled(std::byte (*at)(std::size_t)) {
  Nonce n{};
  for (std::size_t i = 0; i < n.size(); ++i) n[i] = at(i);
  return n;
}

std::string hex(std::span<const std::byte> bytes) {
  static const char* kHex = "0123456789abcdef";
  std::string out;
  for (std::byte b : bytes) {
    out += kHex[std::to_integer<unsigned>(b) >> 4];
    out += kHex[std::to_integer<unsigned>(b) & 0xf];
  }
  return out;
}

// Feeds `from`'s output to `to` and back until neither has more to say.
// Returns the first error, or ok once both are done.
Status converse(Handshake& a, Handshake& b) {
  Bytes a_out;
  Bytes b_out;
  const auto ga = a.greeting();
  const auto gb = b.greeting();
  a_out.insert(a_out.end(), ga.begin(), ga.end());
  b_out.insert(b_out.end(), gb.begin(), gb.end());
  for (int round = 0; round < 4 && !(a.done() && b.done()); ++round) {
    Bytes to_a;
    Bytes to_b;
    if (!a_out.empty()) {
      auto used = b.feed(a_out, to_a);
      if (!used) return used.status();
    }
    if (!b_out.empty()) {
      auto used = a.feed(b_out, to_b);
      if (!used) return used.status();
    }
    a_out = std::move(to_b);
    b_out = std::move(to_a);
  }
  return a.done() && b.done() ? Status::ok() : Status(Code::kIo, "the handshake did not finish");
}

TEST_CASE("auth: an answer is HMAC-SHA256 over the label and both greetings, flags included", "[ipc][auth]") {
  const auto secret = test_secret();
  const Greeting theirs =
      detail::make_greeting(filled([](std::size_t i) { return static_cast<std::byte>(0xa0 + i % 16); }), 0);
  const Greeting mine =
      detail::make_greeting(filled([](std::size_t) { return std::byte{0x50}; }), detail::kWantTls);
  // Computed independently:
  //   printf 'kura auth v2: listener answers' > msg.bin
  //   KURAAUT2, 32 bytes a0 a1 .. af a0 .. af, 00 >> msg.bin
  //   KURAAUT2, 32 bytes 50, 01 >> msg.bin
  //   openssl dgst -sha256 -mac HMAC -macopt hexkey:000102...1f msg.bin
  const Answer a = detail::compute_answer(secret, AuthSide::kListener, theirs, mine);
  CHECK(hex(a) == "fab6c10309577c77155bd1708db3d43b705d29e01e3c28ce313474b722489918");
  CHECK(detail::verify_answer(secret, AuthSide::kListener, theirs, mine, a));

  // The other direction's answer over the same greetings differs: an answer
  // reflected back to the side that sent it is wrong.
  const Answer b = detail::compute_answer(secret, AuthSide::kConnector, theirs, mine);
  CHECK(hex(b) != hex(a));
  CHECK_FALSE(detail::verify_answer(secret, AuthSide::kConnector, theirs, mine, a));
  // Swapped greetings, another secret, a flipped bit: all wrong.
  CHECK_FALSE(detail::verify_answer(secret, AuthSide::kListener, mine, theirs, a));
  auto other = secret;
  other[31] ^= std::byte{1};
  CHECK_FALSE(detail::verify_answer(other, AuthSide::kListener, theirs, mine, a));
  Answer flipped = a;
  flipped[0] ^= std::byte{0x80};
  CHECK_FALSE(detail::verify_answer(secret, AuthSide::kListener, theirs, mine, flipped));
  // A greeting whose TLS flag was cleared on the way: wrong.
  Greeting downgraded = mine;
  downgraded[detail::kGreetingSize - 1] = std::byte{0};
  CHECK_FALSE(detail::verify_answer(secret, AuthSide::kListener, theirs, downgraded, a));
}

TEST_CASE("auth: nonces are fresh", "[ipc][auth]") {
  auto a = detail::make_nonce();
  auto b = detail::make_nonce();
  REQUIRE(a.is_ok());
  REQUIRE(b.is_ok());
  CHECK(*a != *b);
}

TEST_CASE("auth: two sides with the same secret complete the handshake", "[ipc][auth]") {
  const auto secret = test_secret();
  Handshake listener(AuthSide::kListener, secret, *detail::make_nonce());
  Handshake connector(AuthSide::kConnector, secret, *detail::make_nonce());
  CHECK(listener.wanted() == detail::kHandshakeSize);
  Status s = converse(listener, connector);
  INFO(s.to_string());
  CHECK(s.is_ok());
  CHECK(listener.wanted() == 0);
  CHECK_FALSE(listener.tls());
  CHECK_FALSE(connector.tls());
}

TEST_CASE("auth: TLS follows when either side asks for it", "[ipc][auth]") {
  const auto secret = test_secret();
  for (const auto& [listener_flags, connector_flags] : {std::pair{0, 1}, std::pair{1, 0}, std::pair{1, 1}}) {
    Handshake listener(AuthSide::kListener, secret, *detail::make_nonce(),
                       static_cast<std::uint8_t>(listener_flags));
    Handshake connector(AuthSide::kConnector, secret, *detail::make_nonce(),
                        static_cast<std::uint8_t>(connector_flags));
    REQUIRE(converse(listener, connector).is_ok());
    CHECK(listener.tls());
    CHECK(connector.tls());
  }
}

TEST_CASE("auth: a cleared TLS flag or unknown flags are refused", "[ipc][auth]") {
  const auto secret = test_secret();
  const Nonce cn = *detail::make_nonce();
  SECTION("someone on the path clears the connector's kWantTls") {
    Handshake listener(AuthSide::kListener, secret, *detail::make_nonce());
    Handshake connector(AuthSide::kConnector, secret, cn, detail::kWantTls);
    Bytes to_connector;
    Bytes to_listener;
    Greeting g = connector.greeting();
    g[detail::kGreetingSize - 1] = std::byte{0};
    REQUIRE(listener.feed(g, to_connector).is_ok());
    const Greeting lg = listener.greeting();
    REQUIRE(connector.feed(lg, to_listener).is_ok());
    REQUIRE(connector.feed(to_connector, to_listener).status().code() == Code::kPermission);
    auto used = listener.feed(to_listener, to_connector);
    REQUIRE_FALSE(used.is_ok());
    CHECK(used.status().code() == Code::kPermission);
    CHECK_FALSE(listener.done());
  }
  SECTION("flags this version does not know") {
    Handshake listener(AuthSide::kListener, secret, *detail::make_nonce());
    Bytes reply;
    auto used = listener.feed(detail::make_greeting(cn, 0x80), reply);
    REQUIRE_FALSE(used.is_ok());
    CHECK(used.status().code() == Code::kCorrupt);
    CHECK(reply.empty());
  }
}

TEST_CASE("auth: a wrong secret, a reflected answer and garbage are refused", "[ipc][auth]") {
  const auto secret = test_secret();
  auto other = secret;
  other[0] = std::byte{0xff};

  SECTION("another secret: both sides refuse the other's answer") {
    Handshake listener(AuthSide::kListener, secret, *detail::make_nonce());
    Handshake connector(AuthSide::kConnector, other, *detail::make_nonce());
    Status s = converse(listener, connector);
    CHECK(s.code() == Code::kPermission);
    CHECK_FALSE(listener.done());
  }
  SECTION("a peer of the same side (an answer reflected with the wrong label)") {
    Handshake a(AuthSide::kListener, secret, *detail::make_nonce());
    Handshake b(AuthSide::kListener, secret, *detail::make_nonce());
    CHECK(converse(a, b).code() == Code::kPermission);
  }
  SECTION("bytes that are not a handshake: a frame sent straight away") {
    Handshake h(AuthSide::kListener, secret, *detail::make_nonce());
    Bytes reply;
    Bytes garbage(detail::kHandshakeSize, std::byte{0x01});
    auto used = h.feed(garbage, reply);
    REQUIRE_FALSE(used.is_ok());
    CHECK(used.status().code() == Code::kCorrupt);
    CHECK(reply.empty());  // no answer to a peer that did not greet
  }
}

TEST_CASE("auth: bytes byte by byte, and what follows the handshake is left alone", "[ipc][auth]") {
  const auto secret = test_secret();
  const Nonce ln = *detail::make_nonce();
  const Nonce cn = *detail::make_nonce();
  Handshake listener(AuthSide::kListener, secret, ln);
  // The connector's bytes, by hand: greeting, answer, then a frame's first bytes.
  Bytes wire;
  const Greeting greeting = detail::make_greeting(cn, 0);
  wire.insert(wire.end(), greeting.begin(), greeting.end());
  const Answer answer = detail::compute_answer(secret, AuthSide::kConnector, listener.greeting(), greeting);
  wire.insert(wire.end(), answer.begin(), answer.end());
  wire.insert(wire.end(), 5, std::byte{0x77});
  Bytes reply;
  std::size_t used = 0;
  for (std::size_t i = 0; i < detail::kHandshakeSize; ++i) {
    auto n = listener.feed(std::span<const std::byte>(wire.data() + i, 1), reply);
    REQUIRE(n.is_ok());
    used += *n;
  }
  CHECK(used == detail::kHandshakeSize);
  CHECK(listener.done());
  REQUIRE(reply.size() == detail::kAnswerSize);
  const Answer expected = detail::compute_answer(secret, AuthSide::kListener, greeting, listener.greeting());
  CHECK(std::memcmp(reply.data(), expected.data(), detail::kAnswerSize) == 0);
  auto rest = listener.feed(std::span<const std::byte>(wire.data() + detail::kHandshakeSize, 5), reply);
  REQUIRE(rest.is_ok());
  CHECK(*rest == 0);
}

}  // namespace
}  // namespace kura::ipc
