// TCP: listening and connecting on libuv's uv_tcp_t. Every connection runs
// the handshake of auth_internal.hpp before its owner sees it, then TLS
// (tls_stream.cpp) when either side asked for it: a side asks when the
// other's address is not loopback, and a connector also when told to; the
// stream is socket_stream.cpp's.
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <new>
#include <set>
#include <string>

#include "fork_guard.hpp"
#include "kura/ipc/secret.hpp"
#include "tls_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr int kBacklog = 128;

template <typename Handle>
void close_and_free(Handle* h) {
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<Handle*>(x); });
}

std::string address_text(const sockaddr_storage& addr) {
  char host[INET6_ADDRSTRLEN] = "?";
  if (addr.ss_family == AF_INET6) {
    const auto* a = reinterpret_cast<const sockaddr_in6*>(&addr);
    uv_ip6_name(a, host, sizeof host);
    return "tcp://[" + std::string(host) + "]:" + std::to_string(ntohs(a->sin6_port));
  }
  const auto* a = reinterpret_cast<const sockaddr_in*>(&addr);
  uv_ip4_name(a, host, sizeof host);
  return "tcp://" + std::string(host) + ":" + std::to_string(ntohs(a->sin_port));
}

Status socket_address(const Endpoint& e, sockaddr_storage& out) {
  out = {};
  const bool v6 = e.host.find(':') != std::string::npos;
  const int rc = v6 ? uv_ip6_addr(e.host.c_str(), e.port, reinterpret_cast<sockaddr_in6*>(&out))
                    : uv_ip4_addr(e.host.c_str(), e.port, reinterpret_cast<sockaddr_in*>(&out));
  if (rc != 0) return invalid_argument("\"" + e.host + "\" is not an IP address");
  return Status::ok();
}

// True for 127.0.0.0/8, ::1 and ::ffff:127.0.0.0/104: addresses that never
// leave this host.
bool is_loopback(const sockaddr_storage& addr) {
  if (addr.ss_family == AF_INET)
    return (ntohl(reinterpret_cast<const sockaddr_in*>(&addr)->sin_addr.s_addr) >> 24) == 127;
  if (addr.ss_family != AF_INET6) return false;
  const in6_addr& a = reinterpret_cast<const sockaddr_in6*>(&addr)->sin6_addr;
  if (IN6_IS_ADDR_LOOPBACK(&a)) return true;
  return IN6_IS_ADDR_V4MAPPED(&a) && a.s6_addr[12] == 127;
}

struct Peer {
  PeerInfo info;
  bool loopback = false;
};

Peer peer_of(const uv_tcp_t* tcp) {
  Peer p;
  p.info.transport = "tcp";
  sockaddr_storage addr{};
  int len = sizeof addr;
  const bool known = uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) == 0;
  p.info.address = known ? address_text(addr) : "tcp://(unknown)";
  p.loopback = known && is_loopback(addr);
  return p;
}

// What the listener and the handshakes it started share: a handshake may
// end after the listener closed.
struct ListenState {
  ~ListenState() { OPENSSL_cleanse(secret.data(), secret.size()); }
  AcceptFn on_accept;
  LogFn log;
  std::string secret;
  std::string address;
  // The certificate and key for TLS; null on a loopback listener without
  // them, which refuses a worker asking for TLS with `tls_missing`.
  std::shared_ptr<const TlsContext> tls;
  Status tls_missing;
  std::set<Stream*> handshaking;
  bool closed = false;
  bool full = false;  // refusing for kMaxHandshakes (logged once per burst)
};

class TcpListener final : public Listener {
 public:
  explicit TcpListener(std::shared_ptr<ListenState> state) : state_(std::move(state)) {}
  ~TcpListener() override { close(); }

