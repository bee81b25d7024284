// The subcommands of the `kura` tool (DESIGN.md section 5). Each returns the
// process exit code and reports errors on stderr as "kura: <message>".
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "kura/core/status.hpp"

namespace kura::tool {

// Exit codes of DESIGN.md section 5.
enum ExitCode : int {
  kExitOk = 0,
  kExitError = 1,  // anything else
  kExitUsage = 2,  // usage, invalid name, invalid typed JSON
  kExitNotFound = 3,
  kExitCorrupt = 4,     // including a failed verify and an unsupported version
  kExitOutOfRange = 5,  // out of range or not a list
  kExitNoSpace = 6,
};

// The exit code for an error of code `code`.
int exit_code_for(Code code) noexcept;

// Prints "kura: <context>: <status>" to stderr and returns its exit code.
int fail(const Status& status, const std::string& context = "");

// Installs the SIGBUS handler: a region truncated by a same-user process
// while this one reads it makes the tool exit 4 with a message.
void install_sigbus_handler() noexcept;

// Opens /dev/null on each of descriptors 0, 1 and 2 that is closed, so that
// no file the tool opens later takes its number (the name `put` prints
// would otherwise go into whatever file got descriptor 1). Call it first.
// Returns whether standard output (1) was closed.
bool reopen_closed_standard_descriptors() noexcept;

// `put` refuses to start when `stdout_closed`: the region's name could never
// be printed. A kept region whose name cannot be printed is removed again.
int cmd_put(const std::string& file, bool keep, bool stdout_closed);
int cmd_get(const std::string& name, bool json, bool all);
int cmd_inspect(const std::string& name, bool all);
int cmd_verify(const std::string& name);
int cmd_ls(bool json);
int cmd_rm(const std::string& name);
int cmd_prune();

// The dispatcher subcommands (ipc_commands.cpp).
struct DispatcherArgs {
  std::string socket;
  unsigned workers = 0;
  std::uint64_t memory = 0;
  std::uint32_t frame_limit = 0;           // 0: the default
  std::uint32_t heartbeat_timeout_ms = 0;  // 0: the default
  std::uint32_t cancel_grace_ms = 0;       // 0: the default
  std::string trace_path;
  std::uint32_t hello_timeout_ms = 0;  // 0: the default
  std::uint32_t max_connections = 0;   // 0: the default
  std::uint32_t worker_window = 1;     // DispatcherOptions::worker_window
  std::string worker_command;          // words separated by spaces; empty: the default
  std::string tcp_listen;              // empty: no TCP listener
  std::string secret_file;
};
struct SubmitArgs {
  std::string socket;
  std::string fn;
  std::vector<std::string> args;
  std::uint64_t timeout_ms = 0;
  bool json = false;
  bool keep = false;
  bool wait_for_worker = false;
  std::string traceparent;
};
int cmd_dispatcher(const DispatcherArgs& args);
struct WorkerArgs {
  std::string socket;
  std::string secret_file;
  std::string fingerprint;
  bool tls = false;
  std::vector<std::string> plugins;
  // Below 0: WorkerOptions::reconnect_ms's default.
  double reconnect_for_s = -1;
};
int cmd_worker(const WorkerArgs& args);
int cmd_secret(const std::string& path);
int cmd_status(const std::string& socket, bool json);
int cmd_submit(const SubmitArgs& args);

// kura demo (demo.cpp).
struct DemoArgs {
  std::uint64_t rows = 8u << 20;  // 8 columns of 8 Mi doubles: 512 MiB
  unsigned cols = 8;
  bool json = false;
};
int cmd_demo(const DemoArgs& args);

}  // namespace kura::tool
