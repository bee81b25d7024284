// libFuzzer target for the TLS sessions of ipc/tls_session.cpp: what a
// listener (or a worker) reads once the secret is proved and TLS was asked
// for. Any bytes, cut anywhere, give an error (Corrupt, Permission) or need
// more; never a crash, never a completed handshake (the peer's key share
// and Finished cannot come from random bytes), never plaintext out.
#include <stdlib.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <span>
#include <string>

#include "kura/ipc/secret.hpp"
#include "tls_internal.hpp"

namespace {

using namespace kura::ipc::detail;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "tls_fuzz: %s\n", what);
    std::abort();
  }
}

// A listener's context over a certificate made once in a fresh directory,
// and a worker's pinning it.
struct Contexts {
  Contexts() {
    char dir[] = "/tmp/kura-tls-fuzz.XXXXXX";
    require(::mkdtemp(dir) != nullptr, "cannot make a directory");
    const std::string secret = std::string(dir) + "/secret";
    require(kura::ipc::write_secret_file(secret).is_ok(), "cannot write a secret");
    auto s = TlsContext::server(secret);
    require(s.is_ok(), "cannot load the certificate");
    server = *s;
    auto fp = kura::ipc::certificate_fingerprint(kura::ipc::certificate_path(secret));
    require(fp.is_ok(), "cannot read the fingerprint");
    auto c = TlsContext::client(*fp);
    require(c.is_ok(), "cannot make a client context");
    client = *c;
    ::unlink(secret.c_str());
    ::unlink(kura::ipc::certificate_path(secret).c_str());
    ::unlink(kura::ipc::key_path(secret).c_str());
    ::rmdir(dir);
  }
  std::shared_ptr<const TlsContext> server;
  std::shared_ptr<const TlsContext> client;
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  static const Contexts contexts;
  if (size == 0) return 0;
  // The first byte picks the side and the size of the pieces the bytes come in.
  const bool listener = (data[0] & 1) != 0;
  const std::size_t piece = 1 + (data[0] >> 1) * 16;
  auto session = TlsSession::make(listener ? contexts.server : contexts.client);
  require(session.is_ok(), "cannot make a session");
  TlsSession& s = **session;
  std::span<const std::byte> in(reinterpret_cast<const std::byte*>(data + 1), size - 1);
  kura::Bytes out;
  if (!listener) {
    auto first = s.handshake();
    require(first.is_ok() && !*first, "a worker's handshake done before any byte");
    require(s.take_output(out).is_ok(), "no ClientHello");
  }
  while (!in.empty()) {
    const std::span<const std::byte> now = in.first(std::min(piece, in.size()));
    require(s.feed(now).is_ok(), "feed failed");
    auto done = s.handshake();
    if (!done) {
      const kura::Code c = done.status().code();
      require(c == kura::Code::kCorrupt || c == kura::Code::kPermission || c == kura::Code::kOutOfMemory,
              "an unexpected error code");
      return 0;
    }
    require(!*done, "a handshake completed with random bytes");
    out.clear();
    require(s.take_output(out).is_ok(), "take_output failed");
    in = in.subspan(now.size());
  }
  return 0;
}
