// kura launch ssh and kura launch slurm (launch.hpp).
#include "launch.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <iostream>

#include "commands.hpp"
#include "endpoint_internal.hpp"
#include "kura/ipc/secret.hpp"

extern char** environ;

namespace kura::tool {

namespace {

// What every launch needs: the endpoint, the secret checked to be a good
// one here, and the fingerprint of the certificate beside it.
struct Checked {
  ipc::detail::Endpoint endpoint;
  std::string secret_file;  // absolute
  std::string fingerprint;
};

bool has_control(std::string_view s) {
  for (char c : s)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) return true;
  return false;
}

bool is_loopback(const std::string& host) {
  in_addr a4{};
  if (::inet_pton(AF_INET, host.c_str(), &a4) == 1) return (ntohl(a4.s_addr) >> 24) == 127;
  in6_addr a6{};
  return ::inet_pton(AF_INET6, host.c_str(), &a6) == 1 && IN6_IS_ADDR_LOOPBACK(&a6);
}

Result<Checked> check(const LaunchArgs& a) {
  Checked c;
  KURA_ASSIGN_OR_RETURN(c.endpoint, ipc::detail::parse_endpoint(a.connect));
  if (c.endpoint.kind != ipc::detail::Endpoint::Kind::kTcp)
    return invalid_argument("--connect " + a.connect + ": workers on other hosts connect to tcp://HOST:PORT");
  if (c.endpoint.port == 0)
    return invalid_argument("--connect " + a.connect + ": give the port the dispatcher got");
  if (a.secret_file.empty())
    return invalid_argument("--secret-file is required (kura secret FILE makes one)");
  std::error_code ec;
  c.secret_file = std::filesystem::absolute(a.secret_file, ec).lexically_normal().string();
  if (ec) return invalid_argument("--secret-file " + a.secret_file + ": " + ec.message());
  if (has_control(c.secret_file)) return invalid_argument("--secret-file: a path with a control character");
  if (has_control(a.kura) || a.kura.empty())
    return invalid_argument("--kura: an empty path or one with a control character");
  // Refused here rather than on every host: a secret open to others, or no secret.
  KURA_ASSIGN_OR_RETURN(std::string secret, ipc::read_secret_file(c.secret_file));
  std::fill(secret.begin(), secret.end(), '\0');
  KURA_ASSIGN_OR_RETURN(c.fingerprint, ipc::certificate_fingerprint(ipc::certificate_path(c.secret_file)));
  return c;
}

// The words of a worker command.
std::string worker_words(const LaunchArgs& a, const std::string& endpoint, const std::string& secret_word,
                         const std::string& fingerprint, bool tls) {
  std::string w = shell_quote(a.kura) + " worker --connect " + shell_quote(endpoint) + " --secret-file " +
                  secret_word + " --fingerprint " + shell_quote(fingerprint);
  if (tls) w += " --tls";
  return w;
}

// Runs `argv` (found on PATH) with `stdin_fd` as its standard input (-1:
// this process's). Returns the pid, or -1 after printing why not.
pid_t spawn(const std::vector<std::string>& argv, int stdin_fd) {
  std::vector<char*> args;
  for (const std::string& s : argv) args.push_back(const_cast<char*>(s.c_str()));
  args.push_back(nullptr);
  posix_spawn_file_actions_t fa;
  posix_spawn_file_actions_init(&fa);
  if (stdin_fd >= 0) posix_spawn_file_actions_adddup2(&fa, stdin_fd, 0);
  pid_t pid = -1;
  const int rc = ::posix_spawnp(&pid, args[0], &fa, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&fa);
  if (rc != 0) {
    std::cerr << "kura: launch: cannot run " << argv[0] << ": " << std::strerror(rc) << std::endl;
    return -1;
  }
  return pid;
}

// Waits for `pid`; its exit code (128 + a signal that killed it).
int reap(pid_t pid) {
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (WIFEXITED(status)) return WEXITSTATUS(status);
  return 128 + (WIFSIGNALED(status) ? WTERMSIG(status) : 0);
}

}  // namespace

std::string shell_quote(std::string_view s) {
  auto safe = [](char c) {
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
           std::string_view("_@+=:,./-").find(c) != std::string_view::npos;
  };
  if (!s.empty() && s[0] != '=' && std::all_of(s.begin(), s.end(), safe)) return std::string(s);
  std::string out = "'";
  for (char c : s) {
    if (c == '\'') {
      out += "'\"'\"'";
    } else {
      out += c;
    }
  }
  return out + "'";
}

