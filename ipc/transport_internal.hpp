// Internal to kura_ipc: frames over libuv streams, and the transports that
// make those streams. The only header of kura that includes uv.h; never
// installed.
//
// A Connection carries frames over one connected uv_stream_t, whatever made
// it (unix_transport.cpp today; tcp_transport.cpp behind the same two
// functions later). It lives on one loop thread and is driven by callbacks.
#pragma once

#include <uv.h>

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/ipc/frame.hpp"

namespace kura::ipc::detail {

// Where diagnostics go: one line each, no trailing newline.
using LogFn = std::function<void(const std::string&)>;

// Sends to a peer that went away are errors, not a signal that kills the
// process: installs SIG_IGN for SIGPIPE once (process-wide).
void ignore_sigpipe() noexcept;

// True when a connection closed because the peer closed its end.
bool peer_hung_up(const Status& why) noexcept;

struct OutFrame;  // connection.cpp

class Connection {
 public:
  struct Callbacks {
    // A frame arrived whole. May call send() and close().
    std::function<void(Connection&, Frame&&)> on_frame;
    // The connection closed (by close(), the peer, or an error), with the
    // reason. Called once, from the loop after close() returned (never from
    // inside send() or close()), then the Connection is freed: drop every
    // pointer to it here.
    std::function<void(Connection&, const Status& why)> on_close;
  };

  // Takes a connected stream initialised on its loop (uv_pipe_t or uv_tcp_t
  // allocated with new), which it closes and frees. Frames longer than
  // `read_limit` close the connection; so do more than `write_limit` bytes
  // waiting to be sent (a peer that stopped reading).
  static Connection* adopt(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit);

  // Starts reading. Errors: Io.
  Status start(Callbacks callbacks);
  // Queues a frame; the frames of one loop turn are written together right
  // after it (one system call for many results). `payload` may be shared
  // with other connections (a frame forwarded as it arrived); it is kept
  // until written. A write that fails (or a write queue over its limit)
  // closes the connection, and on_close says why; on a closed connection
  // send does nothing.
  void send(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload);
  // Stops and restarts reading (frames already read have been delivered).
  void pause_reading();
  void resume_reading();
  // Closes the connection, once; on_close gets `why` (later, from the loop).
  // From here on send() does nothing and no frame is delivered.
  void close(const Status& why);
  bool closed() const noexcept { return closed_; }

  std::uint32_t read_limit() const noexcept { return reader_.limit(); }
  void set_read_limit(std::uint32_t limit) noexcept { reader_.set_limit(limit); }
  std::uint64_t write_queue_bytes() const noexcept { return queued_; }
  // A frame that receives no byte for `ms` closes the connection (0: never).
  void set_partial_frame_timeout(std::uint64_t ms) noexcept { partial_frame_timeout_ms_ = ms; }
  // Bytes read from and queued to the socket so far.
  std::uint64_t bytes_in() const noexcept { return bytes_in_; }
  std::uint64_t bytes_out() const noexcept { return bytes_out_; }
  // The socket's descriptor (for peer credentials), or -1.
  int fd() const noexcept;

  // For the owner's bookkeeping.
  std::uint64_t id = 0;

 private:
  Connection(uv_stream_t* stream, std::uint32_t read_limit, std::uint64_t write_limit);
  void flush();
  static void on_alloc(uv_handle_t* h, std::size_t suggested, uv_buf_t* buf);
  static void on_read(uv_stream_t* s, ssize_t n, const uv_buf_t* buf);
  static void on_written(uv_write_t* req, int status);
  static void on_closed(uv_handle_t* h);

  uv_stream_t* stream_;
  FrameReader reader_;
  std::uint64_t write_limit_;
  std::uint64_t queued_ = 0;
  std::uint64_t bytes_in_ = 0;
  std::uint64_t bytes_out_ = 0;
  Callbacks cb_;
  bool closed_ = false;
  Status close_reason_;
  bool reading_ = false;
  std::unique_ptr<char[]> read_buffer_;
  // Frames sent during this loop turn, written together after it.
  std::vector<OutFrame> out_;
  uv_check_t flush_;
  bool flush_pending_ = false;
  int handles_closed = 0;
  std::uint64_t partial_frame_timeout_ms_ = 0;
};

// --- Unix domain sockets ----------------------------------------------------

// The directory for sockets: $XDG_RUNTIME_DIR/kura, else /tmp/kura-<uid>;
// created 0700 when missing. Errors: as check_socket_dir.
Result<std::string> default_socket_dir() noexcept;

// Checks that `dir` is a directory (not a symlink) owned by this user with
// no group or other permission bits. Errors: Permission, NotFound, Io.
Status check_socket_dir(const std::string& dir) noexcept;

// A listening socket. Closing it (or destroying it) stops accepting and
// unlinks the socket file.
class Listener {
 public:
  virtual ~Listener() = default;
  virtual void close() = 0;
};

// Called with each accepted stream (already checked: the peer is this user)
// and the peer's pid.
using AcceptFn = std::function<void(uv_stream_t* stream, std::int64_t peer_pid)>;

// Listens at `path` in a directory that passes check_socket_dir. A stale
// socket file there (nobody accepting) is replaced; a live one is Exists.
// Connections from another user are closed and logged. Errors: Exists,
// InvalidArgument (a path too long for a socket address), Permission, Io.
Result<std::unique_ptr<Listener>> listen_unix(uv_loop_t* loop, const std::string& path, AcceptFn on_accept,
                                              LogFn log) noexcept;

// Connects to `path` on `loop` (call on the loop thread); `done` gets the
// connected stream, checked to belong to a peer of this user, or an error
// (NotFound: nobody listens there).
void connect_unix(uv_loop_t* loop, const std::string& path, std::function<void(Result<uv_stream_t*>)> done);

}  // namespace kura::ipc::detail
