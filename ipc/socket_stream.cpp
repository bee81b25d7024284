// A Stream over a connected libuv stream handle (a Unix socket or a TCP
// connection), and the handshake that proves the shared secret on it before
// the owner reads a frame (auth_internal.hpp).
#include <sys/socket.h>
#include <sys/uio.h>

#include <cerrno>
#include <climits>
#include <new>
#include <string>

#include "auth_internal.hpp"
#include "fork_guard.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;

void free_stream_handle(uv_handle_t* h) {
  if (h->type == UV_TCP) {
    delete reinterpret_cast<uv_tcp_t*>(h);
  } else {
    delete reinterpret_cast<uv_pipe_t*>(h);
  }
}

void close_stream_handle(uv_stream_t* s) {
  uv_close(reinterpret_cast<uv_handle_t*>(s), &free_stream_handle);
}

class SocketStream final : public Stream {
 public:
  // Takes `handle` (see make_socket_stream). Its descriptor is closed in
  // children forked without exec (fork_guard.hpp): a child must not keep a
  // connection of its parent's alive.
  SocketStream(uv_stream_t* handle, PeerInfo peer)
      : handle_(handle), loop_(handle->loop), peer_(std::move(peer)) {
    handle_->data = this;
    uv_os_fd_t fd = -1;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(handle_), &fd) == 0) fd_ = fd;
    if (fd_ >= 0 && !close_in_forked_child(fd_).is_ok()) fd_guarded_ = false;
  }

  ~SocketStream() override {
    if (handle_ == nullptr) return;
    // Closed or not, the handle is freed by its close callback, which must not
    // reach this object any more.
    handle_->data = nullptr;
    if (!closing_) {
      forget_fd();
      close_stream_handle(handle_);
    }
  }

  Status start(Callbacks cb) override {
    cb_ = std::move(cb);
    if (closing_) return Status(Code::kIo, "the stream is closed");
    if (int rc = read_start(); rc != 0) return uv_status("cannot read from the connection", rc);
    return Status::ok();
  }

  void write(std::span<const uv_buf_t> bufs, std::shared_ptr<void> keep) override {
    if (closing_ || bufs.empty()) return;
    std::vector<uv_buf_t> rest(bufs.begin(), bufs.end());
    std::uint64_t total = 0;
    for (const uv_buf_t& b : rest) total += b.len;
    std::size_t first = 0;
    // Nothing queued: write at once. What the socket takes now needs no
    // request, no callback and no change to the poll set.
    if (queued_.load(std::memory_order_acquire) == 0) {
      const int n = uv_try_write(stream(), rest.data(), static_cast<unsigned>(rest.size()));
      if (n < 0 && n != UV_EAGAIN)
        return close(CloseReason::kIo, uv_status("cannot write to the connection", n));
      std::uint64_t written = n > 0 ? static_cast<std::uint64_t>(n) : 0;
      if (written == total) return;
      total -= written;
      while (written >= rest[first].len) written -= rest[first++].len;
      rest[first].base += written;
      rest[first].len -= written;
    }
    auto* w = new (std::nothrow) WriteRequest{{}, std::move(keep), total};
    if (w == nullptr) return close(CloseReason::kOutOfMemory, Status::out_of_memory());
    w->req.data = w;
    queued_.fetch_add(total, std::memory_order_acq_rel);
    if (int rc = uv_write(&w->req, stream(), rest.data() + first, static_cast<unsigned>(rest.size() - first),
                          &SocketStream::on_written);
        rc != 0) {
      queued_.fetch_sub(total, std::memory_order_acq_rel);
      delete w;
      close(CloseReason::kIo, uv_status("cannot write to the connection", rc));
    }
  }

  std::int64_t try_write_now(std::span<const uv_buf_t> bufs) override {
    std::lock_guard<std::mutex> lock(fd_mu_);
    if (fd_ < 0) return UV_EBADF;
    std::uint64_t written = 0;
    std::size_t first = 0;
    std::size_t skip = 0;  // bytes of bufs[first] already written
    while (first < bufs.size()) {
      iovec iov[IOV_MAX];
      int n = 0;
      for (std::size_t i = first; i < bufs.size() && n < IOV_MAX; ++i, ++n) {
        iov[n].iov_base = bufs[i].base + (i == first ? skip : 0);
        iov[n].iov_len = bufs[i].len - (i == first ? skip : 0);
      }
      msghdr msg{};
      msg.msg_iov = iov;
      msg.msg_iovlen = static_cast<std::size_t>(n);
      const ssize_t w = ::sendmsg(fd_, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
      if (w < 0) {
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) break;
        return -errno;
      }
      written += static_cast<std::uint64_t>(w);
      std::size_t left = static_cast<std::size_t>(w);
      while (first < bufs.size() && left >= bufs[first].len - skip) {
        left -= bufs[first].len - skip;
        skip = 0;
        ++first;
      }
      skip += left;
    }
    return static_cast<std::int64_t>(written);
  }

  std::uint64_t queued_bytes() const override { return queued_.load(std::memory_order_acquire); }

  void pause() override {
    if (!closing_) uv_read_stop(stream());
  }
  void resume() override {
    if (closing_) return;
    if (int rc = read_start(); rc != 0)
      close(CloseReason::kIo, uv_status("cannot read from the connection", rc));
  }

  void close(CloseReason why, const Status& detail) override {
    if (closing_) return;
    closing_ = true;
    reason_ = why;
    detail_ = detail;
    forget_fd();
    uv_close(reinterpret_cast<uv_handle_t*>(handle_), &SocketStream::on_closed);
  }

  bool closed() const override { return closing_; }
  const PeerInfo& peer() const override { return peer_; }
  // Proves the secret both ways before anyone reads a frame (authenticate()).
  // This stream owns itself until `done` gets it back, or the error after
  // which it is gone.
  void handshake(AuthSide side, std::span<const std::byte> secret, std::uint8_t flags,
                 std::uint64_t timeout_ms, AuthDoneFn done) {
    auto nonce = make_nonce();
    if (!nonce) {
      done(nonce.status());
      delete this;
      return;
    }
    auth_ = std::make_unique<Auth>(side, secret, *nonce, flags);
    auth_->done = std::move(done);
    auth_->timeout_ms = timeout_ms;
    auto greeting = std::make_shared<Greeting>(auth_->hs.greeting());
    uv_timer_init(loop_, &auth_->timer);
    auth_->timer.data = this;
    uv_timer_start(
        &auth_->timer,
        [](uv_timer_t* t) {
          auto* self = static_cast<SocketStream*>(t->data);
          self->close(CloseReason::kTimeout,
                      Status(Code::kIo, "the peer did not complete the handshake within " +
                                            std::to_string(self->auth_->timeout_ms) + " ms"));
        },
        timeout_ms, 0);
    const uv_buf_t buf = uv_buf_init(reinterpret_cast<char*>(greeting->data()), kGreetingSize);
    write(std::span<const uv_buf_t>(&buf, 1), greeting);
    if (closing_) return;
    if (int rc = uv_read_start(stream(), &SocketStream::handshake_alloc, &SocketStream::handshake_read);
        rc != 0)
      close(CloseReason::kIo, uv_status("cannot read from the connection", rc));
  }

  int fd() const override {
    std::lock_guard<std::mutex> lock(fd_mu_);
    return fd_;
  }
  uv_loop_t* loop() const override { return loop_; }

 private:
  struct WriteRequest {
    uv_write_t req;
    std::shared_ptr<void> keep;
    std::uint64_t bytes;
  };

  // A handshake under way (the stream owns itself meanwhile).
  struct Auth {
    Auth(AuthSide side, std::span<const std::byte> secret, const Nonce& mine, std::uint8_t flags)
        : hs(side, secret, mine, flags) {}
    Handshake hs;
    AuthDoneFn done;
    std::uint64_t timeout_ms = 0;
    uv_timer_t timer;
    std::array<char, kHandshakeSize> buffer;
  };

  uv_stream_t* stream() const { return handle_; }

  // Reads no byte past the handshake: what follows it is the owner's.
  static void handshake_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
    auto* self = static_cast<SocketStream*>(h->data);
    *buf = uv_buf_init(self->auth_->buffer.data(), static_cast<unsigned>(self->auth_->hs.wanted()));
  }

  static void handshake_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<SocketStream*>(s->data);
    if (self == nullptr || self->closing_ || !self->auth_) return;
    if (n == UV_EOF)
      return self->close(CloseReason::kPeerClosed,
                         Status(Code::kIo, "the peer closed the connection during the handshake"));
    if (n < 0)
      return self->close(CloseReason::kIo, uv_status("reading the handshake failed", static_cast<int>(n)));
    if (n == 0) return;
    auto reply = std::make_shared<Bytes>();
    auto used = self->auth_->hs.feed(std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf->base),
                                                                static_cast<std::size_t>(n)),
                                     *reply);
    if (!used)
      return self->close(
          used.status().code() == Code::kOutOfMemory ? CloseReason::kOutOfMemory : CloseReason::kProtocol,
          used.status());
    if (!reply->empty()) {
      const uv_buf_t out =
          uv_buf_init(reinterpret_cast<char*>(reply->data()), static_cast<unsigned>(reply->size()));
      self->write(std::span<const uv_buf_t>(&out, 1), reply);
      if (self->closing_) return;
    }
    if (!self->auth_->hs.done()) return;
    uv_read_stop(s);
    self->end_handshake();
  }

  // The handshake is over: its timer stops, and the rest of it is freed once
  // libuv is done with that handle. Returns who hears the outcome.
  AuthDoneFn finish_handshake() {
    Auth* auth = auth_.release();
    AuthDoneFn done = std::move(auth->done);
    uv_timer_stop(&auth->timer);
    auth->timer.data = auth;
    uv_close(reinterpret_cast<uv_handle_t*>(&auth->timer),
             [](uv_handle_t* h) { delete static_cast<Auth*>(h->data); });
    return done;
  }

  void end_handshake() {
    const bool tls = auth_->hs.tls();
    finish_handshake()(Authenticated{std::unique_ptr<Stream>(this), tls});
  }

  // The stream closed before the handshake ended: nobody owns it.
  void handshake_closed() {
    AuthDoneFn done = finish_handshake();
    const Status why = detail_;
    delete this;
    done(why);
  }

  // Off-loop writers stop using the descriptor before uv_close closes it.
  void forget_fd() {
    std::lock_guard<std::mutex> lock(fd_mu_);
    if (fd_ >= 0 && fd_guarded_) forget_in_forked_child(fd_);
    fd_ = -1;
  }

  int read_start() {
    return uv_read_start(
        stream(),
        [](uv_handle_t* h, std::size_t, uv_buf_t* buf) {
          auto* self = static_cast<SocketStream*>(h->data);
          if (!self->read_buffer_) self->read_buffer_.reset(new (std::nothrow) char[kReadBuffer]);
          *buf = self->read_buffer_ ? uv_buf_init(self->read_buffer_.get(), kReadBuffer)
                                    : uv_buf_init(nullptr, 0);
        },
        &SocketStream::on_read);
  }

  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
    auto* self = static_cast<SocketStream*>(s->data);
    if (self == nullptr || self->closing_) return;
    if (n == UV_ENOBUFS) return self->close(CloseReason::kOutOfMemory, Status::out_of_memory());
    if (n == UV_EOF) {
      if (!self->cb_.on_end)
        return self->close(CloseReason::kPeerClosed, Status(Code::kIo, "the peer closed the connection"));
      uv_read_stop(s);
      return self->cb_.on_end();
    }
    if (n < 0)
      return self->close(CloseReason::kIo,
                         uv_status("reading from the connection failed", static_cast<int>(n)));
    if (n == 0) return;
    self->cb_.on_read(std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf->base),
                                                 static_cast<std::size_t>(n)));
  }

  static void on_written(uv_write_t* req, int status) {
    auto* w = static_cast<WriteRequest*>(req->data);
    auto* self = static_cast<SocketStream*>(req->handle->data);
    const std::uint64_t bytes = w->bytes;
    delete w;
    if (self == nullptr) return;
    const std::uint64_t left = self->queued_.fetch_sub(bytes, std::memory_order_acq_rel) - bytes;
    if (status != 0 && status != UV_ECANCELED && !self->closing_)
      return self->close(CloseReason::kIo, uv_status("writing to the connection failed", status));
    if (left == 0 && !self->closing_ && self->cb_.on_drained) self->cb_.on_drained();
  }

  static void on_closed(uv_handle_t* h) {
    auto* self = static_cast<SocketStream*>(h->data);
    free_stream_handle(h);
    if (self == nullptr) return;
    self->handle_ = nullptr;
    if (self->auth_) return self->handshake_closed();
    // The owner may destroy this stream in on_close: nothing of it is used
    // after (the callback is moved out first).
    auto on_close = std::move(self->cb_.on_close);
    const Status detail = self->detail_;
    const CloseReason why = self->reason_;
    if (on_close) on_close(why, detail);
  }

  uv_stream_t* handle_;  // null once closed (freed by its close callback)
  uv_loop_t* loop_;
  PeerInfo peer_;
  Callbacks cb_;
  bool closing_ = false;
  CloseReason reason_ = CloseReason::kLocal;
  Status detail_;
  std::unique_ptr<char[]> read_buffer_;
  std::atomic<std::uint64_t> queued_{0};
  std::unique_ptr<Auth> auth_;  // while the handshake runs
  mutable std::mutex fd_mu_;
  int fd_ = -1;             // under fd_mu_; -1 from close() on
  bool fd_guarded_ = true;  // registered with the fork guard
};

}  // namespace

Status uv_status(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == UV_ENOENT || err == UV_ECONNREFUSED) code = Code::kNotFound;
  if (err == UV_EACCES || err == UV_EPERM) code = Code::kPermission;
  if (err == UV_EADDRINUSE) code = Code::kExists;
  if (err == UV_ENOMEM) code = Code::kOutOfMemory;
  return Status(code, what + ": " + uv_strerror(err));
}

std::unique_ptr<Stream> make_socket_stream(uv_stream_t* handle, PeerInfo peer) {
  return std::unique_ptr<Stream>(new (std::nothrow) SocketStream(handle, std::move(peer)));
}

void authenticate(std::unique_ptr<Stream> stream, AuthSide side, std::span<const std::byte> secret,
                  std::uint8_t flags, std::uint64_t timeout_ms, AuthDoneFn done) {
  static_cast<SocketStream*>(stream.release())->handshake(side, secret, flags, timeout_ms, std::move(done));
}

}  // namespace kura::ipc::detail
