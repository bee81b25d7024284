// Helpers of the TCP and TLS tests (tcp_test.cpp, tls_test.cpp): secrets
// made by the kura tool, raw peers that do the handshake by hand, and the
// sum of a shared array a worker over TCP computes.
#pragma once

#include <sys/socket.h>

#include <functional>
#include <optional>
#include <span>
#include <string>

#include "auth_internal.hpp"
#include "ipc_util.hpp"
#include "kura/shm/region.hpp"

namespace kura::test {

// Writes a secret (and its certificate and key) with `kura secret` into
// `dir`, checking the fingerprint it prints; returns the secret's path.
std::string make_secret(const SocketDir& dir, const std::string& name);
// The fingerprint of the certificate beside `secret_file`.
std::string fingerprint_of(const std::string& secret_file);
std::string file_text(const std::string& path);

// The socket address of a "tcp://..." endpoint.
struct TcpAddress {
  sockaddr_storage addr{};
  socklen_t len = 0;
  const sockaddr* get() const { return reinterpret_cast<const sockaddr*>(&addr); }
};
TcpAddress tcp_address(const std::string& endpoint);

// True when this machine can listen on the IPv6 loopback address.
bool ipv6_loopback();

// The dispatcher's side of a handshake a raw peer took part in, and the
// bytes the peer sent, so that a test can send them again.
struct RawHandshake {
  ipc::detail::Nonce dispatcher_nonce;
  ipc::detail::Greeting greeting;
  ipc::detail::Answer answer;
  bool tls = false;  // either greeting asked for TLS
};

std::string read_secret(const std::string& path);
std::span<const std::byte> bytes_of(const std::string& s);

// Does the connector's half of the handshake by hand with `secret`,
// greeting with `flags`, and checks the dispatcher's answer.
RawHandshake handshake(RawPeer& p, const std::string& secret, std::uint8_t flags);

// How many lines of `d`'s log contain `text`.
std::size_t log_count(EmbeddedDispatcher& d, const std::string& text);

// The sum a worker finds for the f64 array at `name`.
double sum_of(ipc::Client& c, const std::string& name);

// A shared array 0, 1, ..., n-1 and the sum a worker must find.
struct Numbers {
  explicit Numbers(std::size_t n);
  std::string name() const { return shared->name(); }
  std::optional<shm::Shared> shared;
  double sum = 0;
};

// The kura tool as a dispatcher listening on tcp://HOST:0 and as a worker
// connecting to the address it printed (with --tls and the fingerprint when
// `tls`); a local client's task runs there, and the dispatcher's log says
// whether the connection was TLS.
void remote_worker_sums(const std::string& host, bool tls);

// Options of a dispatcher that also listens on 127.0.0.1 (any free port)
// for workers proving the secret in `secret_file`.
std::function<void(ipc::DispatcherOptions&)> on_loopback(const std::string& secret_file);

}  // namespace kura::test
