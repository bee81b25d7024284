#include "process.hpp"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>

extern char** environ;

namespace kura::test {

namespace {

using Clock = std::chrono::steady_clock;

int remaining_ms(Clock::time_point deadline) {
  auto left = std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()).count();
  return left < 0 ? 0 : static_cast<int>(left);
}

void close_fd(int& fd) {
  if (fd >= 0) ::close(fd);
  fd = -1;
}

[[noreturn]] void sys_fail(const std::string& what) {
  throw std::runtime_error(what + ": " + std::strerror(errno));
}

}  // namespace

Process::Process(const std::vector<std::string>& argv, Stdout stdout_to) {
  // A child that exits before reading all its input must not kill the test.
  ::signal(SIGPIPE, SIG_IGN);
  int in[2], out[2], err[2];
  if (::pipe2(in, O_CLOEXEC) != 0 || ::pipe2(out, O_CLOEXEC) != 0 || ::pipe2(err, O_CLOEXEC) != 0)
    sys_fail("pipe2");
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  posix_spawn_file_actions_adddup2(&fa, in[0], 0);
  switch (stdout_to) {
    case Stdout::kPipe: posix_spawn_file_actions_adddup2(&fa, out[1], 1); break;
    case Stdout::kClosed: posix_spawn_file_actions_addclose(&fa, 1); break;
    case Stdout::kDevFull: posix_spawn_file_actions_addopen(&fa, 1, "/dev/full", O_WRONLY, 0); break;
  }
  posix_spawn_file_actions_adddup2(&fa, err[1], 2);
  // The child starts with default signal dispositions and an empty mask.
  posix_spawnattr_t attr;
  posix_spawnattr_init(&attr);
  sigset_t none, all;
  sigemptyset(&none);
  sigfillset(&all);
  posix_spawnattr_setsigmask(&attr, &none);
  posix_spawnattr_setsigdefault(&attr, &all);
  posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF);

  std::vector<char*> args;
  for (const auto& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  int rc = ::posix_spawn(&pid_, args[0], &fa, &attr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  posix_spawnattr_destroy(&attr);
  ::close(in[0]);
  ::close(out[1]);
  ::close(err[1]);
  in_ = in[1];
  out_fd_ = out[0];
  err_fd_ = err[0];
  if (stdout_to != Stdout::kPipe) close_fd(out_fd_);
  if (rc != 0) {
    errno = rc;
    close_fd(in_);
    close_fd(out_fd_);
    close_fd(err_fd_);
    sys_fail("posix_spawn " + argv[0]);
  }
  pidfd_ = static_cast<int>(::syscall(SYS_pidfd_open, pid_, 0));
  if (pidfd_ < 0) sys_fail("pidfd_open");
  ::fcntl(in_, F_SETFL, O_NONBLOCK);
}

Process::~Process() {
  if (!exited_ && pid_ > 0) {
    ::kill(pid_, SIGKILL);
    ::waitpid(pid_, &status_, 0);
  }
  close_fd(in_);
  close_fd(out_fd_);
  close_fd(err_fd_);
  close_fd(pidfd_);
}

void Process::close_stdin() {
  close_fd(in_);
}

void Process::send(std::string_view input, std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (!input.empty() && in_ >= 0) {
    ssize_t n = ::write(in_, input.data(), input.size());
    if (n > 0) {
      input.remove_prefix(static_cast<std::size_t>(n));
      continue;
    }
    if (n < 0 && errno == EPIPE) break;  // the child stopped reading; its exit code will say why
    if (n < 0 && errno != EAGAIN && errno != EINTR) sys_fail("write to the child's stdin");
    // Wait for room, draining the child's output meanwhile so that it cannot
    // block on a full pipe of its own.
    pollfd fds[3];
    nfds_t k = 0;
    fds[k++] = {in_, POLLOUT, 0};
    if (out_fd_ >= 0) fds[k++] = {out_fd_, POLLIN, 0};
    if (err_fd_ >= 0) fds[k++] = {err_fd_, POLLIN, 0};
    int rc = ::poll(fds, k, remaining_ms(deadline));
    if (rc < 0 && errno != EINTR) sys_fail("poll");
    if (rc == 0) throw std::runtime_error("timed out writing to the child's stdin");
    for (nfds_t i = 1; i < k; ++i)
      if (fds[i].revents) drain(fds[i].fd == out_fd_ ? out_fd_ : err_fd_);
  }
  close_stdin();
}

void Process::drain(int& fd) {
  char buf[65536];
  ssize_t got = ::read(fd, buf, sizeof buf);
  if (got > 0)
    (&fd == &out_fd_ ? out_ : err_).append(buf, static_cast<std::size_t>(got));
  else if (got == 0 || (errno != EINTR && errno != EAGAIN))
    close_fd(fd);
}

void Process::signal(int sig) {
  if (!exited_) ::kill(pid_, sig);
}

bool Process::pump(int timeout_ms, bool want_exit) {
  pollfd fds[3];
  int n = 0;
  if (out_fd_ >= 0) fds[n++] = {out_fd_, POLLIN, 0};
  if (err_fd_ >= 0) fds[n++] = {err_fd_, POLLIN, 0};
  if (want_exit && !exited_) fds[n++] = {pidfd_, POLLIN, 0};
  if (n == 0) return true;
  int rc = ::poll(fds, static_cast<nfds_t>(n), timeout_ms);
  if (rc < 0 && errno == EINTR) return true;
  if (rc < 0) sys_fail("poll");
  if (rc == 0) return false;
  for (int i = 0; i < n; ++i) {
    if (!fds[i].revents) continue;
    if (fds[i].fd == pidfd_) {
      if (::waitpid(pid_, &status_, WNOHANG) == pid_) exited_ = true;
      continue;
    }
    drain(fds[i].fd == out_fd_ ? out_fd_ : err_fd_);
  }
  return true;
}

std::optional<std::string> Process::read_line(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  for (;;) {
    if (auto nl = out_.find('\n'); nl != std::string::npos) {
      std::string line = out_.substr(0, nl);
      out_.erase(0, nl + 1);
      return line;
    }
    if (out_fd_ < 0) return std::nullopt;
    if (!pump(remaining_ms(deadline), false)) return std::nullopt;
  }
}

bool Process::wait_err(std::string_view text, std::chrono::milliseconds timeout, std::size_t times) {
  const auto deadline = Clock::now() + timeout;
  auto count = [&] {
    std::size_t n = 0;
    for (auto at = err_.find(text); at != std::string::npos; at = err_.find(text, at + 1)) ++n;
    return n;
  };
  while (count() < times) {
    if (err_fd_ < 0) return false;
    if (!pump(remaining_ms(deadline), false)) return false;
  }
  return true;
}

bool Process::read_some(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  while (out_.empty()) {
    if (out_fd_ < 0) return false;
    if (!pump(remaining_ms(deadline), false)) return false;
  }
  return true;
}

std::optional<int> Process::wait(std::chrono::milliseconds timeout) {
  const auto deadline = Clock::now() + timeout;
  close_stdin();
  while (!exited_ || out_fd_ >= 0 || err_fd_ >= 0) {
    if (!pump(remaining_ms(deadline), true)) return std::nullopt;
  }
  if (WIFEXITED(status_)) return WEXITSTATUS(status_);
  if (WIFSIGNALED(status_)) return 128 + WTERMSIG(status_);
  return -1;
}

RunResult run(const std::vector<std::string>& argv, std::string_view input,
              std::chrono::milliseconds timeout) {
  Process p(argv);
  p.send(input, timeout);
  auto code = p.wait(timeout);
  std::string cmd;
  for (const auto& a : argv) cmd += (cmd.empty() ? "" : " ") + a;
  if (!code)
    throw std::runtime_error("`" + cmd + "` did not finish within " + std::to_string(timeout.count()) +
                             " ms; stderr so far: " + p.err());
  return RunResult{*code, p.out(), p.err()};
}

}  // namespace kura::test
