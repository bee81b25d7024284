// Workers: processes that run functions from a registry for the dispatcher
// (DESIGN.md section 4). A function receives mapped views of its arguments
// (a name argument is mapped read-only, nothing copied) and returns a value,
// which the worker writes as a region owned by the client, holding the
// client's lease while it writes (DESIGN.md section 3), or sends inline when
// it is small.
//
// Built-in functions (for tests, the demo and benchmarks):
//   echo(x...)         the arguments, copied (one: itself; none: null)
//   length(x)          the length of x (elements, strings or children), as a u64
//   sum(x)             the sum of an f64 array, as an f64 of length 1
//   colmeans(list)     the mean of each f64 column of a list, as an f64 array
//   scale(x, k)        a new region holding the f64 array x times k
//   sleep(seconds)     waits, returning early when cancelled
//   fail([message])    returns an error
//   crash()            aborts the worker process
//   standardise(x)     (x - mean) / sd of an f64 array, as a new region
//   summary(x)         n, mean, sd, min, max of an f64 array (named)
//   combine(s...)      summaries stacked into a table: a list of five f64
//                      columns n, mean, sd, min, max, one row per summary
#pragma once

#include <atomic>
#include <chrono>
#include <csignal>
#include <cstdint>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <variant>
#include <vector>

#include "kura/core/status.hpp"
#include "kura/core/value.hpp"
#include "kura/core/view.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

// What a function returns: a value (the worker writes it inline when small,
// else as a region for the client), or a region the function wrote in place
// itself (TaskContext::result_region).
class Output {
 public:
  Output(Value value) : v_(std::move(value)) {}          // NOLINT: implicit by design
  Output(shm::Shared region) : v_(std::move(region)) {}  // NOLINT: implicit by design
  bool is_region() const noexcept { return v_.index() == 1; }
  Value& value() { return std::get<0>(v_); }
  shm::Shared& region() { return std::get<1>(v_); }

 private:
  std::variant<Value, shm::Shared> v_;
};

// The signal the dispatcher sends a worker to cancel the task it runs (with
// the task id as its value, through sigqueue). A worker process installs a
// handler for it; its default action is to be ignored.
inline constexpr int kCancelSignal = SIGURG;

// A function's view of its task, valid while the function runs, on the
// thread that runs it.
class TaskContext {
 public:
  // The arguments in order: the mapped value of each name argument, or the
  // inline value. Each view keeps its memory alive.
  std::span<const NodeView> args() const noexcept { return args_; }
  // The name argument `i` is mapped by here, "" for an inline value (a host
  // that maps names its own way, as an R worker does, maps it again): the
  // task's name, or on a worker that pulled the bytes (a region directory
  // not the dispatcher's) the name of its local copy.
  // REQUIRES: i < args().size().
  const std::string& arg_name(std::size_t i) const noexcept { return names_[i]; }
  // The name the task gave argument `i` ("" for an inline value): differs
  // from arg_name(i) only on a worker that pulled a copy, where names
  // written inside other arguments (a serialized closure's) still say it.
  // REQUIRES: i < args().size().
  const std::string& arg_origin(std::size_t i) const noexcept { return origins_[i]; }
  // The owner the results belong to.
  std::uint64_t client_owner() const noexcept { return owner_; }
  // True when the client asked for the result inline (TaskOptions::
  // inline_result): a function that would write a region in place returns
  // a Value instead, which travels back copied through the sockets.
  bool wants_inline() const noexcept { return inline_; }
  // True once the task was cancelled or timed out; a long function checks it
  // and returns (its result is discarded).
  bool cancelled() const noexcept;
  // Waits `d`, or less when the task is cancelled meanwhile; true if cancelled.
  bool sleep_for(std::chrono::milliseconds d) const noexcept;
  // A region for the result, written in place (no copy): `layout` is planned
  // (arrays built in place are left for the function to fill) and created
  // for the client, holding its lease. Publish it and return the Shared.
  // `layout` must outlive the Pending. Errors: as shm::Pending::create,
  // NotFound (the client exited).
  Result<shm::Pending> result_region(const Value& layout) noexcept;

  struct Internals;  // how the worker makes one

 private:
  friend struct Internals;
  std::vector<NodeView> args_;
  std::vector<std::string> names_;
  std::vector<std::string> origins_;
  std::uint64_t owner_ = 0;
  bool inline_ = false;
  const Internals* in_ = nullptr;
};

using Function = std::function<Result<Output>(TaskContext& ctx)>;

// The registry a plugin adds its functions to.
class Registry {
 public:
  virtual ~Registry() = default;
  virtual void add(std::string name, Function fn) = 0;
};

// A plugin is a shared library that exports
//   extern "C" void kura_register_functions(kura::ipc::Registry& registry);
// which `kura worker --plugin lib.so` (WorkerOptions::plugins) calls once.
// It is compiled against kura's headers and links no kura library: kura's
// functions resolve against the worker executable, which exports them (the
// kura tool does; a program of one's own links with -rdynamic).
inline constexpr const char* kPluginEntry = "kura_register_functions";

