// kura: the command-line tool (DESIGN.md section 5).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <new>
#include <string>

#include "commands.hpp"
#include "kura/core/layout.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/shm/directory.hpp"
#include "kura/version.hpp"
#include "launch.hpp"

namespace {

int run(int argc, char** argv, bool stdout_closed) {
  using namespace kura::tool;
  std::ios::sync_with_stdio(false);  // output goes through std::cout only

  CLI::App app{"kura: share values between processes through shared memory, by name"};
  app.set_version_flag("--version",
                       "kura " KURA_VERSION " (format version " + std::to_string(kura::kFormatVersion) + ")");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 other error, 2 usage or invalid name, 3 not found,\n"
      "4 corrupt region (including a failed verify), 5 out of range or not a list, 6 no space.\n");

  std::string file, name;
  bool keep = false, json = false, all = false;

  std::string region_dir;
  app.add_option("--dir", region_dir,
                 "region directory (default: $KURA_SHM_DIR, else /dev/shm), such as a tmpfs mounted with "
                 "huge pages; every process exchanging names must use the same one. Give it before the "
                 "command; workers the dispatcher starts inherit it");

  auto* put = app.add_subcommand("put", "Build a hashed region from typed JSON and print its name");
  put->add_option("file", file, "typed JSON file, or - for standard input")->required();
  put->add_flag("--keep", keep,
                "publish under owner 0 (kept until `kura rm`) and exit; without it, hold the region until "
                "SIGINT or SIGTERM, then release it");
  put->footer(
      "Examples:\n"
      "  kura put --keep frame.json   # prints /kura_0_<counter> and exits\n"
      "  echo '{\"type\": \"f64\", \"values\": [1.5, 2.5]}' | kura put -   # holds it until Ctrl-C");

  auto* get = app.add_subcommand("get", "Print the value at a name such as /kura_1f_2a[2,3]");
  get->add_option("name", name, "region name, optionally with a path")->required();
  get->add_flag("--json", json, "print typed JSON, every value");
  get->add_flag("--all", all, "do not summarise long arrays and lists");
  get->footer("Example:\n  kura get '/kura_0_3fa2[2]' --json   # the 2nd element of a list, as typed JSON");

  auto* inspect =
      app.add_subcommand("inspect", "Print the node tree at a name: kinds, dtypes, offsets, sizes");
  inspect->add_option("name", name, "region name, optionally with a path")->required();
  inspect->add_flag("--all", all, "do not summarise long lists");
  inspect->footer(
      "Example:\n  kura inspect /kura_0_3fa2   # every node of the region, with offsets and hashes");

  auto* verify =
      app.add_subcommand("verify", "Check the hashes of the node at a name and everything below it");
  verify->add_option("name", name, "region name, optionally with a path")->required();
  verify->footer("Example:\n  kura verify '/kura_0_3fa2[1]'   # exit 0: hashes match; exit 4: corrupt");

  auto* ls = app.add_subcommand("ls", "List regions and the space used and free in the region directory");
  ls->add_flag("--json", json, "machine-readable output");
  ls->footer("Example:\n  kura ls --json   # one object per region, and the space used and free");

  auto* rm = app.add_subcommand("rm", "Remove one region by name, whoever owns it");
  rm->add_option("name", name, "region name, such as /kura_0_3fa2")->required();
  rm->footer("Example:\n  kura rm /kura_0_3fa2   # a kept region (owner 0) lives until this");

  auto* prune =
      app.add_subcommand("prune", "Remove every region whose owner is dead; print what was removed");
  prune->footer("Example:\n  kura prune   # after a producer was killed: removes what it left");

  DispatcherArgs dispatcher_args;
  auto* dispatcher =
      app.add_subcommand("dispatcher", "Run a dispatcher that hands tasks to worker processes");
  dispatcher->add_option("--socket", dispatcher_args.socket,
                         "socket to listen on (default: per-user socket)");
  dispatcher->add_option("--workers", dispatcher_args.workers, "local workers to start and keep running");
  dispatcher->add_option("--memory", dispatcher_args.memory, "cap on queued task bytes (e.g. 64MiB); 0: none")
      ->transform(CLI::AsSizeValue(false));
  dispatcher
      ->add_option("--frame-limit", dispatcher_args.frame_limit, "largest frame accepted (default 1 MiB)")
      ->transform(CLI::AsSizeValue(false));
  dispatcher->add_option("--heartbeat-timeout", dispatcher_args.heartbeat_timeout_ms,
                         "drop a worker silent this many milliseconds (default 5000)");
  dispatcher->add_option("--cancel-grace", dispatcher_args.cancel_grace_ms,
                         "drop a worker still running a cancelled or timed-out task after this many "
                         "milliseconds (default 10000)");
  dispatcher->add_option(
      "--hello-timeout", dispatcher_args.hello_timeout_ms,
      "close a connection that has not said hello within this many milliseconds (default 5000)");
  dispatcher->add_option("--trace", dispatcher_args.trace_path,
                         "append the spans of traced tasks to this file (OTLP/JSON, one line per task)");
  dispatcher->add_option("--max-connections", dispatcher_args.max_connections,
                         "most connections at once (default: the descriptor limit less 32)");
  dispatcher
      ->add_option("--window", dispatcher_args.worker_window,
                   "tasks a worker holds at once, the one it runs and those sent to wait behind it "
                   "(default 1; more runs many small tasks faster, tasks then start out of submit order)")
      ->check(CLI::Range(std::uint32_t{1}, kura::ipc::kMaxWorkerWindow));
  dispatcher->add_option("--worker-command", dispatcher_args.worker_command,
                         "the command that starts each worker, words separated by spaces, {socket} "
                         "replaced by the socket (default: \"<this kura> worker --connect {socket}\")");
  dispatcher->add_option("--listen", dispatcher_args.tcp_listen,
                         "also listen for workers on tcp://HOST:PORT (port 0: any free port; the address is "
                         "logged); needs --secret-file");
  dispatcher->add_option(
      "--secret-file", dispatcher_args.secret_file,
      "the shared secret TCP workers and the dispatcher prove to each other (kura secret)");

