// A Stream that carries TLS 1.3 over another (a TCP socket stream that
// proved the secret): the owner reads and writes plaintext; the bytes on the
// wire are a TlsSession's (tls_internal.hpp). Bounded: the session holds at
// most one read of the socket (64 KiB) that its owner has not taken, since
// the socket stops reading while the owner has paused.
#include <cstring>
#include <new>
#include <string>

#include "tls_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

// Plaintext delivered to the owner at a time.
constexpr std::size_t kPlainBuffer = 64 * 1024;
// Plaintext encrypted before its records are handed to the socket.
constexpr std::size_t kWriteChunk = 256 * 1024;
// The most plaintext of one TLS record.
constexpr std::size_t kRecord = 16 * 1024;

template <typename Handle>
void close_and_free(Handle* h) {
  h->data = nullptr;
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<Handle*>(x); });
}

class TlsStream final : public Stream {
 public:
  TlsStream(std::unique_ptr<Stream> inner, std::unique_ptr<TlsSession> session)
      : inner_(std::move(inner)), session_(std::move(session)) {}

  ~TlsStream() override {
    // The inner stream closes itself (without callbacks) if still open.
    close_handles();
  }

  // Starts the handshake; this stream owns itself until handshake_done_
  // gets it back, or the error after which it is gone. False if that
  // happened already.
  bool begin(std::uint64_t timeout_ms, ConnectFn done) {
    handshake_done_ = std::move(done);
    timer_ = new (std::nothrow) uv_timer_t;
    idle_ = new (std::nothrow) uv_idle_t;
    plain_.reset(new (std::nothrow) std::byte[kPlainBuffer]);
    stage_.reset(new (std::nothrow) std::byte[kRecord]);
    if (timer_ == nullptr || idle_ == nullptr || !plain_ || !stage_) {
      delete timer_;
      delete idle_;
      timer_ = nullptr;
      idle_ = nullptr;
      fail_early(Status::out_of_memory());
      return false;
    }
    uv_timer_init(inner_->loop(), timer_);
    uv_idle_init(inner_->loop(), idle_);
    timer_->data = this;
    idle_->data = this;
    timeout_ms_ = timeout_ms;
    uv_timer_start(
        timer_,
        [](uv_timer_t* t) {
          auto* self = static_cast<TlsStream*>(t->data);
          if (self == nullptr) return;
          self->close(CloseReason::kTimeout,
                      Status(Code::kIo, "the peer did not complete the TLS handshake within " +
                                            std::to_string(self->timeout_ms_) + " ms"));
        },
        timeout_ms, 0);
    Status started = inner_->start(Callbacks{
        [this](std::span<const std::byte> bytes) { on_cipher(bytes); },
        [this](CloseReason why, const Status& detail) { on_inner_closed(why, detail); },
        [this] { on_inner_end(); },
        [this] {
          if (cb_.on_drained && !closing_ && !handshaking()) cb_.on_drained();
        },
    });
    if (!started) {
      close(CloseReason::kIo, started);
      return true;  // done runs from the loop, once the stream closed
    }
    advance();
    return true;
  }

  Status start(Callbacks cb) override {
    cb_ = std::move(cb);
    if (closing_) return Status(Code::kIo, "the stream is closed");
    started_ = true;
    inner_->resume();
    kick();
    return Status::ok();
  }

  void write(std::span<const uv_buf_t> bufs, std::shared_ptr<void> keep) override {
    (void)keep;  // encrypted now: the plaintext is not needed after this call
    if (closing_) return;
    // Small pieces (frame headers, small frames) are gathered into one
    // record rather than a record each; large ones are encrypted in place.
    for (const uv_buf_t& b : bufs) {
      std::span<const std::byte> rest(reinterpret_cast<const std::byte*>(b.base), b.len);
      if (rest.size() < kRecord && staged_ + rest.size() <= kRecord) {
        std::memcpy(stage_.get() + staged_, rest.data(), rest.size());
        staged_ += rest.size();
        continue;
      }
      if (!encrypt_staged()) return;
      while (!rest.empty()) {
        const std::size_t n = std::min(rest.size(), kWriteChunk);
        if (Status s = session_->write(rest.first(n)); !s) return close(CloseReason::kIo, s);
        rest = rest.subspan(n);
        if (session_->output_size() >= kWriteChunk && !flush_output()) return;
      }
    }
    if (encrypt_staged()) flush_output();
  }

  std::uint64_t queued_bytes() const override { return inner_->queued_bytes(); }

  void pause() override {
    paused_ = true;
    if (!closing_) inner_->pause();
  }

  void resume() override {
    paused_ = false;
    if (closing_) return;
    inner_->resume();
    kick();
  }

  void close(CloseReason why, const Status& detail) override {
    if (closing_) return;
    closing_ = true;
    close_handles();
    inner_->close(why, detail);
  }

  bool closed() const override { return closing_; }
  const PeerInfo& peer() const override { return inner_->peer(); }
  int fd() const override { return inner_->fd(); }
  uv_loop_t* loop() const override { return inner_->loop(); }

 private:
  bool handshaking() const { return static_cast<bool>(handshake_done_); }

  // Out of memory before the inner stream was started: close it, and say so.
  void fail_early(const Status& s) {
    ConnectFn done = std::move(handshake_done_);
    delete this;
    done(s);
  }

