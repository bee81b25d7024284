// The credential files of kura/ipc/secret.hpp: the shared secret, and the
// Ed25519 key and self-signed certificate of the dispatcher's TLS.
#include "kura/ipc/secret.hpp"

#include <openssl/bio.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <sys/stat.h>
#include <unistd.h>

#include <array>
#include <memory>
#include <new>

#include "auth_internal.hpp"
#include "private_file.hpp"
#include "tls_internal.hpp"

namespace kura::ipc {

namespace {

using detail::kSecretSize;

constexpr std::size_t kSecretHex = 2 * kSecretSize;
constexpr std::string_view kFingerprintPrefix = "sha256:";
constexpr char kHex[] = "0123456789abcdef";

int hex_digit(char c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

std::string to_hex(std::span<const unsigned char> bytes) {
  std::string out;
  out.reserve(2 * bytes.size());
  for (unsigned char b : bytes) {
    out += kHex[b >> 4];
    out += kHex[b & 0xf];
  }
  return out;
}

template <typename T, void (*Free)(T*)>
struct Freer {
  void operator()(T* p) const { Free(p); }
};
using PkeyPtr = std::unique_ptr<EVP_PKEY, Freer<EVP_PKEY, EVP_PKEY_free>>;
using X509Ptr = std::unique_ptr<X509, Freer<X509, X509_free>>;
using BioPtr = std::unique_ptr<BIO, Freer<BIO, BIO_free_all>>;

Status crypto_error(const std::string& what) {
  return Status(Code::kIo, what + ": " + detail::openssl_error());
}

// What a memory BIO holds, as text.
std::string bio_text(BIO* b) {
  char* data = nullptr;
  const long n = BIO_get_mem_data(b, &data);
  return n > 0 ? std::string(data, static_cast<std::size_t>(n)) : std::string();
}

// A new Ed25519 key and its self-signed certificate, both PEM.
Status make_certificate(std::string& cert_pem, std::string& key_pem) {
  PkeyPtr key(EVP_PKEY_Q_keygen(nullptr, nullptr, "ED25519"));
  if (!key) return crypto_error("cannot make an Ed25519 key");
  X509Ptr cert(X509_new());
  if (!cert) return Status::out_of_memory();
  std::array<unsigned char, 16> serial{};
  KURA_RETURN_IF_ERROR(detail::fill_random(std::as_writable_bytes(std::span(serial))));
  serial[0] &= 0x7f;  // a positive serial number
  std::unique_ptr<BIGNUM, Freer<BIGNUM, BN_free>> bn(BN_bin2bn(serial.data(), serial.size(), nullptr));
  X509_NAME* name = X509_get_subject_name(cert.get());
  // The certificate is pinned by its fingerprint, never checked against a
  // name or a date: it names kura and does not expire (RFC 5280's
  // 99991231235959Z).
  const bool ok =
      bn && X509_set_version(cert.get(), X509_VERSION_3) == 1 &&
      BN_to_ASN1_INTEGER(bn.get(), X509_get_serialNumber(cert.get())) != nullptr &&
      X509_gmtime_adj(X509_getm_notBefore(cert.get()), 0) != nullptr &&
      ASN1_TIME_set_string(X509_getm_notAfter(cert.get()), "99991231235959Z") == 1 &&
      X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC,
                                 reinterpret_cast<const unsigned char*>("kura dispatcher"), -1, -1, 0) == 1 &&
      X509_set_issuer_name(cert.get(), name) == 1 && X509_set_pubkey(cert.get(), key.get()) == 1 &&
      X509_sign(cert.get(), key.get(), nullptr) > 0;
  if (!ok) return crypto_error("cannot make a self-signed certificate");
  BioPtr cert_bio(BIO_new(BIO_s_mem()));
  BioPtr key_bio(BIO_new(BIO_s_mem()));
  if (!cert_bio || !key_bio) return Status::out_of_memory();
  if (PEM_write_bio_X509(cert_bio.get(), cert.get()) != 1 ||
      PEM_write_bio_PrivateKey(key_bio.get(), key.get(), nullptr, nullptr, 0, nullptr, nullptr) != 1)
    return crypto_error("cannot write the certificate and key as PEM");
  cert_pem = bio_text(cert_bio.get());
  key_pem = bio_text(key_bio.get());
  // The key's PEM text stays in the BIO's memory until it is freed: cleanse it.
  char* data = nullptr;
  const long n = BIO_get_mem_data(key_bio.get(), &data);
  if (n > 0) OPENSSL_cleanse(data, static_cast<std::size_t>(n));
  return Status::ok();
}

Status refuse_existing(const std::string& path, const std::string& what) {
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0)
    return Status(Code::kExists, what + " " + path + " exists already; refusing to replace it", EEXIST);
  return Status::ok();
}

}  // namespace

