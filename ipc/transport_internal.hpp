// Internal to kura_ipc: the transport seam. A Stream is a connected byte
// stream on one loop thread; a listener and a connector make them for each
// kind of endpoint (endpoint_internal.hpp): unix_transport.cpp and
// tcp_transport.cpp, behind the same two functions (transport.cpp); both use
// the stream of socket_stream.cpp. A TCP connection proves the shared secret
// both ways (auth_internal.hpp) before either side sees it, then, off
// loopback or when asked, is wrapped in the TLS stream of tls_stream.cpp.
// A Connection carries frames over a Stream, and every frame to a peer goes
// out through its one write path (Sender), so two writers' frames never
// interleave. The only header of kura that includes uv.h; never installed.
#pragma once

#include <uv.h>

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <mutex>
#include <span>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "auth_internal.hpp"
#include "endpoint_internal.hpp"
#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/ipc/frame.hpp"

namespace kura::ipc::detail {

// Where diagnostics go: one line each, no trailing newline.
using LogFn = std::function<void(const std::string&)>;

// Sends to a peer that went away are errors, not a signal that kills the
// process: installs SIG_IGN for SIGPIPE once (process-wide).
void ignore_sigpipe() noexcept;

// Why a stream or connection closed. Callers decide on this, never on the
// text of the Status that comes with it (that is for logs).
enum class CloseReason : std::uint8_t {
  kLocal,       // this side called close(): the owner decided (stopping, dropping a peer)
  kPeerClosed,  // the peer closed its end cleanly (EOF)
  kIo,          // a read or write failed
  kProtocol,    // the peer sent a malformed frame or one over the read limit
  kBacklog,     // the peer stopped reading: the write queue passed its limit
  kTimeout,     // a partial frame made no progress within its deadline
  kOutOfMemory,
};

// A short stable word for `why`, such as "peer-closed".
std::string_view close_reason_name(CloseReason why) noexcept;

// Who is at the other end, as the transport knows it.
struct PeerInfo {
  std::string transport;  // "unix" or "tcp"
  std::int64_t pid = 0;   // SO_PEERCRED for unix; 0 for tcp (unknown)
  std::uint32_t uid = 0;  // SO_PEERCRED for unix; 0 for tcp (unknown)
  std::string address;    // printable, for logs: the peer's "tcp://1.2.3.4:5678"
};

// A connected byte stream on one loop thread: every function but
// try_write_now() and queued_bytes() is called on that thread only. Made by
// listen() and connect(); destroying a stream that is not closed closes it
// without calling on_close.
class Stream {
 public:
  struct Callbacks {
    // Bytes arrived (valid during the call only).
    std::function<void(std::span<const std::byte>)> on_read;
    // The stream closed: by close(), the peer (kPeerClosed) or an error.
    // Called once, from the loop after close() returned, when the stream is
    // done with its descriptor; the owner may destroy the stream here.
    std::function<void(CloseReason, const Status&)> on_close;
    // The peer closed its sending side (end of stream): reading stops, and
    // what is queued may still be written before the owner closes. Empty:
    // the stream closes at once with kPeerClosed.
    std::function<void()> on_end;
    // Everything queued was taken by the kernel (called after a write that
    // had to wait completes). May be empty.
    std::function<void()> on_drained;
  };

  virtual ~Stream() = default;

