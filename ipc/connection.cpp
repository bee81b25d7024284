// Frames over a Stream: reading them whole, and the one write path.
#include <signal.h>

#include <new>
#include <string>
#include <vector>

#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

// How long a connection whose peer ended its side keeps writing what is
// queued before it closes anyway (a peer that half-closed and stopped
// reading must not hold it).
constexpr std::uint64_t kEndLingerMs = 2000;

Status closed_status() {
  return Status(Code::kIo, "connection closed");
}

// The buffers of `frames`, leaving out their first `skip` bytes.
std::vector<uv_buf_t> buffers_of(std::vector<PendingFrame>& frames, std::uint64_t skip) {
  std::vector<uv_buf_t> bufs;
  bufs.reserve(2 * frames.size());
  for (PendingFrame& f : frames) {
    bufs.push_back(uv_buf_init(reinterpret_cast<char*>(f.header), kFrameHeaderSize));
    if (f.payload && !f.payload->empty())
      bufs.push_back(uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(f.payload->data())),
                                 static_cast<unsigned>(f.payload->size())));
    if (!f.body.empty())
      bufs.push_back(uv_buf_init(const_cast<char*>(reinterpret_cast<const char*>(f.body.data())),
                                 static_cast<unsigned>(f.body.size())));
  }
  std::size_t first = 0;
  while (skip > 0 && skip >= bufs[first].len) skip -= bufs[first++].len;
  bufs.erase(bufs.begin(), bufs.begin() + static_cast<std::ptrdiff_t>(first));
  if (skip > 0) {
    bufs[0].base += skip;
    bufs[0].len -= static_cast<std::size_t>(skip);
  }
  return bufs;
}

CloseReason reason_of(const Status& s) {
  return s.code() == Code::kOutOfMemory ? CloseReason::kOutOfMemory : CloseReason::kProtocol;
}

}  // namespace

void ignore_sigpipe() noexcept {
  static std::once_flag once;
  std::call_once(once, [] { ::signal(SIGPIPE, SIG_IGN); });
}

std::string_view close_reason_name(CloseReason why) noexcept {
  switch (why) {
    case CloseReason::kLocal: return "local";
    case CloseReason::kPeerClosed: return "peer-closed";
    case CloseReason::kIo: return "io";
    case CloseReason::kProtocol: return "protocol";
    case CloseReason::kBacklog: return "backlog";
    case CloseReason::kTimeout: return "timeout";
    case CloseReason::kOutOfMemory: return "out-of-memory";
  }
  return "unknown";
}

// --- Sender ------------------------------------------------------------------------

Status Sender::send(FrameType type, std::uint16_t flags, std::uint64_t id,
                    std::shared_ptr<const Bytes> payload) {
  const OutgoingFrame f{type, flags, id, std::move(payload), {}, {}};
  return send_many(std::span<const OutgoingFrame>(&f, 1));
}