std::string certificate_path(const std::string& secret_file) {
  return secret_file + ".crt";
}
std::string key_path(const std::string& secret_file) {
  return secret_file + ".key";
}

Status write_secret_file(const std::string& path) noexcept {
  try {
    const std::string crt = certificate_path(path);
    const std::string key = key_path(path);
    KURA_RETURN_IF_ERROR(refuse_existing(path, "secret file"));
    KURA_RETURN_IF_ERROR(refuse_existing(key, "key file"));
    KURA_RETURN_IF_ERROR(refuse_existing(crt, "certificate file"));
    std::array<std::byte, kSecretSize> secret{};
    KURA_RETURN_IF_ERROR(detail::fill_random(secret));
    std::string text = to_hex(std::span<const unsigned char>(
                           reinterpret_cast<const unsigned char*>(secret.data()), secret.size())) +
                       "\n";
    OPENSSL_cleanse(secret.data(), secret.size());
    std::string cert_pem;
    std::string key_pem;
    Status s = make_certificate(cert_pem, key_pem);
    // The key first, the secret last: a secret file alone says all three
    // were written.
    bool wrote_key = false;
    bool wrote_crt = false;
    if (s) wrote_key = (s = detail::write_new_file(key, key_pem, 0600, "key file")).is_ok();
    if (s) wrote_crt = (s = detail::write_new_file(crt, cert_pem, 0644, "certificate file")).is_ok();
    if (s) s = detail::write_new_file(path, text, 0600, "secret file");
    OPENSSL_cleanse(text.data(), text.size());
    OPENSSL_cleanse(key_pem.data(), key_pem.size());
    if (!s && wrote_key) ::unlink(key.c_str());
    if (!s && wrote_crt) ::unlink(crt.c_str());
    return s;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::string> read_secret_file(const std::string& path) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(std::string text,
                          detail::read_checked_file(path, "secret file", kSecretHex + 1, true));
    std::size_t len = text.size();
    if (len == kSecretHex + 1 && text[kSecretHex] == '\n') len = kSecretHex;
    std::string secret;
    bool ok = len == kSecretHex;
    for (std::size_t i = 0; ok && i < kSecretHex; i += 2) {
      const int hi = hex_digit(text[i]);
      const int lo = hex_digit(text[i + 1]);
      ok = hi >= 0 && lo >= 0;
      if (ok) secret += static_cast<char>(hi * 16 + lo);
    }
    OPENSSL_cleanse(text.data(), text.size());
    if (!ok) {
      OPENSSL_cleanse(secret.data(), secret.size());
      return invalid_argument("secret file " + path + " does not hold a secret (" +
                              std::to_string(kSecretHex) +
                              " hex digits and a newline, as kura secret writes)");
    }
    return secret;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::string> certificate_fingerprint(const std::string& path) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(std::string pem,
                          detail::read_checked_file(path, "certificate file", detail::kPemLimit, false));
    BioPtr bio(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
    if (!bio) return Status::out_of_memory();
    X509Ptr cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (!cert) return invalid_argument("certificate file " + path + " holds no PEM certificate");
    return detail::fingerprint_of(cert.get());
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::string> parse_fingerprint(std::string_view text) noexcept {
  try {
    const std::string_view digits = text.substr(std::min(text.size(), kFingerprintPrefix.size()));
    bool ok = text.substr(0, kFingerprintPrefix.size()) == kFingerprintPrefix && digits.size() == 64;
    std::string out(kFingerprintPrefix);
    for (std::size_t i = 0; ok && i < digits.size(); ++i) {
      const int d = hex_digit(digits[i]);
      ok = d >= 0;
      if (ok) out += kHex[d];
    }
    if (!ok)
      return invalid_argument(
          "\"" + std::string(text.substr(0, 80)) +
          "\" is not a certificate fingerprint (sha256: and 64 hex digits, as kura secret "
          "prints)");
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

namespace detail {

std::string fingerprint_of(X509* cert) {
  std::array<unsigned char, EVP_MAX_MD_SIZE> md{};
  unsigned int len = 0;
  if (X509_digest(cert, EVP_sha256(), md.data(), &len) != 1) return std::string();
  return std::string(kFingerprintPrefix) + to_hex(std::span<const unsigned char>(md.data(), len));
}

}  // namespace detail

}  // namespace kura::ipc
