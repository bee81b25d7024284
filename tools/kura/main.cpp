// kura: the command-line tool (DESIGN.md section 5).
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <iostream>
#include <new>
#include <string>

#include "commands.hpp"

namespace {

int run(int argc, char** argv, bool stdout_closed) {
  using namespace kura::tool;
  std::ios::sync_with_stdio(false);  // output goes through std::cout only

  CLI::App app{"kura: share values between processes through shared memory, by name"};
  app.set_version_flag("--version", "kura 0.1.0");
  app.require_subcommand(1);
  app.footer(
      "Exit codes: 0 ok, 1 other error, 2 usage or invalid name, 3 not found,\n"
      "4 corrupt region (including a failed verify), 5 out of range or not a list, 6 no space.\n");

  std::string file, name;
  bool keep = false, json = false, all = false;

  auto* put = app.add_subcommand("put", "Build a hashed region from typed JSON and print its name");
  put->add_option("file", file, "typed JSON file, or - for standard input")->required();
  put->add_flag("--keep", keep,
                "publish under owner 0 (kept until `kura rm`) and exit; without it, hold the region until "
                "SIGINT or SIGTERM, then release it");

  auto* get = app.add_subcommand("get", "Print the value at a name such as /kura_1f_2a[2,3]");
  get->add_option("name", name, "region name, optionally with a path")->required();
  get->add_flag("--json", json, "print typed JSON, every value");
  get->add_flag("--all", all, "do not summarise long arrays and lists");

  auto* inspect =
      app.add_subcommand("inspect", "Print the node tree at a name: kinds, dtypes, offsets, sizes");
  inspect->add_option("name", name, "region name, optionally with a path")->required();
  inspect->add_flag("--all", all, "do not summarise long lists");

  auto* verify =
      app.add_subcommand("verify", "Check the hashes of the node at a name and everything below it");
  verify->add_option("name", name, "region name, optionally with a path")->required();

  auto* ls = app.add_subcommand("ls", "List regions and the space used and free in the region directory");
  ls->add_flag("--json", json, "machine-readable output");

  auto* rm = app.add_subcommand("rm", "Remove one region by name, whoever owns it");
  rm->add_option("name", name, "region name, such as /kura_0_3fa2")->required();

  auto* prune =
      app.add_subcommand("prune", "Remove every region whose owner is dead; print what was removed");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    if (e.get_exit_code() == 0) return app.exit(e);  // --help, --version
    std::cerr << "kura: " << e.what() << "\n(run `kura --help` or `kura <command> --help`)" << std::endl;
    return kExitUsage;
  }

  if (put->parsed()) return cmd_put(file, keep, stdout_closed);
  if (get->parsed()) return cmd_get(name, json, all);
  if (inspect->parsed()) return cmd_inspect(name, all);
  if (verify->parsed()) return cmd_verify(name);
  if (ls->parsed()) return cmd_ls(json);
  if (rm->parsed()) return cmd_rm(name);
  if (prune->parsed()) return cmd_prune();
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
