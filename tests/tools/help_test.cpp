// What `kura --help`, `kura <command> --help` and `kura --version` print:
// every subcommand listed on one line, an example under each subcommand's
// help, and the project and format versions from the code rather than from
// text written into the tool.
#include <algorithm>
#include <catch2/catch.hpp>
#include <sstream>
#include <string>
#include <vector>

#include "kura/core/layout.hpp"
#include "kura/version.hpp"
#include "process.hpp"

namespace {

kura::test::RunResult kura_run(std::vector<std::string> args) {
  args.insert(args.begin(), KURA_TOOL_PATH);
  return kura::test::run(args);
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// The subcommands under the "Subcommands:" heading of CLI11's help: one
// line each, the name first and then its description.
std::vector<std::string> subcommands_listed(const std::string& help) {
  std::vector<std::string> out;
  bool in_list = false;
  for (const std::string& line : lines_of(help)) {
    if (line == "Subcommands:") {
      in_list = true;
      continue;
    }
    if (!in_list) continue;
    if (line.empty()) break;
    std::istringstream words(line);
    std::string name, first_word_of_description;
    words >> name >> first_word_of_description;
    INFO("help line: " << line);
    CHECK(!first_word_of_description.empty());
    out.push_back(name);
  }
  return out;
}

}  // namespace

TEST_CASE("kura --help lists every subcommand, and each one's --help shows an example", "[tools]") {
  auto help = kura_run({"--help"});
  REQUIRE(help.code == 0);
  const std::vector<std::string> listed = subcommands_listed(help.out);
  INFO(help.out);
  // The subcommands of DESIGN section 5 that exist so far; the listing may
  // grow, never lose one.
  for (const char* want : {"put", "get", "inspect", "verify", "ls", "rm", "prune"})
    CHECK(std::find(listed.begin(), listed.end(), want) != listed.end());
  for (const std::string& sub : listed) {
    auto sub_help = kura_run({sub, "--help"});
    INFO("kura " << sub << " --help:\n" << sub_help.out);
    CHECK(sub_help.code == 0);
    CHECK(sub_help.out.find("\nExample") != std::string::npos);
    CHECK(sub_help.out.find("  kura " + sub) != std::string::npos);
  }
}

TEST_CASE("kura --version prints the project version and the format version", "[tools]") {
  auto v = kura_run({"--version"});
  REQUIRE(v.code == 0);
  CHECK(v.out == std::string("kura ") + KURA_VERSION + " (format version " +
                     std::to_string(kura::kFormatVersion) + ")\n");
}
