// The dispatcher: one event loop that hands tasks from clients to worker
// processes over Unix sockets (DESIGN.md section 4). Tasks carry kura names,
// so only names cross the sockets; small inline values are copied.
//
// Workers say in their hello which functions they have. Scheduling is FIFO
// to the next free worker that has the task's function. A task whose
// function no worker has announced since the dispatcher started ends at
// once as an "unknown function" error, unless it asked to wait for such a
// worker (TaskOptions::wait_for_worker); before any worker has connected,
// and for a function whose workers are all gone for the moment (being
// replaced), tasks wait. The queue has an optional cap in bytes of queued payload
// that is exact: the bytes in the queue never exceed it. A submit that does
// not fit waits (in order) until room frees; a try-submit is answered "full"
// at once. Every task ends in exactly one result: its value or error,
// timeout, cancelled, or worker-lost.
//
// Liveness: workers send heartbeats from their loop (never from the running
// function); a worker silent for heartbeat_timeout_ms is dropped (its task
// retried or worker-lost; a managed one is killed and replaced). The
// dispatcher sends heartbeats to TCP workers too, which drop a dispatcher
// silent as long and reconnect (WorkerOptions::reconnect_ms); stopping, it
// tells its workers so before it closes their connections, so that they
// exit instead of reconnecting. A managed
// worker that dies without finishing a task since it was ready (a crash
// loop, a task that kills every worker) is replaced after a delay that
// doubles up to 5 s; one that did useful work is replaced at once.
//
// Bounds: connections (max_connections), the time to say hello
// (hello_timeout_ms) and the size of a hello (64 KiB), a partial frame that
// stops arriving (partial_frame_timeout_ms), stored everywhere() calls
// (max_setup_calls, max_setup_bytes), retries (kMaxRetries). Running out
// of descriptors refuses new connections with a logged reason and keeps
// serving the others. Connections that send anything malformed (a bad
// frame, an oversized length, a bad name) are closed with a logged reason,
// and no other connection notices.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "kura/core/status.hpp"
#include "kura/ipc/frame.hpp"

