// Child: a helper process for multi-process tests, talked to over pipes.
//
// The child's stdin and stdout are pipes; it writes one line per event
// ("ready", a name, ...) and the test waits for each line with a bounded
// poll(), never a sleep. A Child that goes out of scope is killed by pid and
// reaped, so a failing test leaves no process behind.
#pragma once

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

namespace kura::test {

// The path of this test binary (set by main from /proc/self/exe).
const std::string& self_exe();
void set_self_exe(std::string path);

class Child {
 public:
  // Starts `kura_shm_tests --helper <args...>`.
  static Child helper(const std::vector<std::string>& args);
  // Starts `argv` (argv[0] is looked up on PATH).
  static Child spawn(const std::vector<std::string>& argv);

  Child(Child&& other) noexcept;
  Child& operator=(Child&&) = delete;
  ~Child();

  pid_t pid() const { return pid_; }
  // The next line of the child's output, without the newline. Throws
  // std::runtime_error naming the helper when no line comes within
  // `timeout_ms` or the child closes its output first.
  std::string read_line(int timeout_ms = 20000);
  // Every remaining line until the child closes its output (bounded).
  std::vector<std::string> read_all(int timeout_ms = 20000);
  void send(const std::string& line);
  // Closes the child's stdin: helpers take that as "finish now".
  void close_input();
  // Waits (bounded) for the child to close its output, then reaps it and
  // returns its wait status.
  int wait(int timeout_ms = 20000);
  // Sends `sig` and reaps the child.
  int kill_and_wait(int sig);

 private:
  Child() = default;
  std::string what_;
  pid_t pid_ = -1;
  int in_ = -1;
  int out_ = -1;
  std::string buffer_;
  bool eof_ = false;
  bool fill(int timeout_ms);  // false on timeout
};

// What a helper printed, and how it ended (a wait status).
struct HelperRun {
  std::vector<std::string> lines;
  int status = 0;
};

// Runs `kura_shm_tests --helper <args...>` in a private mount namespace,
// with a tmpfs mounted over its region directory (`mount -t tmpfs -o
// <options> <source>`), so that the real /dev/shm is never filled. Where the
// machine allows no such namespace (unshare -m or mount needs root or
// CAP_SYS_ADMIN) it WARNs that `what` was NOT tested and returns nullopt.
std::optional<HelperRun> helper_on_private_tmpfs(const std::string& source, const std::string& options,
                                                 const std::vector<std::string>& args,
                                                 const std::string& what);

}  // namespace kura::test
