#include <signal.h>

#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

#include "transport_internal.hpp"

namespace kura::ipc::detail {

// A frame waiting to be written: its header bytes, and its payload, which
// may be shared with other connections (a frame forwarded as it arrived).
struct OutFrame {
  std::byte header[kFrameHeaderSize];
  std::shared_ptr<const Bytes> payload;
};

namespace {

constexpr std::size_t kReadBuffer = 64 * 1024;

// Frames handed to uv_write: they stay alive until it is done with them.
struct WriteRequest {
  uv_write_t req;
  std::vector<OutFrame> frames;
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

bool peer_hung_up(const Status& why) noexcept {
  return why.message() == "the peer closed the connection";
}

Connection* Connection::adopt(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit) {
  return new Connection(stream, read_limit, write_limit);
}

Connection::Connection(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit)
    : stream_(stream), reader_(read_limit), write_limit_(write_limit), read_buffer_(new char[kReadBuffer]) {
  stream_->data = this;
  uv_check_init(stream_->loop, &flush_);
  flush_.data = this;
  uv_unref(reinterpret_cast<uv_handle_t*>(&flush_));  // it never keeps a loop alive on its own
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
  FrameHeader h;
  h.type = type;
  h.flags = flags;
  h.id = id;
  h.length = static_cast<std::uint32_t>(length);
  OutFrame& f = out_.emplace_back();
  encode_frame_header(h, std::span<std::byte, kFrameHeaderSize>(f.header, kFrameHeaderSize));
  f.payload = std::move(payload);
  bytes_out_ += kFrameHeaderSize + length;
  // The frames of this loop turn go out together when it ends (the check
  // phase runs right after the callbacks that queued them).
  if (!flush_pending_) {
    flush_pending_ = true;
    uv_check_start(&flush_, [](uv_check_t* c) { static_cast<Connection*>(c->data)->flush(); });
  }
}

void Connection::flush() {
  uv_check_stop(&flush_);
  flush_pending_ = false;
  if (closed_ || out_.empty()) return;
  auto* w = new (std::nothrow) WriteRequest;
  if (w == nullptr) return close(Status::out_of_memory());
  w->frames = std::move(out_);
  out_.clear();
  w->conn = this;
  w->req.data = w;
  std::vector<uv_buf_t> bufs;
  bufs.reserve(2 * w->frames.size());
  std::uint64_t total = 0;
  for (OutFrame& f : w->frames) {
    bufs.push_back(uv_buf_init(reinterpret_cast<char*>(f.header), kFrameHeaderSize));
    total += kFrameHeaderSize;
    if (f.payload && !f.payload->empty()) {
      bufs.push_back(uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(f.payload->data())),
                                 static_cast<unsigned>(f.payload->size())));
      total += f.payload->size();
    }
  }
  std::size_t first = 0;
  // Nothing queued: write at once. What the socket takes now needs no
  // request, no callback and no change to the poll set; only the rest is
  // queued.
  if (queued_ == 0) {
    const int n = uv_try_write(stream_, bufs.data(), static_cast<unsigned>(bufs.size()));
    if (n < 0 && n != UV_EAGAIN) {
      delete w;
      return close(uv_status("cannot write to the connection", n));
    }
    std::uint64_t written = n > 0 ? static_cast<std::uint64_t>(n) : 0;
    if (written == total) {
      delete w;
      return;
    }
    total -= written;
    while (written >= bufs[first].len) written -= bufs[first++].len;
    bufs[first].base += written;
    bufs[first].len -= static_cast<unsigned>(written);
  }
  w->bytes = total;
  int rc = uv_write(&w->req, stream_, bufs.data() + first, static_cast<unsigned>(bufs.size() - first),
                    &Connection::on_written);
  if (rc != 0) {
    delete w;
    return close(uv_status("cannot write to the connection", rc));
  }
  queued_ += total;
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
  out_.clear();  // frames not yet flushed go with the connection
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_), &Connection::on_closed);
  uv_close(reinterpret_cast<uv_handle_t*>(stream_), &Connection::on_closed);
}

void Connection::on_closed(uv_handle_t* h) {
  auto* c = static_cast<Connection*>(h->data);
  if (h != reinterpret_cast<uv_handle_t*>(&c->flush_)) {
    if (h->type == UV_NAMED_PIPE) {
      delete reinterpret_cast<uv_pipe_t*>(h);
    } else {
      delete reinterpret_cast<uv_tcp_t*>(h);
    }
  }
  // Both handles closed (writes still queued were cancelled, on_written
  // ran, before this): the owner hears of it, then the Connection goes.
  if (++c->handles_closed < 2) return;
  if (c->cb_.on_close) c->cb_.on_close(*c, c->close_reason_);
  delete c;
}

}  // namespace kura::ipc::detail