namespace kura::ipc {

// The most DispatcherOptions::worker_window may be.
inline constexpr std::uint32_t kMaxWorkerWindow = 1024;

struct DispatcherOptions {
  // The socket to listen on, in a directory of this user's with mode 0700.
  // Empty: default_socket_path().
  std::string socket_path;
  // A second listener, for workers on other hosts: "tcp://HOST:PORT" (HOST
  // a numeric IPv4 address, or an IPv6 one in brackets; port 0 picks a free
  // port, see Dispatcher::tcp_address()). Empty: none. Every connection on
  // it must prove the secret of `secret_file` (and the dispatcher proves it
  // back) before its first frame; clients are refused there (they connect
  // on the Unix socket), and its workers are never taken as managed ones.
  std::string tcp_listen;
  // The shared secret for tcp_listen (write_secret_file in
  // kura/ipc/secret.hpp makes one): required with tcp_listen, loopback
  // included; read once at start.
  std::string secret_file;
  // Local worker processes to start and keep running (a dead one is
  // replaced); 0 for none (workers connect by themselves).
  unsigned workers = 0;
  // The command that starts one worker; every "{socket}" is replaced by the
  // socket path. Empty: this executable with "worker --connect {socket}"
  // (right for the kura tool and for programs that run Worker::main). The
  // process gets its start token in KURA_WORKER_TOKEN, which Worker::run
  // sends back in its hello: that, not its pid, tells the dispatcher which
  // of its processes a connection is.
  std::vector<std::string> worker_command;
  // How many tasks a worker holds at once: the one it runs and those sent
  // to wait behind it on the worker, so that it starts the next without a
  // round trip to the dispatcher (many small tasks run up to several times
  // faster). 1: a worker is sent a task only when it has reported the last.
  // A task sent to wait on a worker may wait there behind a long one while
  // another worker is free, so more than 1 suits many short tasks. A
  // worker is given a second task only when no worker with the function is
  // idle. A timeout or a cancel ends a waiting task at once; one whose worker
  // is lost counts as running there (the dispatcher cannot know it had not
  // started): it uses up a retry or ends worker-lost.
  // At most kMaxWorkerWindow (Dispatcher::start says InvalidArgument).
  std::uint32_t worker_window = 1;
  // Cap on the payload bytes of queued tasks; 0: no cap.
  std::uint64_t memory = 0;
  // The largest frame payload accepted from a peer.
  std::uint32_t frame_limit = kDefaultFrameLimit;
  // Remove orphaned regions (whose owner is dead) when starting.
  bool prune_at_start = true;
  // How often workers send heartbeats, and how long a worker may be silent
  // before it is dropped.
  std::uint32_t heartbeat_ms = 500;
  std::uint32_t heartbeat_timeout_ms = 5000;
  // A worker told to stop a task (cancelled, timed out) that still runs it
  // this long after is dropped (a managed one is killed and replaced): a
  // function that neither polls its cancel token nor yields to the signal
  // must not keep its worker from every later task.
  std::uint32_t cancel_grace_ms = 10000;
  // How long a new connection has to say hello.
  std::uint32_t hello_timeout_ms = 5000;
  // A frame that has begun arriving and receives no byte for this long
  // closes its connection.
  std::uint32_t partial_frame_timeout_ms = 10000;
  // The most connections (clients and workers) at once; 0: the descriptor
  // limit (RLIMIT_NOFILE) less 32 for the dispatcher's own use. At most a
  // quarter of them (at least 4) may be new connections that have not said
  // hello yet: past that the oldest of those is closed.
  std::uint32_t max_connections = 0;
  // Results written to clients that the kernel has not taken yet (clients
  // that do not read), over all clients: past this bound the client with the
  // most waiting is disconnected, its tasks cancelled and the result regions
  // it was not sent removed. One client alone may have at most
  // max(64 MiB, 4 x frame_limit) waiting.
  std::uint64_t max_client_backlog = 256u << 20;
  // everywhere() calls are kept (to run on workers that connect later) until
  // the client that made them disconnects; at most this many, with payloads
  // of at most this many bytes in all. A call past either bound fails.
  std::uint32_t max_setup_calls = 64;
  std::uint64_t max_setup_bytes = 16u << 20;
  // A file to append the spans of traced tasks to (TaskOptions::traceparent),
  // in OpenTelemetry's OTLP/JSON, one line per task; empty: none. Tasks
  // without a traceparent are never measured.
  std::string trace_path;
  // Where log lines go (connections refused or closed and why, workers
  // started and lost). Empty: standard error, prefixed "kura dispatcher: ".
  std::function<void(const std::string&)> log;
};

// The default socket: dispatcher.sock in $XDG_RUNTIME_DIR/kura, else in
// /tmp/kura-<uid> (created 0700). Errors: Permission (a directory that is a
// symlink, another user's, or open to others), Io.
Result<std::string> default_socket_path() noexcept;

// A dispatcher running on a thread of its own (the embedded mode, as in
// kura demo). Destroying it stops it: clients see their pending tasks end
// as disconnected, managed workers exit. A forked child does not have the
// thread: there stop() and destruction do nothing.
class Dispatcher {
 public:
  // Starts the dispatcher on a new thread and returns once it listens.
  // Errors: InvalidArgument (options; tcp_listen without secret_file),
  // Exists (another dispatcher listens on the socket), Permission (socket
  // directory; a secret file that is a symlink, another user's or open to
  // group or other), Io, OutOfMemory.
  static Result<std::unique_ptr<Dispatcher>> start(DispatcherOptions options) noexcept;

  // Runs a dispatcher on the calling thread (the kura dispatcher command)
  // until SIGINT or SIGTERM arrives, which it handles when `handle_signals`.
  // `on_listening` is called once it listens, with the socket path, then
  // with the TCP listener's address if there is one ("tcp://127.0.0.1:4000").
  // Errors: as start().
  static Status run(DispatcherOptions options,
                    std::function<void(const std::string& socket)> on_listening = {},
                    bool handle_signals = true) noexcept;

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  ~Dispatcher();

  // Stops the dispatcher and waits for its thread. Thread-safe; idempotent.
  void stop() noexcept;
  const std::string& socket_path() const noexcept { return socket_path_; }
  // The address the TCP listener got ("tcp://127.0.0.1:40123"), or empty
  // without one.
  const std::string& tcp_address() const noexcept { return tcp_address_; }

 private:
  struct Core;
  Dispatcher() = default;
  std::shared_ptr<Core> core_;
  std::thread thread_;
  std::string socket_path_;
  std::string tcp_address_;
  int pid_ = 0;  // the process that started it
};

}  // namespace kura::ipc