  Status open(uv_loop_t* loop, const Endpoint& at) {
    sockaddr_storage addr;
    KURA_RETURN_IF_ERROR(socket_address(at, addr));
    tcp_ = new (std::nothrow) uv_tcp_t;
    if (tcp_ == nullptr) return Status::out_of_memory();
    uv_tcp_init(loop, tcp_);
    tcp_->data = this;
    const std::string where = at.to_string();
    // An IPv6 listener takes IPv6 only: [::] does not answer for 0.0.0.0.
    const unsigned flags = addr.ss_family == AF_INET6 ? UV_TCP_IPV6ONLY : 0;
    if (int rc = uv_tcp_bind(tcp_, reinterpret_cast<const sockaddr*>(&addr), flags); rc != 0) {
      close();
      return uv_status("cannot bind " + where, rc);
    }
    if (int rc = uv_listen(reinterpret_cast<uv_stream_t*>(tcp_), kBacklog, &TcpListener::on_connection);
        rc != 0) {
      close();
      return uv_status("cannot listen on " + where, rc);
    }
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(tcp_), &fd) == 0) {
      // A forked child must not hold the port after this process is gone.
      if (Status guarded = close_in_forked_child(fd); !guarded) {
        close();
        return guarded;
      }
      fd_ = fd;
    }
    sockaddr_storage bound{};
    int len = sizeof bound;
    if (int rc = uv_tcp_getsockname(tcp_, reinterpret_cast<sockaddr*>(&bound), &len); rc != 0) {
      close();
      return uv_status("cannot read the address of " + where, rc);
    }
    state_->address = address_text(bound);
    return Status::ok();
  }

  void close() override {
    if (tcp_ != nullptr) {
      if (fd_ >= 0) forget_in_forked_child(fd_);
      fd_ = -1;
      tcp_->data = nullptr;
      close_and_free(tcp_);
      tcp_ = nullptr;
    }
    state_->closed = true;
    const std::set<Stream*> handshaking = state_->handshaking;
    for (Stream* s : handshaking) s->close(CloseReason::kLocal, Status(Code::kIo, "the listener closed"));
  }

  std::string address() const override { return state_->address; }

 private:
  static void on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<TcpListener*>(server->data);
    if (self == nullptr) return;
    ListenState& st = *self->state_;
    if (status < 0) return st.log("accept on " + st.address + ": " + uv_strerror(status));
    auto* tcp = new (std::nothrow) uv_tcp_t;
    if (tcp == nullptr) return st.log("accept on " + st.address + ": out of memory");
    uv_tcp_init(server->loop, tcp);
    if (int rc = uv_accept(server, reinterpret_cast<uv_stream_t*>(tcp)); rc != 0) {
      close_and_free(tcp);
      return st.log("accept on " + st.address + ": " + uv_strerror(rc));
    }
    Peer peer = peer_of(tcp);
    if (st.handshaking.size() >= kMaxHandshakes) {
      if (!st.full)
        st.log("refused TCP connections from " + peer.info.address + " and others: " +
               std::to_string(kMaxHandshakes) + " connections are in their handshake already");
      st.full = true;
      return close_and_free(tcp);
    }
    st.full = false;
    uv_tcp_nodelay(tcp, 1);
    const std::string from = peer.info.address;
    // Never plaintext off loopback: this side asks for TLS itself.
    const std::uint8_t flags = peer.loopback ? 0 : kWantTls;
    std::unique_ptr<Stream> stream =
        make_socket_stream(reinterpret_cast<uv_stream_t*>(tcp), std::move(peer.info));
    if (!stream) {
      close_and_free(tcp);
      return st.log("accept on " + st.address + ": out of memory");
    }
    Stream* raw = stream.get();
    st.handshaking.insert(raw);
    authenticate(
        std::move(stream), AuthSide::kListener,
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(st.secret.data()), st.secret.size()),
        flags, kHandshakeTimeoutMs, [state = self->state_, raw, from](Result<Authenticated> a) {
          state->handshaking.erase(raw);
          if (state->closed) return;
          if (!a) return state->log("refused a TCP connection from " + from + ": " + a.status().message());
          if (!a->tls) return state->on_accept(std::move(a->stream));
          if (!state->tls)
            return state->log(
                "refused a TCP connection from " + from +
                ": it asked for TLS, and this listener has no certificate: " + state->tls_missing.message());
          start_tls(state, std::move(a->stream), from);
        });
  }

  // The connection proved the secret and TLS follows; it counts as in its
  // handshake until TLS is up.
  static void start_tls(const std::shared_ptr<ListenState>& state, std::unique_ptr<Stream> stream,
                        const std::string& from) {
    auto slot = std::make_shared<Stream*>(nullptr);
    Stream* raw = tls_handshake(
        std::move(stream), state->tls, kHandshakeTimeoutMs,
        [state, from, slot](Result<std::unique_ptr<Stream>> s) {
          if (*slot != nullptr) state->handshaking.erase(*slot);
          if (state->closed) return;
          if (!s)
            return state->log("refused a TCP connection from " + from + ": TLS: " + s.status().message());
          state->log("accepted a TCP connection from " + from + " over TLS 1.3");
          state->on_accept(std::move(s).value());
        });
    if (raw == nullptr) return;
    *slot = raw;
    state->handshaking.insert(raw);
  }

  std::shared_ptr<ListenState> state_;
  uv_tcp_t* tcp_ = nullptr;
  int fd_ = -1;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen_tcp(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept,
                                             LogFn log, std::string secret,
                                             const std::string& secret_file) noexcept {
  try {
    if (secret.size() != kSecretSize) return invalid_argument("a TCP listener needs a secret of 32 bytes");
    sockaddr_storage addr;
    KURA_RETURN_IF_ERROR(socket_address(at, addr));
    auto state = std::make_shared<ListenState>();
    state->on_accept = std::move(on_accept);
    state->log = std::move(log);
    state->secret = std::move(secret);
    auto tls = TlsContext::server(secret_file);
    if (tls) {
      state->tls = std::move(tls).value();
    } else if (is_loopback(addr) && tls.status().code() == Code::kNotFound) {
      state->tls_missing = tls.status();
    } else {
      // Off loopback every connection is TLS: no certificate, no listener.
      return Status(tls.status().code(),
                    "listening on " + at.to_string() +
                        " (TLS for every worker not on loopback): " + tls.status().message());
    }
    auto listener = std::make_unique<TcpListener>(state);
    KURA_RETURN_IF_ERROR(listener->open(loop, at));
    if (state->tls) {
      if (auto fp = certificate_fingerprint(certificate_path(secret_file)); fp)
        state->log("TLS certificate of " + state->address + ": workers pin it with --fingerprint " + *fp);
    }
    return std::unique_ptr<Listener>(std::move(listener));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void connect_tcp(uv_loop_t* loop, const Endpoint& to, ConnectFn done, std::string secret,
                 const TcpCredentials& cred) {
  struct Request {
    ~Request() { OPENSSL_cleanse(secret.data(), secret.size()); }
    uv_connect_t req;
    uv_tcp_t* tcp;
    std::string where;
    std::string secret;
    std::uint8_t flags;
    std::shared_ptr<const TlsContext> tls;  // null without a fingerprint
    ConnectFn done;
  };
  sockaddr_storage addr;
  if (Status s = socket_address(to, addr); !s) return done(s);
  if (secret.size() != kSecretSize)
    return done(invalid_argument("a TCP connection needs a secret of 32 bytes"));
  // Never plaintext off loopback: this side asks for TLS itself.
  const std::uint8_t flags = cred.force_tls || !is_loopback(addr) ? kWantTls : 0;
  std::shared_ptr<const TlsContext> tls;
  if (!cred.fingerprint.empty()) {
    auto client = TlsContext::client(cred.fingerprint);
    if (!client) return done(client.status());
    tls = std::move(client).value();
  } else if (flags != 0) {
    return done(invalid_argument(
        (cred.force_tls ? "TLS was asked for"
                        : to.to_string() + " is not a loopback address, so the connection is TLS") +
        ", and TLS needs the fingerprint of the dispatcher's certificate to pin: pass --fingerprint "
        "sha256:... "
        "(WorkerOptions::fingerprint), as kura secret printed it"));
  }
  auto* r = new Request{{},    new uv_tcp_t,   to.to_string(), std::move(secret),
                        flags, std::move(tls), std::move(done)};
  uv_tcp_init(loop, r->tcp);
  r->req.data = r;
  auto on_connected = [](uv_connect_t* req, int status) {
    std::unique_ptr<Request> r(static_cast<Request*>(req->data));
    if (status != 0) {
      close_and_free(r->tcp);
      return r->done(uv_status("cannot connect to " + r->where, status));
    }
    uv_tcp_nodelay(r->tcp, 1);
    std::unique_ptr<Stream> stream =
        make_socket_stream(reinterpret_cast<uv_stream_t*>(r->tcp), peer_of(r->tcp).info);
    if (!stream) {
      close_and_free(r->tcp);
      return r->done(Status::out_of_memory());
    }
    authenticate(
        std::move(stream), AuthSide::kConnector,
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(r->secret.data()), r->secret.size()),
        r->flags, kHandshakeTimeoutMs,
        [done = std::move(r->done), where = r->where, tls = r->tls](Result<Authenticated> a) {
          if (!a)
            return done(Status(a.status().code(),
                               "the handshake with " + where + " failed: " + a.status().message()));
          if (!a->tls) return done(std::move(a->stream));
          if (!tls)
            return done(invalid_argument(
                where +
                " asked for TLS (it sees this side's address as not loopback), and TLS needs the "
                "fingerprint of the dispatcher's certificate to pin: pass --fingerprint sha256:... "
                "(WorkerOptions::fingerprint), as kura secret printed it"));
          tls_handshake(std::move(a->stream), tls, kHandshakeTimeoutMs,
                        [done, where](Result<std::unique_ptr<Stream>> s) {
                          if (s) return done(std::move(s));
                          done(Status(s.status().code(), "the TLS handshake with " + where +
                                                             " failed: " + s.status().message()));
                        });
        });
  };
  if (int rc = uv_tcp_connect(&r->req, r->tcp, reinterpret_cast<const sockaddr*>(&addr), on_connected);
      rc != 0) {
    close_and_free(r->tcp);
    ConnectFn failed = std::move(r->done);
    const std::string where = r->where;
    delete r;
    failed(uv_status("cannot connect to " + where, rc));
  }
}

}  // namespace kura::ipc::detail
