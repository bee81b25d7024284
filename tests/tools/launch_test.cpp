// kura launch (tools/kura/launch.cpp): the commands and scripts it prints,
// taken apart by a real sh with ssh and kura replaced by fakes that record
// what they were given, so nothing is sent anywhere. Paths and host names
// carry quotes, spaces, $, backquotes and semicolons: each must arrive as
// it was, and the secret must never be on a command line.
#include <sys/stat.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <fstream>
#include <iterator>
#include <sstream>
#include <string>
#include <vector>

#include "process.hpp"

namespace {

using kura::test::run;
using kura::test::RunResult;

const std::string kKura = KURA_TOOL_PATH;
const std::string kFingerprintPrefix = "--fingerprint sha256:";

std::string text_of(const std::string& path) {
  std::ifstream in(path);
  return std::string(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

std::vector<std::string> nul_split(const std::string& s) {
  std::vector<std::string> out;
  std::string word;
  for (char c : s) {
    if (c == '\0') {
      out.push_back(word);
      word.clear();
    } else {
      word += c;
    }
  }
  return out;
}

std::vector<std::string> lines_of(const std::string& text) {
  std::vector<std::string> out;
  std::istringstream in(text);
  for (std::string line; std::getline(in, line);) out.push_back(line);
  return out;
}

// A directory whose path is hostile to a shell, holding a secret made by
// kura secret and a fake kura that records its arguments, the mode and
// bytes of the secret file it was given, and whether that file is gone
// after it (checked by the caller).
class Hostile {
 public:
  Hostile() {
    char tmpl[] = "/tmp/kura-launch-test.XXXXXX";
    REQUIRE(::mkdtemp(tmpl) != nullptr);
    base_ = tmpl;
    dir_ = base_ + "/it's a $dir `x`; \"q\"";
    REQUIRE(::mkdir(dir_.c_str(), 0700) == 0);
    secret_ = dir_ + "/se cret's";
    auto r = run({kKura, "secret", secret_});
    INFO(r.err);
    REQUIRE(r.code == 0);
    fingerprint_ = r.out.substr(r.out.find("fingerprint: ") + 13, 71);
    fake_kura_ = dir_ + "/bin $x/ku'ra";
    REQUIRE(::mkdir((dir_ + "/bin $x").c_str(), 0700) == 0);
    tmp_ = base_ + "/tmp";
    REQUIRE(::mkdir(tmp_.c_str(), 0700) == 0);
    std::ofstream fake(fake_kura_);
    // Its arguments NUL-separated, then the secret file's mode and bytes.
    fake << "#!/bin/sh\n"
         << "printf '%s\\0' \"$@\" > \"$KURA_FAKE_DIR/args\"\n"
         << "stat -c %a \"$5\" > \"$KURA_FAKE_DIR/mode\"\n"
         << "cat \"$5\" > \"$KURA_FAKE_DIR/secret\"\n";
    fake.close();
    REQUIRE(::chmod(fake_kura_.c_str(), 0700) == 0);
  }
  ~Hostile() { run({"/bin/rm", "-rf", base_}); }

  const std::string& secret() const { return secret_; }
  const std::string& fingerprint() const { return fingerprint_; }
  const std::string& fake_kura() const { return fake_kura_; }
  std::string out(const std::string& name) const { return text_of(base_ + "/" + name); }

  // Runs `line` in sh with ssh a function that records its arguments and
  // standard input (a fake), as the local shell would.
  RunResult sh_with_fake_ssh(const std::string& line) const {
    return run({"/bin/sh", "-c",
                "ssh() { printf '%s\\0' \"$@\" > \"$0/ssh-args\"; cat > \"$0/ssh-stdin\"; }; " + line,
                base_});
  }
  // Runs the remote command `command` as a remote login shell would
  // (sh -c), `input` on its standard input, with TMPDIR and the fake's
  // output directory set.
  RunResult remote(const std::string& command, const std::string& input = {}) const {
    return run({"/usr/bin/env", "TMPDIR=" + tmp_, "KURA_FAKE_DIR=" + base_, "/bin/sh", "-c", command}, input);
  }
  // A new directory under the test's own.
  std::string scratch(const std::string& name) const {
    const std::string d = base_ + "/" + name;
    REQUIRE(::mkdir(d.c_str(), 0700) == 0);
    return d;
  }
  // Entries left in the remote TMPDIR.
  std::size_t tmp_entries() const {
    auto r = run({"/bin/ls", "-A", tmp_});
    return lines_of(r.out).size();
  }

 private:
  std::string base_, dir_, secret_, fingerprint_, fake_kura_, tmp_;
};

}  // namespace

TEST_CASE("kura launch ssh: hostile hosts and paths arrive as they were, the secret only on stdin",
          "[tools][launch]") {
  Hostile h;
  const std::vector<std::string> hosts = {"node1", "we'ird;$(touch x) `h`", "u s@h\"ost"};
  std::vector<std::string> argv = {kKura, "launch", "ssh"};
  argv.insert(argv.end(), hosts.begin(), hosts.end());
  argv.insert(argv.end(),
              {"--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret(), "--kura", h.fake_kura()});
  auto r = run(argv);
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto lines = lines_of(r.out);
  REQUIRE(lines.size() == hosts.size());
  const std::string secret_text = text_of(h.secret());
  for (std::size_t i = 0; i < hosts.size(); ++i) {
    INFO(lines[i]);
    CHECK(lines[i].find(secret_text.substr(0, 64)) == std::string::npos);
    CHECK(lines[i].find(h.fingerprint()) != std::string::npos);
    auto local = h.sh_with_fake_ssh(lines[i]);
    INFO(local.err);
    REQUIRE(local.code == 0);
    const auto ssh_args = nul_split(h.out("ssh-args"));
    REQUIRE(ssh_args.size() == 4);
    CHECK(ssh_args[0] == "-T");
    CHECK(ssh_args[1] == "--");  // no host is taken for an option
    CHECK(ssh_args[2] == hosts[i]);
    CHECK(h.out("ssh-stdin") == secret_text);  // the secret goes on standard input
    CHECK(ssh_args[3].find(secret_text.substr(0, 64)) == std::string::npos);

    // The remote end, as its login shell runs it: the fake kura gets the
    // endpoint, a 0600 copy of the secret and the fingerprint; the copy is
    // gone once the worker ended.
    auto remote = h.remote(ssh_args[3], h.out("ssh-stdin"));
    INFO(remote.err);
    CHECK(remote.code == 0);
    const auto worker = nul_split(h.out("args"));
    REQUIRE(worker.size() == 7);
    CHECK(worker[0] == "worker");
    CHECK(worker[1] == "--connect");
    CHECK(worker[2] == "tcp://192.0.2.1:7100");
    CHECK(worker[3] == "--secret-file");
    CHECK(worker[5] == "--fingerprint");
    CHECK(worker[6] == h.fingerprint());
    CHECK(h.out("mode") == "600\n");
    CHECK(h.out("secret") == secret_text);
    CHECK(h.tmp_entries() == 0);
  }
}

TEST_CASE("kura launch ssh --tunnel: a reverse forward, and the worker on its loopback end with TLS",
          "[tools][launch]") {
  Hostile h;
  auto r = run({kKura, "launch", "ssh", "far.example.org", "--tunnel", "--remote-port", "7200", "--connect",
                "tcp://127.0.0.1:7100", "--secret-file", h.secret(), "--kura", h.fake_kura()});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto lines = lines_of(r.out);
  REQUIRE(lines.size() == 1);
  REQUIRE(h.sh_with_fake_ssh(lines[0]).code == 0);
  const auto ssh_args = nul_split(h.out("ssh-args"));
  REQUIRE(ssh_args.size() == 8);
  CHECK(ssh_args[0] == "-T");
  // A port taken on the far host fails ssh rather than leaving the worker
  // to connect to whoever holds it.
  CHECK(ssh_args[1] == "-o");
  CHECK(ssh_args[2] == "ExitOnForwardFailure=yes");
  CHECK(ssh_args[3] == "-R");
  CHECK(ssh_args[4] == "127.0.0.1:7200:127.0.0.1:7100");
  CHECK(ssh_args[5] == "--");
  CHECK(ssh_args[6] == "far.example.org");
  REQUIRE(h.remote(ssh_args[7], h.out("ssh-stdin")).code == 0);
  const auto worker = nul_split(h.out("args"));
  REQUIRE(worker.size() == 8);
  CHECK(worker[2] == "tcp://127.0.0.1:7200");
  CHECK(worker[6] == h.fingerprint());
  CHECK(worker[7] == "--tls");

  // An IPv6 dispatcher is written in brackets in the forward.
  auto v6 = run({kKura, "launch", "ssh", "far", "--tunnel", "--connect", "tcp://[::1]:7100", "--secret-file",
                 h.secret()});
  REQUIRE(v6.code == 0);
  CHECK_THAT(v6.out, Catch::Contains(" -R '127.0.0.1:7100:[::1]:7100' "));
}

TEST_CASE("kura launch refuses what would leak the secret or cannot work", "[tools][launch]") {
  Hostile h;
  auto launch = [&](std::vector<std::string> args) {
    args.insert(args.begin(), {kKura, "launch"});
    return run(args);
  };
  struct Case {
    std::vector<std::string> args;
    std::string says;
  };
  const std::vector<Case> cases = {
      {{"ssh", "h", "--connect", "tcp://127.0.0.1:7100", "--secret-file", h.secret()}, "--tunnel"},
      {{"ssh", "--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret(), "--", "-oProxyCommand=x"},
       "starting with '-'"},
      {{"ssh", "h\nx", "--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret()},
       "control character"},
      {{"ssh", "h", "--connect", "unix:/tmp/x.sock", "--secret-file", h.secret()}, "tcp://HOST:PORT"},
      {{"ssh", "h", "--connect", "tcp://192.0.2.1:0", "--secret-file", h.secret()}, "the port"},
      {{"slurm", "--connect", "tcp://127.0.0.1:7100", "--secret-file", h.secret()}, "loopback"},
      {{"slurm", "--option", "--time=1:00:00", "--connect", "tcp://192.0.2.1:7100", "--secret-file",
        h.secret()},
       "#SBATCH"},
      {{"slurm", "--option", "#SBATCH --x\nrm -rf ~", "--connect", "tcp://192.0.2.1:7100", "--secret-file",
        h.secret()},
       "#SBATCH"},
  };
  for (const Case& c : cases) {
    auto r = launch(c.args);
    INFO(r.err);
    CHECK(r.code != 0);
    CHECK(r.out.empty());
    CHECK_THAT(r.err, Catch::Contains(c.says));
  }
  // A secret open to others, and one without its certificate.
  REQUIRE(::chmod(h.secret().c_str(), 0644) == 0);
  auto open = launch({"ssh", "h", "--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret()});
  CHECK(open.code != 0);
  CHECK_THAT(open.err, Catch::Contains("chmod 600"));
  REQUIRE(::chmod(h.secret().c_str(), 0600) == 0);
  REQUIRE(::unlink((h.secret() + ".crt").c_str()) == 0);
  auto no_cert = launch({"slurm", "--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret()});
  CHECK(no_cert.code != 0);
  CHECK_THAT(no_cert.err, Catch::Contains(".crt"));
}

TEST_CASE("kura launch slurm: a batch script with the secret's path, never the secret", "[tools][launch]") {
  Hostile h;
  auto r = run({kKura, "launch", "slurm", "--array", "4", "--option", "#SBATCH --time=1:00:00", "--option",
                "#SBATCH --partition='it s'", "--connect", "tcp://192.0.2.1:7100", "--secret-file",
                h.secret(), "--kura", h.fake_kura()});
  INFO(r.err);
  REQUIRE(r.code == 0);
  const auto lines = lines_of(r.out);
  REQUIRE(lines.size() >= 5);
  CHECK(lines[0] == "#!/bin/sh");
  CHECK(lines[1] == "#SBATCH --job-name=kura-worker");
  CHECK(lines[2] == "#SBATCH --array=1-4");
  CHECK(lines[3] == "#SBATCH --time=1:00:00");
  CHECK(lines[4] == "#SBATCH --partition='it s'");
  const std::string secret_text = text_of(h.secret());
  CHECK(r.out.find(secret_text.substr(0, 64)) == std::string::npos);
  // Run as a job would run it: the fake kura gets the secret's path as it is.
  REQUIRE(h.remote(r.out).code == 0);
  const auto worker = nul_split(h.out("args"));
  REQUIRE(worker.size() == 7);
  CHECK(worker[2] == "tcp://192.0.2.1:7100");
  CHECK(worker[4] == h.secret());
  CHECK(worker[6] == h.fingerprint());
  CHECK(h.out("secret") == secret_text);
}

TEST_CASE("kura launch --run runs ssh with the secret on its standard input, and sbatch with the script",
          "[tools][launch]") {
  Hostile h;
  // Fakes of ssh and sbatch first on PATH: what they were given is recorded.
  const std::string bin = h.scratch("fakebin");
  for (const char* name : {"ssh", "sbatch"}) {
    std::ofstream fake(bin + "/" + name);
    fake << "#!/bin/sh\nprintf '%s\\0' \"$@\" > \"" << bin << "/" << name << "-args\"\ncat > \"" << bin << "/"
         << name << "-stdin\"\n";
    fake.close();
    REQUIRE(::chmod((bin + "/" + name).c_str(), 0700) == 0);
  }
  const std::string path = "PATH=" + bin + ":/usr/bin:/bin";
  auto ssh = run({"/usr/bin/env", path, kKura, "launch", "ssh", "node1", "--connect", "tcp://192.0.2.1:7100",
                  "--secret-file", h.secret(), "--run"});
  INFO(ssh.err);
  CHECK(ssh.code == 0);
  CHECK(ssh.out.empty());
  CHECK_THAT(ssh.err, Catch::Contains("the worker on node1 ended (ssh exit code 0)"));
  const auto args = nul_split(text_of(bin + "/ssh-args"));
  REQUIRE(args.size() == 4);
  CHECK(args[2] == "node1");
  CHECK(text_of(bin + "/ssh-stdin") == text_of(h.secret()));

  auto sbatch = run({"/usr/bin/env", path, kKura, "launch", "slurm", "--connect", "tcp://192.0.2.1:7100",
                     "--secret-file", h.secret(), "--run"});
  INFO(sbatch.err);
  CHECK(sbatch.code == 0);
  auto printed =
      run({kKura, "launch", "slurm", "--connect", "tcp://192.0.2.1:7100", "--secret-file", h.secret()});
  CHECK(text_of(bin + "/sbatch-stdin") == printed.out);
  // No arguments: the fake's printf wrote one empty word.
  CHECK(text_of(bin + "/sbatch-args") == std::string(1, '\0'));
}
