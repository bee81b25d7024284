#include "raw_peers.hpp"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_util.hpp"
#include "kura/ipc/secret.hpp"

namespace kura::bench {
namespace {

std::string openssl_error() {
  const unsigned long e = ERR_get_error();
  return e == 0 ? "unknown error" : ERR_error_string(e, nullptr);
}

// A context set up as kura's TLS sessions are (ipc/tls_session.cpp): TLS 1.3
// only, no tickets, no compression, no session cache, default ciphers.
SSL_CTX* new_context(bool server) {
  SSL_CTX* ctx = SSL_CTX_new(server ? TLS_server_method() : TLS_client_method());
  if (ctx == nullptr || SSL_CTX_set_min_proto_version(ctx, TLS1_3_VERSION) != 1 ||
      SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION) != 1 || SSL_CTX_set_num_tickets(ctx, 0) != 1)
    die("TLS context: " + openssl_error());
  SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_NO_COMPRESSION);
  SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
  return ctx;
}

// The server's end: the certificate and key that kura secret writes beside
// `secret_file`.
SSL* accept_tls(int fd, const std::string& secret_file) {
  SSL_CTX* ctx = new_context(true);
  const std::string crt = ipc::certificate_path(secret_file), key = ipc::key_path(secret_file);
  if (SSL_CTX_use_certificate_file(ctx, crt.c_str(), SSL_FILETYPE_PEM) != 1 ||
      SSL_CTX_use_PrivateKey_file(ctx, key.c_str(), SSL_FILETYPE_PEM) != 1)
    die("TLS certificate " + crt + ": " + openssl_error());
  SSL* ssl = SSL_new(ctx);  // holds its own reference to ctx
  SSL_CTX_free(ctx);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 || SSL_accept(ssl) != 1)
    die("TLS accept: " + openssl_error());
  return ssl;
}

SSL* connect_tls(int fd) {
  SSL_CTX* ctx = new_context(false);
  SSL_CTX_set_verify(ctx, SSL_VERIFY_NONE, nullptr);
  SSL* ssl = SSL_new(ctx);
  SSL_CTX_free(ctx);
  if (ssl == nullptr || SSL_set_fd(ssl, fd) != 1 || SSL_connect(ssl) != 1)
    die("TLS connect: " + openssl_error());
  return ssl;
}

void no_delay(int fd) {
  const int one = 1;
  if (::setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) != 0) die("TCP_NODELAY");
}

}  // namespace

void RawStream::write_all(const void* p, std::size_t n) {
  const char* at = static_cast<const char*>(p);
  while (n > 0) {
    if (ssl_ != nullptr) {
      std::size_t done = 0;
      if (SSL_write_ex(ssl_, at, n, &done) != 1) die("TLS write: " + openssl_error());
      at += done;
      n -= done;
      continue;
    }
    const ssize_t w = ::write(fd_, at, n);
    if (w <= 0) die("write");
    at += w;
    n -= static_cast<std::size_t>(w);
  }
}

bool RawStream::read_all(void* p, std::size_t n) {
  char* at = static_cast<char*>(p);
  while (n > 0) {
    std::size_t got = 0;
    if (ssl_ != nullptr) {
      // One record (16 KiB) at most per call: the stream as TLS gives it.
      if (SSL_read_ex(ssl_, at, n, &got) != 1) {
        const int err = SSL_get_error(ssl_, 0);
        if (err == SSL_ERROR_ZERO_RETURN || err == SSL_ERROR_SYSCALL ||
            ERR_GET_REASON(ERR_peek_error()) == SSL_R_UNEXPECTED_EOF_WHILE_READING)
          return false;
        die("TLS read: " + openssl_error());
      }
    } else {
      const ssize_t r = ::read(fd_, at, n);
      if (r == 0) return false;
      if (r < 0) die("read");
      got = static_cast<std::size_t>(r);
    }
    at += got;
    n -= got;
  }
  return true;
}

RawPeer::RawPeer(const std::string& secret_file, const std::function<void(RawStream&)>& child) {
  const int l = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  sockaddr_in a{};
  a.sin_family = AF_INET;
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof a;
  if (l < 0 || ::bind(l, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(l, 1) != 0 ||
      ::getsockname(l, reinterpret_cast<sockaddr*>(&a), &len) != 0)
    die("listen");
  pid_ = ::fork();
  if (pid_ < 0) die("fork");
  if (pid_ == 0) {
    ::close(l);
    const int c = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (c < 0 || ::connect(c, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) die("connect");
    no_delay(c);
    RawStream s(c, secret_file.empty() ? nullptr : connect_tls(c));
    child(s);
    _exit(0);
  }
  fd_ = ::accept4(l, nullptr, nullptr, SOCK_CLOEXEC);
  ::close(l);
  if (fd_ < 0) die("accept");
  no_delay(fd_);
  if (!secret_file.empty()) ssl_ = accept_tls(fd_, secret_file);
  stream_ = RawStream(fd_, ssl_);
}

RawPeer::~RawPeer() {
  // The child first, so that it never sees the connection end.
  ::kill(pid_, SIGKILL);
  ::waitpid(pid_, nullptr, 0);
  SSL_free(ssl_);
  ::close(fd_);
}

}  // namespace kura::bench