  void close_handles() {
    if (timer_ != nullptr) close_and_free(timer_);
    if (idle_ != nullptr) close_and_free(idle_);
    timer_ = nullptr;
    idle_ = nullptr;
  }

  // Encrypts what write() gathered. False if the stream closed.
  bool encrypt_staged() {
    if (staged_ == 0) return true;
    const Status s = session_->write(std::span<const std::byte>(stage_.get(), staged_));
    staged_ = 0;
    if (!s) close(CloseReason::kIo, s);
    return s.is_ok();
  }

  // Hands what the session has to send to the inner stream. False if the
  // stream closed.
  bool flush_output() {
    if (session_->output_size() == 0) return !closing_;
    std::shared_ptr<Bytes> out;
    try {
      out = std::make_shared<Bytes>();
    } catch (const std::bad_alloc&) {
      close(CloseReason::kOutOfMemory, Status::out_of_memory());
      return false;
    }
    if (Status s = session_->take_output(*out); !s) {
      close(CloseReason::kOutOfMemory, s);
      return false;
    }
    const uv_buf_t buf =
        uv_buf_init(reinterpret_cast<char*>(out->data()), static_cast<unsigned>(out->size()));
    inner_->write(std::span<const uv_buf_t>(&buf, 1), out);
    return !closing_;
  }

  void on_cipher(std::span<const std::byte> bytes) {
    if (closing_) return;
    if (Status s = session_->feed(bytes); !s) return close(CloseReason::kOutOfMemory, s);
    advance();
  }

  // Moves the handshake on, or hands plaintext to the owner while it reads.
  void advance() {
    if (closing_) return;
    if (handshaking()) {
      auto done = session_->handshake();
      if (!flush_output()) return;
      if (!done) {
        const Code c = done.status().code();
        return close(c == Code::kOutOfMemory ? CloseReason::kOutOfMemory : CloseReason::kProtocol,
                     done.status());
      }
      if (!*done) return;
      // Until the owner starts it, nothing is read: bytes that came with the
      // end of the handshake wait in the session.
      uv_timer_stop(timer_);
      inner_->pause();
      ConnectFn finished = std::move(handshake_done_);
      handshake_done_ = nullptr;
      return finished(std::unique_ptr<Stream>(this));
    }
    while (started_ && !paused_ && !closing_) {
      auto n = session_->read(std::span<std::byte>(plain_.get(), kPlainBuffer));
      if (!n) {
        const Code c = n.status().code();
        return close(c == Code::kOutOfMemory ? CloseReason::kOutOfMemory : CloseReason::kProtocol,
                     n.status());
      }
      if (*n == 0) break;
      cb_.on_read(std::span<const std::byte>(plain_.get(), *n));
    }
    if (!flush_output()) return;
    if (session_->ended() && !closing_) on_inner_end();
  }

  // Plaintext may wait in the session: deliver it from the loop, not from
  // inside start() or resume().
  void kick() {
    if (idle_ == nullptr || closing_) return;
    uv_idle_start(idle_, [](uv_idle_t* h) {
      uv_idle_stop(h);
      if (auto* self = static_cast<TlsStream*>(h->data); self != nullptr) self->advance();
    });
  }

  void on_inner_end() {
    if (closing_) return;
    if (handshaking() || !started_)
      return close(CloseReason::kPeerClosed,
                   Status(Code::kIo, "the peer closed the connection during the TLS handshake"));
    if (ended_) return;
    ended_ = true;
    inner_->pause();
    if (!cb_.on_end)
      return close(CloseReason::kPeerClosed, Status(Code::kIo, "the peer closed the connection"));
    cb_.on_end();
  }

  void on_inner_closed(CloseReason why, const Status& detail) {
    closing_ = true;
    close_handles();
    if (handshaking()) {
      ConnectFn done = std::move(handshake_done_);
      handshake_done_ = nullptr;
      delete this;
      return done(detail);
    }
    // The owner may destroy this stream in on_close: nothing of it is used
    // after (the callback is moved out first).
    auto on_close = std::move(cb_.on_close);
    if (on_close) on_close(why, detail);
  }

  std::unique_ptr<Stream> inner_;
  std::unique_ptr<TlsSession> session_;
  ConnectFn handshake_done_;  // set while the handshake runs
  Callbacks cb_;
  bool started_ = false;
  bool paused_ = false;
  bool closing_ = false;
  bool ended_ = false;
  std::uint64_t timeout_ms_ = 0;
  uv_timer_t* timer_ = nullptr;  // the handshake's deadline
  uv_idle_t* idle_ = nullptr;    // delivers plaintext waiting in the session
  std::unique_ptr<std::byte[]> plain_;
  std::unique_ptr<std::byte[]> stage_;  // small writes gathered, kRecord bytes
  std::size_t staged_ = 0;
};

}  // namespace

Stream* tls_handshake(std::unique_ptr<Stream> stream, std::shared_ptr<const TlsContext> ctx,
                      std::uint64_t timeout_ms, ConnectFn done) {
  auto session = TlsSession::make(std::move(ctx));
  if (!session) {
    done(session.status());
    return nullptr;
  }
  TlsStream* tls = nullptr;
  try {
    tls = new TlsStream(std::move(stream), std::move(session).value());
  } catch (const std::bad_alloc&) {
    done(Status::out_of_memory());
    return nullptr;
  }
  return tls->begin(timeout_ms, std::move(done)) ? tls : nullptr;
}

}  // namespace kura::ipc::detail
