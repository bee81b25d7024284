#include <signal.h>

#include <cstring>
#include <mutex>
#include <new>
#include <string>

#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;

// One frame being written: the header bytes live here, the payload is shared.
struct WriteRequest {
  uv_write_t req;
  std::byte header[kFrameHeaderSize];
  std::shared_ptr<const Bytes> payload;
  Connection* conn;
  std::uint64_t bytes;
};

Status uv_status(const char* what, int err) {
  return Status(Code::kIo, std::string(what) + ": " + uv_strerror(err));
}

}  // namespace

void ignore_sigpipe() noexcept {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

Connection* Connection::adopt(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit) {
  return new Connection(stream, read_limit, write_limit);
}

Connection::Connection(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit)
    : stream_(stream), reader_(read_limit), write_limit_(write_limit), read_buffer_(new char[kReadBuffer]) {
  stream_->data = this;
}

int Connection::fd() const noexcept {
  uv_os_fd_t fd = -1;
  if (closed_ || uv_fileno(reinterpret_cast<const uv_handle_t*>(stream_), &fd) != 0) return -1;
  return fd;
}

Status Connection::start(Callbacks callbacks) {
  cb_ = std::move(callbacks);
  if (closed_) return Status(Code::kIo, "connection is closed");
  int rc = uv_read_start(stream_, &Connection::on_alloc, &Connection::on_read);
  if (rc != 0) return uv_status("cannot read from the connection", rc);
  reading_ = true;
  return Status::ok();
}

void Connection::pause_reading() {
  if (closed_ || !reading_) return;
  uv_read_stop(stream_);
  reading_ = false;
}

void Connection::resume_reading() {
  if (closed_ || reading_) return;
  if (int rc = uv_read_start(stream_, &Connection::on_alloc, &Connection::on_read); rc != 0) {
    close(uv_status("cannot read from the connection", rc));
    return;
  }
  reading_ = true;
}

void Connection::on_alloc(uv_handle_t* h, std::size_t, uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(h->data);
  buf->base = c->read_buffer_.get();
  buf->len = kReadBuffer;
}

void Connection::on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf) {
  auto* c = static_cast<Connection*>(s->data);
  if (c->closed_) return;
  if (n < 0) {
    c->close(n == UV_EOF ? Status(Code::kIo, "the peer closed the connection")
                         : uv_status("reading from the connection failed", static_cast<int>(n)));
    return;
  }
  if (n == 0) return;
  c->bytes_in_ += static_cast<std::uint64_t>(n);
  Status fed = c->reader_.feed(
      std::span<const std::byte>(reinterpret_cast<const std::byte*>(buf->base), static_cast<std::size_t>(n)));
  if (!fed) {
    c->close(fed);
    return;
  }
  while (!c->closed_) {
    auto frame = c->reader_.next();
    if (!frame) {
      c->close(frame.status());
      return;
    }
    if (!frame->has_value()) return;
    c->cb_.on_frame(*c, std::move(**frame));
  }
}

void Connection::send(FrameType type, std::uint16_t flags, std::uint64_t id,
                      std::shared_ptr<const Bytes> payload) {
  if (closed_) return;
  const std::uint64_t length = payload ? payload->size() : 0;
  if (length > UINT32_MAX) return close(invalid_argument("frame payload over 4 GiB"));
  auto* w = new (std::nothrow) WriteRequest;
  if (w == nullptr) return close(Status::out_of_memory());
  FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.id = id;
  h.length = static_cast<std::uint32_t>(length);
  encode_frame_header(h, std::span<std::byte, kFrameHeaderSize>(w->header, kFrameHeaderSize));
  w->payload = std::move(payload);
  w->conn = this;
  w->bytes = kFrameHeaderSize + length;
  w->req.data = w;
  uv_buf_t bufs[2];
  bufs[0] = uv_buf_init(reinterpret_cast<char*>(w->header), kFrameHeaderSize);
  unsigned nbufs = 1;
  if (length > 0) {
    bufs[1] = uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(w->payload->data())),
                          static_cast<unsigned>(length));
    nbufs = 2;
  }
  bytes_out_ += w->bytes;
  // Nothing queued: write at once. A frame that goes out whole needs no
  // request, no callback and no change to the poll set; only what the socket
  // does not take now is queued.
  if (queued_ == 0) {
    const int n = uv_try_write(stream_, bufs, nbufs);
    if (n == static_cast<int>(w->bytes)) {
      delete w;
      return;
    }
    if (n < 0 && n != UV_EAGAIN) {
      delete w;
      return close(uv_status("cannot write to the connection", n));
    }
    std::size_t written = n > 0 ? static_cast<std::size_t>(n) : 0;
    while (nbufs > 0 && written >= bufs[0].len) {
      written -= bufs[0].len;
      bufs[0] = bufs[1];
      --nbufs;
    }
    if (nbufs > 0) {
      bufs[0].base += written;
      bufs[0].len -= static_cast<unsigned>(written);
    }
    w->bytes -= static_cast<std::uint64_t>(n > 0 ? n : 0);
  }
  int rc = uv_write(&w->req, stream_, bufs, nbufs, &Connection::on_written);
  if (rc != 0) {
    delete w;
    return close(uv_status("cannot write to the connection", rc));
  }
  queued_ += w->bytes;
  if (queued_ > write_limit_)
    close(
        Status(Code::kIo, "the peer stopped reading: " + std::to_string(queued_) + " bytes wait to be sent"));
}

void Connection::on_written(uv_write_t* req, int status) {
  auto* w = static_cast<WriteRequest*>(req->data);
  Connection* c = w->conn;
  c->queued_ -= w->bytes;
  delete w;
  if (status != 0 && status != UV_ECANCELED && !c->closed_)
    c->close(uv_status("writing to the connection failed", status));
}

void Connection::close(const Status& why) {
  if (closed_) return;
  closed_ = true;
  close_reason_ = why;
  uv_close(reinterpret_cast<uv_handle_t*>(stream_), &Connection::on_closed);
}

void Connection::on_closed(uv_handle_t* h) {
  auto* c = static_cast<Connection*>(h->data);
  // Writes still queued were cancelled (on_written ran) before this.
  if (c->cb_.on_close) c->cb_.on_close(*c, c->close_reason_);
  if (h->type == UV_NAMED_PIPE) {
    delete reinterpret_cast<uv_pipe_t*>(h);
  } else {
    delete reinterpret_cast<uv_tcp_t*>(h);
  }
  delete c;
}

}  // namespace kura::ipc::detail
