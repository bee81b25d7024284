// The dispatcher: one event loop that hands tasks from clients to worker
// processes over Unix sockets (DESIGN.md section 4). Tasks carry kura names,
// so only names cross the sockets; small inline values are copied.
//
// Scheduling is FIFO to the next free worker. The queue has an optional cap in
// bytes of queued payload that is exact: the bytes in the queue never exceed
// it. A submit that does not fit waits (in order) until room frees; a
// try-submit is answered "full" at once. Every task ends in exactly one
// result: its value or error, timeout, cancelled, or worker-lost. A worker
// that dies is replaced when the dispatcher manages the pool; a worker whose
// dispatcher goes away exits. Connections that send anything malformed (a
// bad frame, an oversized length, a bad name) are closed with a logged
// reason, and no other connection notices.
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

struct DispatcherOptions {
  // The socket to listen on, in a directory of this user's with mode 0700.
  // Empty: default_socket_path().
  std::string socket_path;
  // Local worker processes to start and keep running (a dead one is
  // replaced); 0 for none (workers connect by themselves).
  unsigned workers = 0;
  // The command that starts one worker; every "{socket}" is replaced by the
  // socket path. Empty: this executable with "worker --connect {socket}"
  // (right for the kura tool and for programs that run Worker::main).
  std::vector<std::string> worker_command;
  // Cap on the payload bytes of queued tasks; 0: no cap.
  std::uint64_t memory = 0;
  // The largest frame payload accepted from a peer.
  std::uint32_t frame_limit = kDefaultFrameLimit;
  // Remove orphaned regions (whose owner is dead) when starting.
  bool prune_at_start = true;
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
  // Errors: InvalidArgument (options), Exists (another dispatcher listens
  // on the socket), Permission (socket directory), Io, OutOfMemory.
  static Result<std::unique_ptr<Dispatcher>> start(DispatcherOptions options) noexcept;

  // Runs a dispatcher on the calling thread (the kura dispatcher command)
  // until SIGINT or SIGTERM arrives, which it handles when `handle_signals`.
  // `on_listening` is called once it listens. Errors: as start().
  static Status run(DispatcherOptions options,
                    std::function<void(const std::string& socket)> on_listening = {},
                    bool handle_signals = true) noexcept;

  Dispatcher(const Dispatcher&) = delete;
  Dispatcher& operator=(const Dispatcher&) = delete;
  ~Dispatcher();

  // Stops the dispatcher and waits for its thread. Thread-safe; idempotent.
  void stop() noexcept;
  const std::string& socket_path() const noexcept { return socket_path_; }

 private:
  struct Core;
  Dispatcher() = default;
  std::shared_ptr<Core> core_;
  std::thread thread_;
  std::string socket_path_;
  int pid_ = 0;  // the process that started it
};

}  // namespace kura::ipc
