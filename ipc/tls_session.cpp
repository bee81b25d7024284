// TLS 1.3 over memory buffers, with the listener's certificate pinned by
// fingerprint (tls_internal.hpp).
#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include <climits>
#include <new>

#include "kura/ipc/secret.hpp"
#include "private_file.hpp"
#include "tls_internal.hpp"

namespace kura::ipc::detail {

namespace {

// The most fed to OpenSSL in one call.
constexpr std::size_t kChunk = 1 << 30;

struct BioFree {
  void operator()(BIO* b) const { BIO_free(b); }
};

SSL_CTX* new_context(bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr) return nullptr;
  // TLS 1.3 only; no tickets, so nothing arrives after the handshake that
  // the stream would have to tell from data; no compression.
  if (SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 || SSL_CTX_set_num_tickets(ctx, 0) != 1) {
    SSL_CTX_free(ctx);
    return nullptr;
  }
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

Result<std::string> read_pem(const std::string& path, const std::string& what, bool private_only) {
  auto text = read_checked_file(path, what, kPemLimit, private_only);
  if (!text && text.status().code() == Code::kNotFound)
    return Status(Code::kNotFound,
                  what + " " + path +
                      " is missing: TLS needs the certificate and key that kura secret writes beside the "
                      "secret (run kura secret FILE for a new secret, certificate and key, and give the "
                      "workers the fingerprint it prints)");
  return text;
}

}  // namespace

std::string openssl_error() {
  std::string out;
  char buf[256];
  while (const unsigned long e = ERR_get_error()) {
    ERR_error_string_n(e, buf, sizeof buf);
    if (!out.empty()) out += "; ";
    out += buf;
  }
  return out.empty() ? "unknown error" : out;
}

// The connector's check of the listener's certificate: its fingerprint is
// the pinned one, and nothing else counts (the certificate is self-signed).
struct TlsVerify {
  static int check(X509_STORE_CTX* store, void*) {
    auto* ssl = static_cast<SSL*>(X509_STORE_CTX_get_ex_data(store, SSL_get_ex_data_X509_STORE_CTX_idx()));
    auto* session = ssl != nullptr ? static_cast<TlsSession*>(SSL_get_app_data(ssl)) : nullptr;
    X509* cert = X509_STORE_CTX_get0_cert(store);
    if (session == nullptr || cert == nullptr) return 0;
    try {
      session->presented_ = fingerprint_of(cert);
    } catch (const std::bad_alloc&) {
      return 0;
    }
    if (!session->presented_.empty() && session->presented_ == session->ctx_->pinned()) return 1;
    X509_STORE_CTX_set_error(store, X509_V_ERR_CERT_REJECTED);
    return 0;
  }
};

TlsContext::~TlsContext() {
  SSL_CTX_free(ctx_);
}

Result<std::shared_ptr<const TlsContext>> TlsContext::server(const std::string& secret_file) noexcept {
  try {
    const std::string crt = certificate_path(secret_file);
    const std::string key = key_path(secret_file);
    KURA_ASSIGN_OR_RETURN(std::string cert_pem, read_pem(crt, "certificate file", false));
    KURA_ASSIGN_OR_RETURN(std::string key_pem, read_pem(key, "key file", true));
    std::unique_ptr<BIO, BioFree> cert_bio(
        BIO_new_mem_buf(cert_pem.data(), static_cast<int>(cert_pem.size())));
    std::unique_ptr<BIO, BioFree> key_bio(BIO_new_mem_buf(key_pem.data(), static_cast<int>(key_pem.size())));
    if (!cert_bio || !key_bio) return Status::out_of_memory();
    X509* cert = PEM_read_bio_X509(cert_bio.get(), nullptr, nullptr, nullptr);
    EVP_PKEY* pkey = PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr);
    OPENSSL_cleanse(key_pem.data(), key_pem.size());
    SSL_CTX* ctx = cert != nullptr && pkey != nullptr ? new_context(true) : nullptr;
    Status s;
    if (cert == nullptr) {
      s = invalid_argument("certificate file " + crt + " holds no PEM certificate");
    } else if (pkey == nullptr) {
      s = invalid_argument("key file " + key + " holds no PEM private key");
    } else if (ctx == nullptr) {
      s = Status(Code::kIo, "cannot set up TLS: " + openssl_error());
    } else if (SSL_CTX_use_certificate(ctx, cert) != 1 || SSL_CTX_use_PrivateKey(ctx, pkey) != 1 ||
               SSL_CTX_check_private_key(ctx) != 1) {
      s = invalid_argument("key file " + key + " does not hold the key of certificate file " + crt + ": " +
                           openssl_error());
    }
    X509_free(cert);
    EVP_PKEY_free(pkey);
    ERR_clear_error();
    if (!s) {
      SSL_CTX_free(ctx);
      return s;
    }
    return std::shared_ptr<const TlsContext>(new TlsContext(ctx, true, {}));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::shared_ptr<const TlsContext>> TlsContext::client(std::string fingerprint) noexcept {
  try {
    SSL_CTX* ctx = new_context(false);
    if (ctx == nullptr) return Status(Code::kIo, "cannot set up TLS: " + openssl_error());
    SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, nullptr);
    SSL_CTX_set_cert_verify_callback(ctx, &TlsVerify::check, nullptr);
    return std::shared_ptr<const TlsContext>(new TlsContext(ctx, false, std::move(fingerprint)));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::unique_ptr<TlsSession>> TlsSession::make(std::shared_ptr<const TlsContext> ctx) noexcept {
  try {
    std::unique_ptr<TlsSession> s(new TlsSession());
    s->ssl_ = SSL_new(ctx->get());
    s->ctx_ = std::move(ctx);
    if (s->ssl_ == nullptr) return Status(Code::kIo, "cannot start TLS: " + openssl_error());
    s->in_ = BIO_new(BIO_s_mem());
    s->out_ = BIO_new(BIO_s_mem());
    if (s->in_ == nullptr || s->out_ == nullptr) {
      BIO_free(s->in_);
      BIO_free(s->out_);
      s->in_ = s->out_ = nullptr;
      return Status::out_of_memory();
    }
    // An empty buffer means "wait for more", not the end of the stream.
    BIO_set_mem_eof_return(s->in_, -1);
    BIO_set_mem_eof_return(s->out_, -1);
    SSL_set_bio(s->ssl_, s->in_, s->out_);
    SSL_set_app_data(s->ssl_, s.get());
    if (s->ctx_->is_server()) {
      SSL_set_accept_state(s->ssl_);
    } else {
      SSL_set_connect_state(s->ssl_);
    }
    return s;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

TlsSession::~TlsSession() {
  SSL_free(ssl_);
}

Status TlsSession::failure(const std::string& what, Code code) noexcept {
  try {
    return Status(code, what + ": " + openssl_error());
  } catch (const std::bad_alloc&) {
    ERR_clear_error();
    return Status::out_of_memory();
  }
}

Status TlsSession::feed(std::span<const std::byte> in) noexcept {
  while (!in.empty()) {
    const std::size_t n = std::min(in.size(), kChunk);
    if (BIO_write(in_, in.data(), static_cast<int>(n)) != static_cast<int>(n)) {
      ERR_clear_error();
      return Status::out_of_memory();
    }
    in = in.subspan(n);
  }
  return Status::ok();
}

Result<bool> TlsSession::handshake() noexcept {
  ERR_clear_error();
  const int rc = SSL_do_handshake(ssl_);
  if (rc == 1) return true;
  const int err = SSL_get_error(ssl_, rc);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return false;
  if (!ctx_->is_server() && !presented_.empty() && presented_ != ctx_->pinned()) {
    ERR_clear_error();
    try {
      return Status(Code::kPermission,
                    "the dispatcher's certificate is " + presented_ + ", not the pinned " + ctx_->pinned() +
                        " (another dispatcher, or someone in between: check --fingerprint)");
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory();
    }
  }
  if (ctx_->is_server() && ERR_GET_REASON(ERR_peek_error()) == SSL_R_SSLV3_ALERT_BAD_CERTIFICATE) {
    ERR_clear_error();
    return Status(
        Code::kPermission,
        "the worker refused this dispatcher's certificate: it pins another fingerprint (give it the "
        "one kura secret printed for this secret file)");
  }
  return failure("the TLS handshake failed", Code::kCorrupt);
}

Result<std::size_t> TlsSession::read(std::span<std::byte> out) noexcept {
  if (ended_ || out.empty()) return std::size_t{0};
  ERR_clear_error();
  std::size_t got = 0;
  if (SSL_read_ex(ssl_, out.data(), std::min(out.size(), kChunk), &got) == 1) return got;
  const int err = SSL_get_error(ssl_, 0);
  if (err == SSL_ERROR_WANT_READ || err == SSL_ERROR_WANT_WRITE) return std::size_t{0};
  if (err == SSL_ERROR_ZERO_RETURN) {
    ended_ = true;
    return std::size_t{0};
  }
  return failure("the peer sent bytes that are not valid TLS", Code::kCorrupt);
}

Status TlsSession::write(std::span<const std::byte> in) noexcept {
  ERR_clear_error();
  while (!in.empty()) {
    std::size_t done = 0;
    if (SSL_write_ex(ssl_, in.data(), std::min(in.size(), kChunk), &done) != 1)
      return failure("cannot encrypt for TLS", Code::kIo);
    in = in.subspan(done);
  }
  return Status::ok();
}

Status TlsSession::take_output(Bytes& out) noexcept {
  try {
    // Read out rather than reset: a reset memory BIO cleanses its whole
    // buffer, which costs more than the encryption.
    const std::size_t n = BIO_ctrl_pending(out_);
    if (n == 0) return Status::ok();
    const std::size_t at = out.size();
    out.resize(at + n);
    std::size_t got = 0;
    if (BIO_read_ex(out_, out.data() + at, n, &got) != 1 || got != n) {
      out.resize(at);
      return failure("cannot take TLS output", Code::kIo);
    }
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

std::size_t TlsSession::output_size() const noexcept {
  return BIO_ctrl_pending(out_);
}

std::size_t TlsSession::input_size() const noexcept {
  return BIO_ctrl_pending(in_) + static_cast<std::size_t>(SSL_pending(ssl_));
}

std::string TlsSession::describe() const {
  return std::string(SSL_get_version(ssl_)) + " " + SSL_get_cipher_name(ssl_);
}

}  // namespace kura::ipc::detail