  // Starts reading. Errors: Io.
  virtual Status start(Callbacks cb) = 0;
  // Queues `bufs` after everything written before; `keep` owns their memory
  // until they are written or the stream closes. A write that fails closes
  // the stream (kIo). Does nothing on a closed stream.
  virtual void write(std::span<const uv_buf_t> bufs, std::shared_ptr<void> keep) = 0;
  // Writes what the kernel takes at once of `bufs`, without blocking, from
  // any thread. Returns the bytes written (0: none fit), or a negative uv
  // error: UV_ENOSYS when this kind of stream cannot write off its loop
  // thread (the default; a TLS stream), another when the stream is closed or
  // the write failed. REQUIRES: the caller serialises it with write() and
  // calls it only when queued_bytes() is 0 (so that bytes stay in order).
  virtual std::int64_t try_write_now(std::span<const uv_buf_t> bufs) {
    (void)bufs;
    return UV_ENOSYS;
  }
  // Bytes accepted by write() and not yet taken by the kernel. Any thread.
  virtual std::uint64_t queued_bytes() const = 0;
  // Stops and restarts reading.
  virtual void pause() = 0;
  virtual void resume() = 0;
  // Closes the stream, once; on_close gets `why` and `detail` later.
  virtual void close(CloseReason why, const Status& detail) = 0;
  virtual bool closed() const = 0;
  virtual const PeerInfo& peer() const = 0;
  // The descriptor (for a watcher or a dup), or -1 if none or closed.
  virtual int fd() const = 0;
  virtual uv_loop_t* loop() const = 0;
};

// A listening endpoint. Closing it (or destroying it) stops accepting; a
// Unix listener then unlinks its socket file if that is still the file it
// bound (not another listener's that replaced it).
class Listener {
 public:
  virtual ~Listener() = default;
  virtual void close() = 0;
  // The endpoint, printable ("unix:/run/user/1000/kura/dispatcher.sock").
  virtual std::string address() const = 0;
};

// Called with each accepted stream (a Unix peer is already checked to be
// this user; a TCP peer has proved the secret, and speaks TLS if either
// side asked for it).
using AcceptFn = std::function<void(std::unique_ptr<Stream>)>;
using ConnectFn = std::function<void(Result<std::unique_ptr<Stream>>)>;

// What a TCP connector proves and checks (WorkerOptions): the shared
// secret's file; the fingerprint of the listener's certificate it pins
// (parse_fingerprint's form; empty: none); whether it asks for TLS on a
// loopback address too (off loopback it always does).
struct TcpCredentials {
  std::string secret_file;
  std::string fingerprint;
  bool force_tls = false;
};

// How long a TCP peer has to complete the handshake.
constexpr std::uint64_t kHandshakeTimeoutMs = 5000;
// TCP connections a listener keeps in their handshake at once: past this,
// new ones are closed at once and logged (a flood of silent peers holds
// each slot for at most kHandshakeTimeoutMs and cannot take every
// descriptor).
constexpr std::size_t kMaxHandshakes = 64;

// Listens at `at` on `loop` (call on the loop thread). Unix: the directory
// must pass check_socket_dir; a stale socket file there (nobody accepting)
// is replaced, a live one is Exists; connections from another user are
// closed and logged. Running out of descriptors is logged once per burst
// and survived: connections wait in the backlog until some close. TCP:
// needs `secret_file` (read_secret_file, read once here) and, when `at` is
// not a loopback address, the certificate and key beside it
// (TlsContext::server; on loopback they are read if there, for workers
// that ask for TLS). Each connection is handed on only once it proved the
// secret within kHandshakeTimeoutMs, then, if it or the listener asked
// (the listener does for a peer whose address is not loopback), completed
// TLS within as long again; else it is closed and logged. address() tells
// the port a port 0 got. Errors: Exists, InvalidArgument (a TCP endpoint
// without a secret file), Permission, NotFound, Io; those of
// read_secret_file and TlsContext::server.
Result<std::unique_ptr<Listener>> listen(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept, LogFn log,
                                         const std::string& secret_file = {}) noexcept;

// Connects to `to` on `loop` (call on the loop thread); `done` gets the
// connected stream or an error: NotFound (nobody listens there), Permission
// (refused, the listener is another user's, a TCP listener that did not
// prove the secret, or one whose certificate is not the pinned one),
// InvalidArgument (a TCP endpoint without a secret file; TLS, needed off
// loopback, forced or asked for by the listener, without a fingerprint),
// Corrupt (what answered is not a kura listener, or broke TLS), Io. `cred`
// is used for TCP only.
void connect(uv_loop_t* loop, const Endpoint& to, ConnectFn done, const TcpCredentials& cred = {});

// The kinds of transport, behind listen() and connect().
Result<std::unique_ptr<Listener>> listen_unix(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept,
                                              LogFn log) noexcept;
void connect_unix(uv_loop_t* loop, const Endpoint& to, ConnectFn done);
Result<std::unique_ptr<Listener>> listen_tcp(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept,
                                             LogFn log, std::string secret,
                                             const std::string& secret_file) noexcept;
void connect_tcp(uv_loop_t* loop, const Endpoint& to, ConnectFn done, std::string secret,
                 const TcpCredentials& cred);

// A Stream over `handle`: a uv_pipe_t or uv_tcp_t allocated with new,
// connected and initialised on its loop; the stream frees it. Null when out
// of memory (then `handle` is the caller's still).
std::unique_ptr<Stream> make_socket_stream(uv_stream_t* handle, PeerInfo peer);

// A stream whose peer proved the secret, and whether TLS must follow
// (either side's greeting asked for it).
struct Authenticated {
  std::unique_ptr<Stream> stream;
  bool tls = false;
};
using AuthDoneFn = std::function<void(Result<Authenticated>)>;

// Runs the handshake of auth_internal.hpp as `side` on `stream` (from
// make_socket_stream, not started) with `secret` (kSecretSize bytes),
// greeting with `flags` (kWantTls or 0): it reads no byte past the
// handshake. `done` gets the stream back once the peer proved the secret,
// or the error after which the stream is closed and gone: Corrupt (not a
// kura handshake), Permission (a wrong answer), Io (the peer closed, or
// said nothing for `timeout_ms`).
void authenticate(std::unique_ptr<Stream> stream, AuthSide side, std::span<const std::byte> secret,
                  std::uint8_t flags, std::uint64_t timeout_ms, AuthDoneFn done);

class TlsContext;
// Wraps `stream` (authenticated, not started) in TLS 1.3 as `ctx`'s side
// (tls_internal.hpp) and runs the TLS handshake; `done` gets the TLS
// stream once it completed within `timeout_ms`, or the error after which
// the connection is closed and gone: Permission (not the pinned
// certificate), Corrupt (not TLS 1.3, garbage), Io (closed, timed out),
// OutOfMemory. The TLS stream's try_write_now is UV_ENOSYS. Returns the TLS
// stream (for its owner to close() it early; valid until `done` runs), or
// null when `done` ran already.
Stream* tls_handshake(std::unique_ptr<Stream> stream, std::shared_ptr<const TlsContext> ctx,
                      std::uint64_t timeout_ms, ConnectFn done);

// A Status for the libuv error `err`: NotFound, Permission, Exists,
// OutOfMemory or Io.
Status uv_status(const std::string& what, int err);

// --- frames over a stream ----------------------------------------------------------

// A frame to send: its payload may be shared with other connections (a
// frame forwarded as it arrived) and is kept until written.
struct OutgoingFrame {
  FrameType type = FrameType::kHello;
  std::uint16_t flags = 0;
  std::uint64_t id = 0;
  std::shared_ptr<const Bytes> payload;  // may be null
  // More payload after `payload`, written from where it is (a mapped region's
  // bytes, not copied); `keep` holds that memory until it is written.
  std::span<const std::byte> body;
  std::shared_ptr<const void> keep;
};

class Connection;

// A frame a Sender holds until the stream takes it: its header bytes and
// its payload.
struct PendingFrame {
  std::byte header[kFrameHeaderSize];
  std::shared_ptr<const Bytes> payload;
  std::span<const std::byte> body;
  std::shared_ptr<const void> keep;