struct WorkerOptions {
  // The dispatcher's endpoint: its Unix socket, or "tcp://HOST:PORT" (a
  // worker on another host; then secret_file is required).
  std::string socket_path;
  std::vector<std::string> plugins;
  // Results whose image is at most this many bytes are sent inline; larger
  // ones are written as regions for the client.
  std::uint64_t inline_limit = 64 * 1024;
  // Where log lines go. Empty: standard error, prefixed "kura worker: ".
  std::function<void(const std::string&)> log;
  // Run the functions on the thread that calls Worker::run, the loop on a
  // thread of its own: for a host whose code must run on its main thread
  // (an R worker). Otherwise they run on an executor thread and the loop on
  // the calling thread.
  bool run_on_calling_thread = false;
  // The signal sent to the thread running a function when its task is
  // cancelled (with the task id as its value). The worker handles
  // kCancelSignal itself; any other is left to the handler the host
  // installed (an R worker uses SIGINT, which R turns into an interrupt).
  int cancel_signal = kCancelSignal;
  // A worker whose dispatcher's regions are not on this host (another
  // host, or another region directory) pulls the bytes behind its tasks'
  // names and keeps the copies for later tasks, up to this many bytes
  // (least recently used out; the copy a task uses stays while it runs).
  std::uint64_t object_cache_bytes = std::uint64_t{1} << 30;
  // The shared secret file (kura/ipc/secret.hpp) a TCP endpoint's
  // dispatcher and this worker prove to each other; unused for a Unix one.
  std::string secret_file;
  // How long a worker whose connection dropped tries to connect again, in
  // milliseconds; 0: it exits when the connection closes. Empty: 60000 for
  // a tcp:// endpoint, 0 for a Unix socket (whose dispatcher is on this
  // host: when it goes, so does the worker). A drop is a connection that
  // closes without the dispatcher saying it stops (kGoodbye) or refusing
  // this worker: a reset, an end of stream, or a TCP dispatcher silent past
  // its heartbeat deadline (told in its welcome; it sends heartbeats too).
  std::optional<std::uint32_t> reconnect_ms;
  // The fingerprint of the dispatcher's certificate ("sha256:" and 64 hex
  // digits, as kura secret prints it), pinned when the connection is TLS:
  // another certificate is refused. TLS is used whenever the endpoint's
  // address is not loopback (then this is required: the worker refuses to
  // start without it), when `tls` is set, and when the dispatcher asks for
  // it (it does for a worker whose address it sees as not loopback). The
  // choice is part of the authenticated handshake: someone on the path
  // cannot turn it off.
  std::string fingerprint;
  // Use TLS on a loopback address too (a tunnel's end, tests, benchmarks);
  // needs `fingerprint`.
  bool tls = false;
};

class Worker {
 public:
  // Adds `fn` under `name` to this process's registry (replacing any).
  // Thread-safe. Errors: InvalidArgument (empty name), OutOfMemory.
  static Status add(std::string name, Function fn) noexcept;

  // Loads the plugins, connects to the dispatcher and runs its tasks, one at
  // a time, until the dispatcher goes away; returns ok then. The worker
  // announces the functions added before it connects. If a function is
  // still running when the dispatcher goes away, the process exits at once
  // (_exit(0)): a worker never outlives its dispatcher.
  //
  // With reconnect_ms, a connection that drops after the dispatcher once
  // welcomed this worker is opened again, with exponential back-off and
  // jitter (0.1 s doubling to 5 s), for at most reconnect_ms since the
  // drop; the worker then says hello again (the dispatcher sees a new
  // worker). A function running at the drop is cancelled (its task was
  // retried or resolved worker-lost by the dispatcher; its result is
  // dropped) and the worker reconnects once it returned; one that does not
  // return within reconnect_ms ends the process (_exit(1)). A refused hello,
  // a wrong secret and a dispatcher that sent what this worker cannot read
  // end it at once.
  //
  // Errors: NotFound (nobody listens at the socket), Permission, Io (also:
  // could not reconnect within reconnect_ms), InvalidArgument (a plugin that
  // cannot be loaded; a refused hello).
  static Status run(const WorkerOptions& options) noexcept;

  // For a program that is its own worker command (DispatcherOptions'
  // default re-runs this executable as "<exe> worker --connect SOCKET"):
  // call it first in main(); when the arguments are those it runs the
  // worker and returns the exit code, otherwise it returns nullopt.
  static std::optional<int> main(int argc, char** argv) noexcept;

  // The command that runs `exe` as a worker of the dispatcher whose endpoint
  // replaces "{socket}": {exe, "worker", "--connect", "{socket}"}, the form
  // main() and the kura tool take. The one place that form is written; the
  // default of DispatcherOptions::worker_command.
  static std::vector<std::string> command(const std::string& exe);
};

}  // namespace kura::ipc
