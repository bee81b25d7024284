// The floors the remote benchmarks (remote_bench.cpp) are measured against:
// a forked child at the other end of a loopback TCP connection, the bytes
// either plain or TLS 1.3 through OpenSSL directly, with blocking calls and
// nothing of kura in the way.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <functional>
#include <string>

struct ssl_st;  // OpenSSL's SSL

namespace kura::bench {

// One end of a RawPeer's connection. Blocking; not thread-safe.
class RawStream {
 public:
  RawStream(int fd, ssl_st* ssl) : fd_(fd), ssl_(ssl) {}
  // Writes all `n` bytes at `p` (encrypted first when TLS). Dies (die()) on
  // an error.
  void write_all(const void* p, std::size_t n);
  // Reads exactly `n` bytes into `p`. False when the peer closed the
  // connection first; dies on an error.
  [[nodiscard]] bool read_all(void* p, std::size_t n);

 private:
  int fd_;
  ssl_st* ssl_;  // null: plain TCP
};

// A child process, forked here, that runs `child` on its end of a loopback
// TCP connection to this process (TCP_NODELAY on both ends) and exits when
// it returns. With a non-empty `secret_file` (one that write_secret_file of
// kura/ipc/secret.hpp wrote), the connection is TLS 1.3 configured as kura
// configures it (TLS 1.3 only, no tickets, no compression, OpenSSL's default
// ciphers): this process is the server, with the certificate and key beside
// the secret, as a dispatcher is; the child is the client and checks no
// certificate (the handshake is not what is measured). Dies (die()) on any
// error. Fork only from a process with no other thread (a thread's locks,
// OpenSSL's among them, would be copied held).
class RawPeer {
 public:
  RawPeer(const std::string& secret_file, const std::function<void(RawStream&)>& child);
  RawPeer(const RawPeer&) = delete;
  RawPeer& operator=(const RawPeer&) = delete;
  // Closes the connection and kills and reaps the child.
  ~RawPeer();

  RawStream& stream() { return stream_; }

 private:
  int fd_ = -1;
  pid_t pid_ = -1;
  ssl_st* ssl_ = nullptr;
  RawStream stream_{-1, nullptr};
};

}  // namespace kura::bench