  std::uint64_t size() const { return kFrameHeaderSize + (payload ? payload->size() : 0) + body.size(); }
};

// The one write path of a Connection, usable from any thread. Frames of one
// call are contiguous on the wire and calls are ordered as they took the
// Sender's lock. From the loop thread, the frames of one loop turn are
// written together after it; from another thread, a stream that can write
// off its loop (Unix) is written at once when nothing waits before it, and
// the loop finishes what the kernel did not take. The Sender outlives its
// Connection: then sends return Io "connection closed".
class Sender {
 public:
  // Queues one frame. Errors: Io (the connection is closed, or the write
  // failed: the connection then closes with kIo), InvalidArgument (a payload
  // over 4 GiB), OutOfMemory.
  Status send(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload);
  // Queues frames, in order and contiguous. Errors: as send(); on an error
  // no frame of the call was queued.
  Status send_many(std::span<const OutgoingFrame> frames);

 private:
  friend class Connection;
  explicit Sender(Connection* conn) : conn_(conn), loop_thread_(std::this_thread::get_id()) {}
  // Appends `frames`, the first `written` bytes of them already sent.
  // REQUIRES: mu_ held.
  void append(std::vector<PendingFrame>& frames, std::uint64_t written);

  std::mutex mu_;
  Connection* conn_;  // null once the connection closes
  std::thread::id loop_thread_;
  // Frames not yet handed to the stream, in order; the first `head_written_`
  // bytes of the first are on the wire already.
  std::vector<PendingFrame> outbox_;
  std::uint64_t head_written_ = 0;
  Status failed_;  // an off-loop write failed: the loop closes the connection
};

class Connection {
 public:
  struct Callbacks {
    // A frame arrived whole. May call send() and close().
    std::function<void(Connection&, Frame&&)> on_frame;
    // The connection closed (by close(), the peer, or an error), with the
    // reason and a message for logs. Called once, from the loop after
    // close() returned (never from inside send() or close()), then the
    // Connection is freed: drop every pointer to it here.
    std::function<void(Connection&, CloseReason, const Status&)> on_close;
  };