Result<std::vector<SshCommand>> ssh_commands(const LaunchArgs& a) {
  if (a.hosts.empty()) return invalid_argument("name at least one host");
  KURA_ASSIGN_OR_RETURN(Checked c, check(a));
  if (!a.tunnel && is_loopback(c.endpoint.host))
    return invalid_argument("--connect " + a.connect +
                            " is a loopback address, which a worker on another host cannot reach: give the "
                            "dispatcher's address on the network, or --tunnel to forward a port over SSH");
  // Through a tunnel the worker connects to its own loopback end, and asks
  // for TLS there: the stream is then encrypted from the worker to the
  // dispatcher, not only between the two SSH ends, and the forwarded port,
  // which any user of that host can reach, leads to nothing without the
  // pinned certificate's key.
  const std::uint16_t remote_port = a.remote_port != 0 ? a.remote_port : c.endpoint.port;
  const std::string endpoint =
      a.tunnel ? "tcp://127.0.0.1:" + std::to_string(remote_port) : c.endpoint.to_string();
  // One line (a C shell takes no newline in quotes), no single quote and no
  // backslash of its own: quoted once more for the remote login shell, it
  // reads the same in sh, csh and fish.
  const std::string script =
      "umask 077 && d=$(mktemp -d \"${TMPDIR:-/tmp}/kura-worker.XXXXXX\") || exit 1; "
      "cleanup() { rm -rf \"$d\"; }; trap cleanup EXIT; trap \"exit 129\" HUP; trap \"exit 143\" TERM; "
      "cat > \"$d/secret\" && " +
      worker_words(a, endpoint, "\"$d/secret\"", c.fingerprint, a.tunnel);
  std::vector<SshCommand> out;
  for (const std::string& host : a.hosts) {
    if (host.empty() || host[0] == '-' || has_control(host))
      return invalid_argument("host " + shell_quote(host) +
                              ": empty, starting with '-', or with a control character");
    SshCommand cmd;
    cmd.host = host;
    cmd.argv = {"ssh", "-T"};
    if (a.tunnel) {
      const std::string target =
          c.endpoint.host.find(':') != std::string::npos ? "[" + c.endpoint.host + "]" : c.endpoint.host;
      cmd.argv.insert(cmd.argv.end(), {"-o", "ExitOnForwardFailure=yes", "-R",
                                       "127.0.0.1:" + std::to_string(remote_port) + ":" + target + ":" +
                                           std::to_string(c.endpoint.port)});
    }
    cmd.argv.insert(cmd.argv.end(), {"--", host, "sh -c " + shell_quote(script)});
    for (const std::string& word : cmd.argv) cmd.line += (cmd.line.empty() ? "" : " ") + shell_quote(word);
    cmd.line += " < " + shell_quote(c.secret_file);
    out.push_back(std::move(cmd));
  }
  return out;
}

Result<std::string> slurm_script(const LaunchArgs& a) {
  KURA_ASSIGN_OR_RETURN(Checked c, check(a));
  if (is_loopback(c.endpoint.host))
    return invalid_argument("--connect " + a.connect +
                            " is a loopback address, which a job on a compute node cannot reach: give the "
                            "dispatcher's address on the cluster's network");
  std::string s = "#!/bin/sh\n#SBATCH --job-name=kura-worker\n";
  if (a.array > 0) s += "#SBATCH --array=1-" + std::to_string(a.array) + "\n";
  for (const std::string& o : a.options) {
    if (o.rfind("#SBATCH ", 0) != 0 || has_control(o))
      return invalid_argument("--option " + shell_quote(o) + ": one line starting with \"#SBATCH \"");
    s += o + "\n";
  }
  s += "# Written by kura launch slurm: one kura worker";
  s += a.array > 0 ? " per array task" : "";
  s += ", connecting back to the dispatcher\n"
       "# over TLS, pinning its certificate. The secret is not in this script (sbatch keeps\n"
       "# scripts): the worker reads it from the path below, which must be on a file system\n"
       "# the compute nodes share, and refuses it unless it is a regular file of this user\n"
       "# with mode 0600 or stricter.\n";
  s += "exec " + worker_words(a, c.endpoint.to_string(), shell_quote(c.secret_file), c.fingerprint, false) +
       "\n";
  return s;
}

int cmd_launch_ssh(const LaunchArgs& a) {
  auto cmds = ssh_commands(a);
  if (!cmds) return fail(cmds.status(), "launch ssh");
  if (!a.run) {
    for (const SshCommand& c : *cmds) std::cout << c.line << "\n";
    std::cout << std::flush;
    return kExitOk;
  }
  std::vector<std::pair<std::string, pid_t>> running;
  int code = kExitOk;
  for (const SshCommand& c : *cmds) {
    // Each ssh reads the secret from a descriptor of its own.
    const int fd = ::open(a.secret_file.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0)
      return fail(Status(Code::kIo, "cannot open " + a.secret_file + ": " + std::strerror(errno)),
                  "launch ssh");
    const pid_t pid = spawn(c.argv, fd);
    ::close(fd);
    if (pid < 0) {
      code = kExitError;
      break;
    }
    std::cerr << "kura: launch: started a worker on " << c.host << " (ssh pid " << pid << ")" << std::endl;
    running.emplace_back(c.host, pid);
  }
  for (const auto& [host, pid] : running) {
    const int rc = reap(pid);
    std::cerr << "kura: launch: the worker on " << host << " ended (ssh exit code " << rc << ")" << std::endl;
    if (rc != 0) code = kExitError;
  }
  return code;
}

int cmd_launch_slurm(const LaunchArgs& a) {
  auto script = slurm_script(a);
  if (!script) return fail(script.status(), "launch slurm");
  if (!a.run) {
    std::cout << *script << std::flush;
    return kExitOk;
  }
  int pipe_fds[2];
  if (::pipe2(pipe_fds, O_CLOEXEC) != 0)
    return fail(Status(Code::kIo, std::string("pipe: ") + std::strerror(errno)), "launch slurm");
  const pid_t pid = spawn({"sbatch"}, pipe_fds[0]);
  ::close(pipe_fds[0]);
  std::size_t done = 0;
  while (pid >= 0 && done < script->size()) {
    const ssize_t n = ::write(pipe_fds[1], script->data() + done, script->size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) break;
    done += static_cast<std::size_t>(n);
  }
  ::close(pipe_fds[1]);
  if (pid < 0) return kExitError;
  return reap(pid) == 0 ? kExitOk : kExitError;
}

}  // namespace kura::tool
