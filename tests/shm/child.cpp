#include "child.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <memory>
#include <stdexcept>

namespace kura::test {

namespace {
std::string g_self_exe;  // NOLINT: set once by main
}

const std::string& self_exe() {
  return g_self_exe;
}
void set_self_exe(std::string path) {
  g_self_exe = std::move(path);
}

Child Child::helper(const std::vector<std::string>& args) {
  std::vector<std::string> argv{self_exe(), "--helper"};
  argv.insert(argv.end(), args.begin(), args.end());
  return spawn(argv);
}

Child Child::spawn(const std::vector<std::string>& argv) {
  int to_child[2], from_child[2];
  if (::pipe2(to_child, O_CLOEXEC) != 0 || ::pipe2(from_child, O_CLOEXEC) != 0)
    throw std::runtime_error(std::string("pipe: ") + std::strerror(errno));
  Child c;
  for (const auto& a : argv) c.what_ += (c.what_.empty() ? "" : " ") + a;
  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = ::fork();
  if (pid < 0) throw std::runtime_error(std::string("fork: ") + std::strerror(errno));
  if (pid == 0) {
    ::dup2(to_child[0], 0);
    ::dup2(from_child[1], 1);
    ::execvp(args[0], args.data());
    ::_exit(127);
  }
  ::close(to_child[0]);
  ::close(from_child[1]);
  c.pid_ = pid;
  c.in_ = to_child[1];
  c.out_ = from_child[0];
  return c;
}

Child::Child(Child&& o) noexcept
    : what_(std::move(o.what_)),
      pid_(o.pid_),
      in_(o.in_),
      out_(o.out_),
      buffer_(std::move(o.buffer_)),
      eof_(o.eof_) {
  o.pid_ = -1;
  o.in_ = -1;
  o.out_ = -1;
}

Child::~Child() {
  if (in_ >= 0) ::close(in_);
  if (out_ >= 0) ::close(out_);
  if (pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, nullptr, 0);
  }
}

bool Child::fill(int timeout_ms) {
  pollfd p{out_, POLLIN, 0};
  int rc;
  do {
    rc = ::poll(&p, 1, timeout_ms);
  } while (rc < 0 && errno == EINTR);
  if (rc == 0) return false;
  char buf[4096];
  ssize_t n = ::read(out_, buf, sizeof buf);
  if (n <= 0) {
    eof_ = true;
  } else {
    buffer_.append(buf, static_cast<std::size_t>(n));
  }
  return true;
}

std::string Child::read_line(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  for (;;) {
    auto nl = buffer_.find('\n');
    if (nl != std::string::npos) {
      std::string line = buffer_.substr(0, nl);
      buffer_.erase(0, nl + 1);
      return line;
    }
    if (eof_)
      throw std::runtime_error("helper `" + what_ + "` exited before writing a line (partial output: '" +
                               buffer_ + "'); see its stderr above");
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !fill(static_cast<int>(left.count())))
      throw std::runtime_error("helper `" + what_ + "` wrote no line within " + std::to_string(timeout_ms) +
                               " ms (partial output: '" + buffer_ + "')");
  }
}

std::vector<std::string> Child::read_all(int timeout_ms) {
  std::vector<std::string> lines;
  for (;;) {
    try {
      lines.push_back(read_line(timeout_ms));
    } catch (const std::runtime_error&) {
      if (eof_) return lines;
      throw;
    }
  }
}

void Child::send(const std::string& line) {
  std::string s = line + "\n";
  if (::write(in_, s.data(), s.size()) != static_cast<ssize_t>(s.size()))
    throw std::runtime_error("cannot write to helper `" + what_ + "`: " + std::strerror(errno));
}

void Child::close_input() {
  if (in_ >= 0) ::close(in_);
  in_ = -1;
}

int Child::wait(int timeout_ms) {
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::milliseconds(timeout_ms);
  while (!eof_) {
    auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0 || !fill(static_cast<int>(left.count())))
      throw std::runtime_error("helper `" + what_ + "` did not exit within " + std::to_string(timeout_ms) +
                               " ms");
  }
  int status = 0;
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

int Child::kill_and_wait(int sig) {
  int status = 0;
  ::kill(pid_, sig);
  ::waitpid(pid_, &status, 0);
  pid_ = -1;
  return status;
}

std::optional<HelperRun> helper_on_private_tmpfs(const std::string& source, const std::string& options,
                                                 const std::vector<std::string>& args,
                                                 const std::string& what) {
  // $0 is this binary and "$@" the helper's arguments: nothing is quoted
  // into the script but the mount source and options, which tests choose.
  const std::string script =
      "mount -t tmpfs -o " + options + " '" + source +
      "' \"$KURA_SHM_DIR\" || { echo 'cannot-mount'; exit 0; }; exec \"$0\" --helper \"$@\"";
  std::vector<std::string> argv = {"unshare", "-m", "sh", "-c", script, self_exe()};
  argv.insert(argv.end(), args.begin(), args.end());
  std::unique_ptr<Child> c;
  try {
    c = std::make_unique<Child>(Child::spawn(argv));
  } catch (const std::exception& e) {
    WARN("SKIPPED: cannot start unshare (" << e.what() << "); " << what << " NOT tested");
    return std::nullopt;
  }
  HelperRun run;
  run.lines = c->read_all();
  run.status = c->wait();
  if (run.lines.empty() || run.lines[0] == "cannot-mount") {
    WARN(
        "SKIPPED: this machine does not allow a private mount namespace with its own tmpfs "
        "(unshare -m / mount tmpfs failed: needs root or CAP_SYS_ADMIN); "
        << what << " NOT tested");
    return std::nullopt;
  }
  return run;
}

}  // namespace kura::test
