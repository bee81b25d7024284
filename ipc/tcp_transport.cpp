// TCP: listening and connecting on libuv's uv_tcp_t. Every connection runs
// the handshake of auth_internal.hpp before its owner sees it; the stream
// is socket_stream.cpp's.
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <sys/socket.h>

#include <new>
#include <set>
#include <string>

#include "fork_guard.hpp"
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

PeerInfo peer_of(const uv_tcp_t* tcp) {
  PeerInfo p;
  p.transport = "tcp";
  sockaddr_storage addr{};
  int len = sizeof addr;
  p.address = uv_tcp_getpeername(tcp, reinterpret_cast<sockaddr*>(&addr), &len) == 0 ? address_text(addr)
                                                                                     : "tcp://(unknown)";
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
    PeerInfo peer = peer_of(tcp);
    if (st.handshaking.size() >= kMaxHandshakes) {
      if (!st.full)
        st.log("refused TCP connections from " + peer.address + " and others: " +
               std::to_string(kMaxHandshakes) + " connections are in their handshake already");
      st.full = true;
      return close_and_free(tcp);
    }
    st.full = false;
    uv_tcp_nodelay(tcp, 1);
    const std::string from = peer.address;
    std::unique_ptr<Stream> stream = make_socket_stream(reinterpret_cast<uv_stream_t*>(tcp), std::move(peer));
    if (!stream) {
      close_and_free(tcp);
      return st.log("accept on " + st.address + ": out of memory");
    }
    Stream* raw = stream.get();
    st.handshaking.insert(raw);
    authenticate(
        std::move(stream), AuthSide::kListener,
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(st.secret.data()), st.secret.size()),
        kHandshakeTimeoutMs, [state = self->state_, raw, from](Result<std::unique_ptr<Stream>> s) {
          state->handshaking.erase(raw);
          if (state->closed) return;
          if (!s) return state->log("refused a TCP connection from " + from + ": " + s.status().message());
          state->on_accept(std::move(s).value());
        });
  }

  std::shared_ptr<ListenState> state_;
  uv_tcp_t* tcp_ = nullptr;
  int fd_ = -1;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen_tcp(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept,
                                             LogFn log, std::string secret) noexcept {
  try {
    if (secret.size() != kSecretSize) return invalid_argument("a TCP listener needs a secret of 32 bytes");
    auto state = std::make_shared<ListenState>();
    state->on_accept = std::move(on_accept);
    state->log = std::move(log);
    state->secret = std::move(secret);
    auto listener = std::make_unique<TcpListener>(state);
    KURA_RETURN_IF_ERROR(listener->open(loop, at));
    return std::unique_ptr<Listener>(std::move(listener));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void connect_tcp(uv_loop_t* loop, const Endpoint& to, ConnectFn done, std::string secret) {
  struct Request {
    ~Request() { OPENSSL_cleanse(secret.data(), secret.size()); }
    uv_connect_t req;
    uv_tcp_t* tcp;
    std::string where;
    std::string secret;
    ConnectFn done;
  };
  sockaddr_storage addr;
  if (Status s = socket_address(to, addr); !s) return done(s);
  if (secret.size() != kSecretSize)
    return done(invalid_argument("a TCP connection needs a secret of 32 bytes"));
  auto* r = new Request{{}, new uv_tcp_t, to.to_string(), std::move(secret), std::move(done)};
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
        make_socket_stream(reinterpret_cast<uv_stream_t*>(r->tcp), peer_of(r->tcp));
    if (!stream) {
      close_and_free(r->tcp);
      return r->done(Status::out_of_memory());
    }
    authenticate(
        std::move(stream), AuthSide::kConnector,
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(r->secret.data()), r->secret.size()),
        kHandshakeTimeoutMs,
        [done = std::move(r->done), where = r->where](Result<std::unique_ptr<Stream>> s) {
          if (s) return done(std::move(s));
          done(Status(s.status().code(), "the handshake with " + where + " failed: " + s.status().message()));
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
