// A child process for the tool tests: started with posix_spawn, its stdin,
// stdout and stderr on pipes, every wait bounded by a deadline (poll on the
// pipes and on a pidfd; no sleeps). The destructor kills (SIGKILL) and reaps
// a child that is still running, so a failing test never leaves one behind.
#pragma once

#include <sys/types.h>

#include <chrono>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace kura::test {

// Where a child's standard output goes.
enum class Stdout {
  kPipe,     // a pipe the test reads (read_line, out())
  kClosed,   // descriptor 1 closed, as `>&-` in a shell
  kDevFull,  // /dev/full: every write fails with ENOSPC
};

class Process {
 public:
  // Starts `argv[0]` with `argv`. Throws std::runtime_error when it cannot.
  explicit Process(const std::vector<std::string>& argv, Stdout stdout_to = Stdout::kPipe);
  ~Process();
  Process(const Process&) = delete;
  Process& operator=(const Process&) = delete;

  pid_t pid() const { return pid_; }

  // Writes `input` to the child's stdin, then closes it. Throws on timeout.
  void send(std::string_view input, std::chrono::milliseconds timeout = std::chrono::seconds(20));
  // Closes the child's stdin.
  void close_stdin();

  // The next line of stdout without its newline, or nullopt when the child
  // closed stdout or `timeout` passed first.
  std::optional<std::string> read_line(std::chrono::milliseconds timeout);

  // Waits until some stdout has arrived (kept in out()); false on timeout or
  // when stdout closed with nothing read.
  bool read_some(std::chrono::milliseconds timeout);

  // Waits until what the child wrote to stderr holds `text` at least
  // `times` times; false when `timeout` passed first or stderr closed.
  bool wait_err(std::string_view text, std::chrono::milliseconds timeout, std::size_t times = 1);

  // Sends `sig` to the child by pid.
  void signal(int sig);

  // Reads stdout and stderr to their end and waits for the child to exit.
  // Returns its exit code, or 128 + the signal that killed it; nullopt when
  // `timeout` passed first (the child is then still running).
  std::optional<int> wait(std::chrono::milliseconds timeout = std::chrono::seconds(20));

  // Everything read from stdout (after the lines read_line returned) and
  // stderr so far.
  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  // Polls the open pipes (and the pidfd when `want_exit`) once, up to
  // `timeout_ms`; false on timeout.
  bool pump(int timeout_ms, bool want_exit);
  // Reads what is there from `fd` (out_fd_ or err_fd_), closing it at EOF.
  void drain(int& fd);

  pid_t pid_ = -1;
  int pidfd_ = -1;
  int in_ = -1, out_fd_ = -1, err_fd_ = -1;
  bool exited_ = false;
  int status_ = 0;
  std::string out_, err_;
};

struct RunResult {
  int code = -1;
  std::string out, err;
};

// Runs argv to completion with `input` on stdin; FAILs the test (via
// exception) when it does not finish within `timeout`.
RunResult run(const std::vector<std::string>& argv, std::string_view input = {},
              std::chrono::milliseconds timeout = std::chrono::seconds(30));

}  // namespace kura::test
