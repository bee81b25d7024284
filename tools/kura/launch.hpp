// kura launch: the commands that start workers on other hosts connecting
// back to a dispatcher over TCP, through engines the user runs already (SSH,
// Slurm). They carry the endpoint and the certificate fingerprint, never
// the secret: over SSH it goes through ssh's standard input into a 0600
// file on the remote host; under Slurm the worker reads it from a path on
// a file system the nodes share, which the worker refuses unless it is
// 0600 and the user's.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/status.hpp"

namespace kura::tool {

struct LaunchArgs {
  std::vector<std::string> hosts;  // ssh: [user@]host, one worker each
  std::string connect;             // the dispatcher's tcp://HOST:PORT
  std::string secret_file;
  bool tunnel = false;               // ssh: reverse-forward a port on each host (ssh -R)
  std::uint16_t remote_port = 0;     // ssh --tunnel: the forwarded port there (0: the dispatcher's)
  bool run = false;                  // run the commands instead of printing them
  std::string kura = "kura";         // the kura binary on the other hosts
  unsigned array = 0;                // slurm: a job array of this many workers (0: one job)
  std::vector<std::string> options;  // slurm: "#SBATCH ..." lines
};

// `s` as one word for a POSIX shell (and for csh and fish as well): as it
// is when every character is a letter, digit or one of _@+=:,./- (and it
// does not start with =), else in single quotes, each single quote written
// '"'"'. No backslash is used, so no shell's escapes apply inside.
std::string shell_quote(std::string_view s);

// One host's command: the argv to run (its standard input the secret file)
// and the same as a line for a shell.
struct SshCommand {
  std::string host;
  std::vector<std::string> argv;
  std::string line;  // argv quoted, then "< SECRET_FILE"
};

// The ssh commands of `args`. The remote command, run by the remote login
// shell (a Bourne or C shell, or fish), is `sh -c SCRIPT`: SCRIPT makes a
// 0700 directory under $TMPDIR, copies standard input (the secret) into a
// 0600 file there, runs the worker with it and the fingerprint, and
// removes the directory when the worker ends. Errors: InvalidArgument (no
// host, a host or path with a control character or a host starting with
// '-', an endpoint that is not tcp://, a loopback one without --tunnel),
// those of read_secret_file and certificate_fingerprint.
Result<std::vector<SshCommand>> ssh_commands(const LaunchArgs& args);

// The Slurm batch script of `args`, for sbatch (which reads it on standard
// input). Errors: InvalidArgument (an option that is not one "#SBATCH ..."
// line, an endpoint that is not tcp:// or is loopback, a relative or
// control-character path), those of read_secret_file and
// certificate_fingerprint.
Result<std::string> slurm_script(const LaunchArgs& args);

// The subcommands: print, or with --run run, and return an exit code.
int cmd_launch_ssh(const LaunchArgs& args);
int cmd_launch_slurm(const LaunchArgs& args);

}  // namespace kura::tool