  std::string socket;
  WorkerArgs worker_args;
  auto* worker = app.add_subcommand("worker", "Run tasks for a dispatcher until it goes away");
  worker->add_option("--connect", worker_args.socket, "the dispatcher's socket, or tcp://HOST:PORT")
      ->required();
  worker->add_option("--secret-file", worker_args.secret_file,
                     "the shared secret, for a tcp:// dispatcher (kura secret)");
  worker->add_option("--fingerprint", worker_args.fingerprint,
                     "the dispatcher's certificate fingerprint (sha256:..., printed by kura secret), pinned "
                     "over TLS; required for an address that is not loopback");
  worker->add_flag("--tls", worker_args.tls,
                   "use TLS on a loopback address too (off loopback it always is); needs --fingerprint");
  worker->add_option("--plugin", worker_args.plugins, "a shared library that registers functions");
  worker
      ->add_option("--reconnect-for", worker_args.reconnect_for_s,
                   "when the connection drops, try to connect again for this many seconds, then exit "
                   "(default: 60 for tcp://, 0 for a Unix socket)")
      ->check(CLI::Range(0.0, 86400.0));

  std::string secret_path;
  auto* secret = app.add_subcommand(
      "secret",
      "Write a new shared secret for TCP workers (FILE, mode 0600) and the dispatcher's TLS certificate and "
      "key beside it (FILE.crt, FILE.key, mode 0600); print the certificate's fingerprint. Never replaces a "
      "file");
  secret->add_option("file", secret_path, "where to write it")->required();
  secret->footer(
      "Example:\n  kura secret ~/.kura-secret   # prints fingerprint: sha256:...\n"
      "  kura dispatcher --listen tcp://0.0.0.0:7100 --secret-file ~/.kura-secret\n"
      "  kura worker --connect tcp://10.0.0.1:7100 --secret-file ~/.kura-secret --fingerprint sha256:...");

  LaunchArgs launch_args;
  auto* launch = app.add_subcommand(
      "launch", "Print (or run) the commands that start workers on other hosts, connecting back over TCP");
  launch->require_subcommand(1);
  auto* launch_ssh = launch->add_subcommand("ssh", "One worker on each host, started over SSH");
  auto* launch_slurm =
      launch->add_subcommand("slurm", "Workers as a Slurm batch job (a job array with --array)");
  for (auto* sub : {launch_ssh, launch_slurm}) {
    sub->add_option("--connect", launch_args.connect, "the dispatcher's tcp://HOST:PORT, as it printed it")
        ->required();
    sub->add_option("--secret-file", launch_args.secret_file,
                    "the shared secret (kura secret); never put on a command line: over SSH it is sent on "
                    "standard input, under Slurm read from this path on a shared file system")
        ->required();
    sub->add_flag("--run", launch_args.run,
                  "run the commands (ssh) or submit the script (sbatch) instead of "
                  "printing them");
    sub->add_option("--kura", launch_args.kura, "the kura binary on the other hosts (default: kura on PATH)");
  }
  launch_ssh->add_option("hosts", launch_args.hosts, "[user@]host, one worker each")->required();
  launch_ssh->add_flag("--tunnel", launch_args.tunnel,
                       "for hosts that cannot reach the dispatcher: forward a port of theirs back over SSH "
                       "(ssh -R); the worker connects to that port on its loopback, with TLS");
  launch_ssh->add_option("--remote-port", launch_args.remote_port,
                         "with --tunnel: the port forwarded on each host (default: the dispatcher's)");
  launch_slurm->add_option("--array", launch_args.array,
                           "a job array of this many workers (default: one job)");
  launch_slurm->add_option("--option", launch_args.options,
                           "a line for the script, such as '#SBATCH --time=1:00:00'");
  launch->footer(
      "The fingerprint of the certificate beside the secret file is in every command; the secret never is.\n"
      "Examples:\n"
      "  kura launch ssh node1 node2 --connect tcp://10.0.0.1:7100 --secret-file ~/.kura-secret\n"
      "  kura launch ssh far.example.org --tunnel --connect tcp://127.0.0.1:7100 --secret-file "
      "~/.kura-secret "
      "--run\n"
      "  kura launch slurm --array 16 --option '#SBATCH --time=2:00:00' --connect tcp://10.0.0.1:7100 "
      "--secret-file /shared/me/.kura-secret");
  launch_ssh->footer(
      "Example:\n  kura launch ssh node1 node2 --connect tcp://10.0.0.1:7100 --secret-file ~/.kura-secret\n"
      "Each line runs ssh with the secret on its standard input; on the host, sh copies it into a 0600 file\n"
      "in a fresh 0700 directory under $TMPDIR, runs kura worker with it, and removes it when the worker "
      "ends.");
  launch_slurm->footer(
      "Example:\n  kura launch slurm --array 16 --connect tcp://10.0.0.1:7100 --secret-file "
      "/shared/me/.kura-secret\n"
      "The script holds the secret's path, never the secret: put it on a file system the nodes share, mode "
      "0600.");