  // Takes a connected stream; call on its loop thread. Frames longer than
  // `read_limit` close the connection (kProtocol); so do more than
  // `write_limit` bytes waiting to be sent (kBacklog: a peer that stopped
  // reading).
  static Connection* adopt(std::unique_ptr<Stream> stream, std::uint32_t read_limit,
                           std::uint64_t write_limit);

  // Starts reading. Errors: Io.
  Status start(Callbacks callbacks);
  // Queues a frame through sender() (loop thread): the frames of one loop
  // turn are written together right after it. A write that fails (or a
  // write queue over its limit) closes the connection, and on_close says
  // why; on a closed connection send does nothing.
  void send(FrameType type, std::uint16_t flags, std::uint64_t id, std::shared_ptr<const Bytes> payload);
  // The thread-safe write path; it outlives the connection.
  std::shared_ptr<Sender> sender() const noexcept { return sender_; }
  // Stops and restarts reading (frames already read have been delivered).
  void pause_reading();
  void resume_reading();
  // Closes the connection, once; on_close gets `why` and `detail` (later,
  // from the loop). From here on send() does nothing and no frame is
  // delivered.
  void close(CloseReason why, const Status& detail);
  // Stops reading and closes as close(why, detail) once every frame sent
  // before is written (a last word, such as kGoodbye), or after kEndLingerMs
  // if the peer does not take it.
  void close_when_written(CloseReason why, const Status& detail);
  bool closed() const noexcept { return closing_; }

  // A connection that holds part of a frame and receives no byte of it for
  // `ms` milliseconds closes with kTimeout (0, the default: never). Time
  // while reading is paused does not count.
  void set_partial_frame_timeout(std::uint64_t ms) noexcept { partial_timeout_ms_ = ms; }

  std::uint32_t read_limit() const noexcept { return reader_.limit(); }
  void set_read_limit(std::uint32_t limit) noexcept { reader_.set_limit(limit); }
  std::uint64_t write_queue_bytes() const noexcept { return stream_->queued_bytes(); }
  // Bytes read from and queued to the socket so far.
  std::uint64_t bytes_in() const noexcept { return bytes_in_; }
  std::uint64_t bytes_out() const noexcept { return bytes_out_.load(std::memory_order_relaxed); }
  const PeerInfo& peer() const noexcept { return stream_->peer(); }
  // The socket's descriptor, or -1.
  int fd() const noexcept { return closing_ ? -1 : stream_->fd(); }

  // For the owner's bookkeeping.
  std::uint64_t id = 0;

 private:
  friend class Sender;
  Connection(std::unique_ptr<Stream> stream, std::uint32_t read_limit, std::uint64_t write_limit);
  void on_bytes(std::span<const std::byte> bytes);
  void on_stream_closed(CloseReason why, const Status& detail);
  // Hands the outbox to the stream (loop thread).
  void flush();
  // Marks the connection closing and closes its own handles.
  void begin_close(CloseReason why, const Status& detail);
  void handle_closed();
  void arm_partial_timer();
  static void on_partial_timer(uv_timer_t* t);
  // The peer ended its side: close once what is queued is written, or
  // after kEndLingerMs.
  void on_end();
  void close_if_ended_and_drained();

  std::unique_ptr<Stream> stream_;
  std::shared_ptr<Sender> sender_;
  FrameReader reader_;
  std::uint64_t write_limit_;
  std::uint64_t bytes_in_ = 0;
  std::atomic<std::uint64_t> bytes_out_{0};
  Callbacks cb_;
  bool closing_ = false;
  CloseReason reason_ = CloseReason::kLocal;
  Status detail_;
  bool reading_ = false;
  uv_check_t flush_check_;  // flushes the frames of a loop turn after it
  // Active while frames wait for flush_check_: keeps the loop from blocking
  // in poll first (a send from a timer callback would otherwise wait for
  // the next I/O event).
  uv_idle_t flush_idle_;
  uv_async_t flush_async_;  // flushes frames another thread left
  int async_rc_ = 0;        // how its initialisation went (0: ready)
  uv_timer_t partial_timer_;
  std::uint64_t partial_timeout_ms_ = 0;
  std::uint64_t last_progress_ = 0;    // uv_now when a byte of the partial frame last came
  bool peer_ended_ = false;            // the peer closed its side; closing once drained
  bool closing_when_written_ = false;  // close_when_written(): closing once drained
  CloseReason written_reason_ = CloseReason::kLocal;
  Status written_detail_;
  int handles_open_ = 0;
};

}  // namespace kura::ipc::detail