Status Sender::send_many(std::span<const OutgoingFrame> frames) {
  std::vector<PendingFrame> pending;
  std::uint64_t total = 0;
  try {
    pending.resize(frames.size());
    for (std::size_t i = 0; i < frames.size(); ++i) {
      const OutgoingFrame& f = frames[i];
      const std::uint64_t length = (f.payload ? f.payload->size() : 0) + f.body.size();
      if (length > UINT32_MAX) return invalid_argument("frame payload over 4 GiB");
      encode_frame_header(FrameHeader{f.type, f.flags, f.id, static_cast<std::uint32_t>(length)},
                          std::span<std::byte, kFrameHeaderSize>(pending[i].header, kFrameHeaderSize));
      pending[i].payload = f.payload;
      pending[i].body = f.body;
      pending[i].keep = f.keep;
      total += kFrameHeaderSize + length;
    }
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
  std::lock_guard<std::mutex> lock(mu_);
  if (conn_ == nullptr) return closed_status();
  if (!failed_.is_ok()) return failed_;
  Connection* c = conn_;
  try {
    if (std::this_thread::get_id() == loop_thread_) {
      append(pending, 0);
      uv_check_start(&c->flush_check_, [](uv_check_t* h) { static_cast<Connection*>(h->data)->flush(); });
      uv_idle_start(&c->flush_idle_, [](uv_idle_t* h) { static_cast<Connection*>(h->data)->flush(); });
    } else {
      std::uint64_t written = 0;
      if (outbox_.empty() && c->stream_->queued_bytes() == 0) {
        std::vector<uv_buf_t> bufs = buffers_of(pending, 0);
        const std::int64_t n = c->stream_->try_write_now(bufs);
        if (n < 0 && n != UV_ENOSYS) {
          failed_ = Status(
              Code::kIo, std::string("cannot write to the connection: ") + uv_strerror(static_cast<int>(n)));
          uv_async_send(&c->flush_async_);
          return failed_;
        }
        if (n > 0) written = static_cast<std::uint64_t>(n);
      }
      c->bytes_out_.fetch_add(total, std::memory_order_relaxed);
      if (written == total) return Status::ok();
      append(pending, written);
      uv_async_send(&c->flush_async_);
      return Status::ok();
    }
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
  c->bytes_out_.fetch_add(total, std::memory_order_relaxed);
  return Status::ok();
}

void Sender::append(std::vector<PendingFrame>& frames, std::uint64_t written) {
  std::size_t first = 0;
  while (written > 0 && written >= frames[first].size()) written -= frames[first++].size();
  if (outbox_.empty()) head_written_ = written;
  outbox_.insert(outbox_.end(), std::make_move_iterator(frames.begin() + static_cast<std::ptrdiff_t>(first)),
                 std::make_move_iterator(frames.end()));
}

// --- Connection --------------------------------------------------------------------

Connection* Connection::adopt(std::unique_ptr<Stream> stream, std::uint32_t read_limit,
                              std::uint64_t write_limit) {
  return new Connection(std::move(stream), read_limit, write_limit);
}

Connection::Connection(std::unique_ptr<Stream> stream, std::uint32_t read_limit, std::uint64_t write_limit)
    : stream_(std::move(stream)), sender_(new Sender(this)), reader_(read_limit), write_limit_(write_limit) {
  uv_loop_t* loop = stream_->loop();
  // None of these keeps a loop alive on its own: the stream does.
  uv_check_init(loop, &flush_check_);
  uv_idle_init(loop, &flush_idle_);
  // The first async handle of a loop opens a descriptor (an eventfd), which
  // can fail when the process has none left: the connection is then
  // refused by start().
  async_rc_ =
      uv_async_init(loop, &flush_async_, [](uv_async_t* h) { static_cast<Connection*>(h->data)->flush(); });
  uv_timer_init(loop, &partial_timer_);
  for (uv_handle_t* h :
       {reinterpret_cast<uv_handle_t*>(&flush_check_), reinterpret_cast<uv_handle_t*>(&flush_idle_),
        reinterpret_cast<uv_handle_t*>(&partial_timer_)}) {
    h->data = this;
    uv_unref(h);
  }
  handles_open_ = 4;  // the three above and the stream
  if (async_rc_ == 0) {
    flush_async_.data = this;
    uv_unref(reinterpret_cast<uv_handle_t*>(&flush_async_));
    ++handles_open_;
  }
}

Status Connection::start(Callbacks callbacks) {
  cb_ = std::move(callbacks);
  if (closing_) return Status(Code::kIo, "connection is closed");
  if (async_rc_ != 0)
    return Status(Code::kIo, std::string("cannot set up the connection: ") + uv_strerror(async_rc_));
  Status s = stream_->start(
      Stream::Callbacks{[this](std::span<const std::byte> bytes) { on_bytes(bytes); },
                        [this](CloseReason why, const Status& detail) { on_stream_closed(why, detail); },
                        [this] { on_end(); }, [this] { close_if_ended_and_drained(); }});
  if (s) reading_ = true;
  return s;
}

void Connection::send(FrameType type, std::uint16_t flags, std::uint64_t id,
                      std::shared_ptr<const Bytes> payload) {
  if (closing_) return;
  Status s = sender_->send(type, flags, id, std::move(payload));
  if (s || closing_) return;
  // A payload over 4 GiB is this side's doing; anything else a failed write.
  const CloseReason why = s.code() == Code::kOutOfMemory       ? CloseReason::kOutOfMemory
                          : s.code() == Code::kInvalidArgument ? CloseReason::kLocal
                                                               : CloseReason::kIo;
  close(why, s);
}

void Connection::pause_reading() {
  if (closing_ || !reading_) return;
  stream_->pause();
  reading_ = false;
  uv_timer_stop(&partial_timer_);
}

void Connection::resume_reading() {
  if (closing_ || reading_ || peer_ended_) return;
  stream_->resume();
  reading_ = true;
  if (reader_.buffered() > 0) {
    last_progress_ = uv_now(stream_->loop());
    arm_partial_timer();
  }
}

void Connection::on_bytes(std::span<const std::byte> bytes) {
  if (closing_) return;
  bytes_in_ += bytes.size();
  if (Status fed = reader_.feed(bytes); !fed) return close(reason_of(fed), fed);
  while (!closing_) {
    auto frame = reader_.next();
    if (!frame) return close(reason_of(frame.status()), frame.status());
    if (!frame->has_value()) break;
    try {
      cb_.on_frame(*this, std::move(**frame));
    } catch (const std::bad_alloc&) {
      // The owner could not take this frame in: the connection goes, the
      // loop and every other connection stay.
      return close(CloseReason::kOutOfMemory, Status::out_of_memory());
    }
  }
  if (!closing_ && reading_ && reader_.buffered() > 0) {
    last_progress_ = uv_now(stream_->loop());
    arm_partial_timer();
  }
}

// The peer will send nothing more, but may still read (a client that
// half-closed to leave reads the results already on their way): what is
// queued is written first, for at most kEndLingerMs, then the connection
// closes as the peer's doing.
void Connection::on_end() {
  if (closing_) return;
  peer_ended_ = true;
  reading_ = false;
  uv_timer_start(
      &partial_timer_,
      [](uv_timer_t* t) {
        auto* c = static_cast<Connection*>(t->data);
        c->close(CloseReason::kPeerClosed, Status(Code::kIo, "the peer closed the connection"));
      },
      kEndLingerMs, 0);
  close_if_ended_and_drained();
}

void Connection::close_when_written(CloseReason why, const Status& detail) {
  if (closing_ || peer_ended_ || closing_when_written_) return;
  pause_reading();
  closing_when_written_ = true;
  written_reason_ = why;
  written_detail_ = detail;
  uv_timer_start(
      &partial_timer_,
      [](uv_timer_t* t) {
        auto* c = static_cast<Connection*>(t->data);
        c->close(c->written_reason_, c->written_detail_);
      },
      kEndLingerMs, 0);
  close_if_ended_and_drained();
}

void Connection::close_if_ended_and_drained() {
  if (closing_ || !(peer_ended_ || closing_when_written_)) return;
  {
    std::lock_guard<std::mutex> lock(sender_->mu_);
    if (!sender_->outbox_.empty() || stream_->queued_bytes() > 0) return;
  }
  if (peer_ended_)
    return close(CloseReason::kPeerClosed, Status(Code::kIo, "the peer closed the connection"));
  close(written_reason_, written_detail_);
}

void Connection::arm_partial_timer() {
  if (partial_timeout_ms_ == 0 || uv_is_active(reinterpret_cast<uv_handle_t*>(&partial_timer_))) return;
  uv_timer_start(&partial_timer_, &Connection::on_partial_timer, partial_timeout_ms_, 0);
}

// Checks the partial frame's last progress: the timer is started once per
// partial frame, not per read, and looks again for the time left.
void Connection::on_partial_timer(uv_timer_t* t) {
  auto* c = static_cast<Connection*>(t->data);
  if (c->closing_ || !c->reading_ || c->peer_ended_ || c->reader_.buffered() == 0) return;
  const std::uint64_t idle = uv_now(t->loop) - c->last_progress_;
  if (idle >= c->partial_timeout_ms_)
    return c->close(CloseReason::kTimeout,
                    Status(Code::kIo, "no byte of a partial frame arrived for " +
                                          std::to_string(c->partial_timeout_ms_) + " ms"));
  uv_timer_start(t, &Connection::on_partial_timer, c->partial_timeout_ms_ - idle, 0);
}

void Connection::flush() {
  if (closing_) return;
  uv_check_stop(&flush_check_);
  uv_idle_stop(&flush_idle_);
  Status failed;
  std::uint64_t queued = 0;
  {
    std::lock_guard<std::mutex> lock(sender_->mu_);
    failed = sender_->failed_;
    if (failed.is_ok() && !sender_->outbox_.empty()) {
      try {
        auto frames = std::make_shared<std::vector<PendingFrame>>(std::move(sender_->outbox_));
        sender_->outbox_.clear();
        std::vector<uv_buf_t> bufs = buffers_of(*frames, sender_->head_written_);
        sender_->head_written_ = 0;
        stream_->write(bufs, std::move(frames));
      } catch (const std::bad_alloc&) {
        failed = Status::out_of_memory();
      }
    }
    queued = stream_->queued_bytes();
  }
  if (!failed.is_ok())
    return close(failed.code() == Code::kOutOfMemory ? CloseReason::kOutOfMemory : CloseReason::kIo, failed);
  if (queued > write_limit_)
    return close(
        CloseReason::kBacklog,
        Status(Code::kIo, "the peer stopped reading: " + std::to_string(queued) + " bytes wait to be sent"));
  close_if_ended_and_drained();
}

void Connection::close(CloseReason why, const Status& detail) {
  if (closing_) return;
  begin_close(why, detail);
  stream_->close(why, detail);
}

void Connection::on_stream_closed(CloseReason why, const Status& detail) {
  if (!closing_) begin_close(why, detail);
  handle_closed();
}

void Connection::begin_close(CloseReason why, const Status& detail) {
  closing_ = true;
  reason_ = why;
  detail_ = detail;
  {
    // From here on the Sender refuses frames; those not yet written go.
    std::lock_guard<std::mutex> lock(sender_->mu_);
    sender_->conn_ = nullptr;
    sender_->outbox_.clear();
  }
  auto closed = [](uv_handle_t* h) { static_cast<Connection*>(h->data)->handle_closed(); };
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_check_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&flush_idle_), closed);
  if (async_rc_ == 0) uv_close(reinterpret_cast<uv_handle_t*>(&flush_async_), closed);
  uv_close(reinterpret_cast<uv_handle_t*>(&partial_timer_), closed);
}

void Connection::handle_closed() {
  // The stream and the four handles closed: the owner hears of it, then
  // the Connection goes.
  if (--handles_open_ > 0) return;
  try {
    if (cb_.on_close) cb_.on_close(*this, reason_, detail_);
  } catch (const std::bad_alloc&) {  // NOLINT(bugprone-empty-catch): the owner's loss; this goes regardless
  }
  delete this;
}

}  // namespace kura::ipc::detail