  auto* status = app.add_subcommand("status", "Print a dispatcher's counters and workers");
  status->add_option("--socket", socket, "the dispatcher's socket (default: per-user socket)");
  status->add_flag("--json", json, "machine-readable output");

  dispatcher->footer(
      "Example:\n  kura dispatcher --workers 4 --memory 256MiB   # runs until SIGINT or SIGTERM");
  worker->footer("Example:\n  kura worker --connect /tmp/kura.sock --plugin ./libmyfns.so");
  status->footer("Example:\n  kura status --json   # of the dispatcher on the per-user socket");

  SubmitArgs submit_args;
  auto* submit = app.add_subcommand("submit", "Run one task and print its result");
  submit->add_option("--socket", submit_args.socket, "the dispatcher's socket (default: per-user socket)");
  submit->add_option("--timeout", submit_args.timeout_ms, "give up after this many milliseconds");
  submit->add_flag("--json", submit_args.json, "print the result as typed JSON");
  submit->add_flag("--keep", submit_args.keep, "keep the result under an owner-0 name and print that name");
  submit->add_flag("--wait-for-worker", submit_args.wait_for_worker,
                   "wait for a worker that has the function instead of failing when none has announced it");
  submit->add_option(
      "--traceparent", submit_args.traceparent,
      "a W3C trace context (00-<trace id>-<parent id>-<flags>): the task's spans join that trace");
  submit->add_option("fn", submit_args.fn, "function name, such as sum")->required();
  submit->add_option("args", submit_args.args, "arguments: kura names, numbers, true/false/NA, or strings");
  submit->footer("Example:\n  kura submit sum '/kura_0_3fa2[1]'   # prints the sum of an f64 array");

  DemoArgs demo_args;
  auto* demo = app.add_subcommand(
      "demo", "The main job: a pipeline over a shared data set, passing names, then copying, side by side");
  demo->add_option("--rows", demo_args.rows, "rows of the data set (default 8388608; scaled down to fit)");
  demo->add_option("--cols", demo_args.cols, "columns of the data set (default 8)");
  demo->add_flag("--json", demo_args.json, "print the figures as JSON");
  demo->footer("Example:\n  kura demo --rows 1000000 --json");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "kura: " << e.what() << "\n(run `kura --help` or `kura <command> --help`)" << std::endl;
    return kExitUsage;
  }

  if (!region_dir.empty()) {
    if (kura::Status s = kura::shm::set_directory(region_dir); !s) return fail(s, "--dir");
  }
  if (put->parsed()) return cmd_put(file, keep, stdout_closed);
  if (get->parsed()) return cmd_get(name, json, all);
  if (inspect->parsed()) return cmd_inspect(name, all);
  if (verify->parsed()) return cmd_verify(name);
  if (ls->parsed()) return cmd_ls(json);
  if (rm->parsed()) return cmd_rm(name);
  if (prune->parsed()) return cmd_prune();
  if (dispatcher->parsed()) return cmd_dispatcher(dispatcher_args);
  if (worker->parsed()) return cmd_worker(worker_args);
  if (secret->parsed()) return cmd_secret(secret_path);
  if (launch_ssh->parsed()) return cmd_launch_ssh(launch_args);
  if (launch_slurm->parsed()) return cmd_launch_slurm(launch_args);
  if (status->parsed()) return cmd_status(socket, json);
  if (submit->parsed()) return cmd_submit(submit_args);
  if (demo->parsed()) return cmd_demo(demo_args);
  std::cerr << "kura: no command given (run `kura --help`)" << std::endl;
  return kExitUsage;
}

}  // namespace

int main(int argc, char** argv) {
  using namespace kura::tool;
  const bool stdout_closed = reopen_closed_standard_descriptors();
  install_sigbus_handler();
  try {
    return run(argc, argv, stdout_closed);
  } catch (const std::bad_alloc&) {
    // Anything that ran out of memory outside the calls that report it as a
    // status (command-line parsing, output). No allocation here.
    static const char msg[] = "kura: out of memory\n";
    ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
    (void)n;
    return kExitError;
  }
}
