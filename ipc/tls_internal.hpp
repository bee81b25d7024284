// Internal to kura_ipc: TLS 1.3 over a TCP connection that proved the shared
// secret (auth_internal.hpp), when either side's greeting asked for it
// (docs/design.md "Workers over TCP"). The listener presents the
// certificate of `kura secret` (kura/ipc/secret.hpp); the connector accepts
// exactly the certificate whose fingerprint it pins, nothing else (no
// names, no dates, no certificate authorities). TLS 1.3 only, no session
// tickets, no resumption.
//
// A TlsSession is OpenSSL's engine over memory buffers, pure (no libuv, no
// I/O), so the fuzz target builds it alone; the TLS stream (tls_stream.cpp,
// transport_internal.hpp) carries its bytes over a socket stream.
#pragma once

#include <openssl/ssl.h>

#include <cstddef>
#include <memory>
#include <span>
#include <string>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"

namespace kura::ipc::detail {

// A PEM certificate or key kura writes is well under this; a longer file
// is refused.
constexpr std::size_t kPemLimit = 64 * 1024;

// The text of OpenSSL's errors queued on this thread (emptied), or
// "unknown error".
std::string openssl_error();

// "sha256:" and the hex of SHA-256 over `cert`'s DER bytes ("" if that
// fails); secret.cpp.
std::string fingerprint_of(X509* cert);

// What the sessions of one side share: OpenSSL's SSL_CTX. Immutable once
// made; shared by the sessions of a listener across its connections.
class TlsContext {
 public:
  // A listener's: presents the certificate and key of the secret file
  // `secret_file` (certificate_path, key_path; the key must be mode 0600
  // and this user's, as the secret). Errors: NotFound (saying to run kura
  // secret), Permission, InvalidArgument (not a PEM certificate or key, or
  // a key that is not the certificate's), Io, OutOfMemory.
  static Result<std::shared_ptr<const TlsContext>> server(const std::string& secret_file) noexcept;
  // A connector's: accepts only a certificate whose fingerprint is
  // `fingerprint` (as parse_fingerprint returns it). Errors: Io,
  // OutOfMemory.
  static Result<std::shared_ptr<const TlsContext>> client(std::string fingerprint) noexcept;

  ~TlsContext();
  TlsContext(const TlsContext&) = delete;
  TlsContext& operator=(const TlsContext&) = delete;

  bool is_server() const noexcept { return server_; }
  const std::string& pinned() const noexcept { return pinned_; }
  SSL_CTX* get() const noexcept { return ctx_; }

 private:
  TlsContext(SSL_CTX* ctx, bool server, std::string pinned)
      : ctx_(ctx), server_(server), pinned_(std::move(pinned)) {}
  SSL_CTX* ctx_;
  bool server_;
  std::string pinned_;  // a client's pinned fingerprint
};

// One side of one TLS connection over memory buffers: feed it the peer's
// bytes, take what it has to send. Not thread-safe.
class TlsSession {
 public:
  // Errors: Io, OutOfMemory.
  static Result<std::unique_ptr<TlsSession>> make(std::shared_ptr<const TlsContext> ctx) noexcept;
  ~TlsSession();
  TlsSession(const TlsSession&) = delete;
  TlsSession& operator=(const TlsSession&) = delete;

  // Takes bytes the peer sent (copied). Errors: OutOfMemory.
  Status feed(std::span<const std::byte> in) noexcept;
  // Advances the handshake over what was fed; true once it is complete (then
  // call read). Errors, after which the connection must close: Permission
  // (the listener's certificate is not the pinned one: the message names
  // both fingerprints), Corrupt (not TLS 1.3, garbage, a failed handshake).
  Result<bool> handshake() noexcept;
  // Decrypts what was fed into `out`: the bytes written, 0 when more input
  // is needed or the peer ended the stream (ended()). Errors, after which
  // the connection must close: Corrupt (a record that does not decrypt,
  // garbage), OutOfMemory.
  Result<std::size_t> read(std::span<std::byte> out) noexcept;
  // Encrypts `in` (after the handshake). Errors: Io, OutOfMemory.
  Status write(std::span<const std::byte> in) noexcept;
  // Appends what waits to be sent to the peer to `out`, and forgets it.
  // Errors: OutOfMemory.
  Status take_output(Bytes& out) noexcept;
  std::size_t output_size() const noexcept;
  // Bytes fed but not yet decrypted and read.
  std::size_t input_size() const noexcept;
  // The peer sent close_notify: no more bytes come.
  bool ended() const noexcept { return ended_; }
  // The protocol and cipher, for logs ("TLSv1.3 TLS_AES_256_GCM_SHA384").
  std::string describe() const;

 private:
  friend struct TlsVerify;
  TlsSession() = default;
  Status failure(const std::string& what, Code code) noexcept;

  std::shared_ptr<const TlsContext> ctx_;
  SSL* ssl_ = nullptr;
  BIO* in_ = nullptr;   // the peer's bytes, read by ssl_ (owned by ssl_)
  BIO* out_ = nullptr;  // bytes for the peer, written by ssl_ (owned by ssl_)
  bool ended_ = false;
  std::string presented_;  // a client's: the fingerprint the listener presented
};

}  // namespace kura::ipc::detail
