// A program outside kura's source tree, built only against an installed kura
// (find_package or pkg-config; see ../run.sh). It shares a value, then has a
// second process, this program started again, map it back by name.
//
//   consumer            share, run `consumer map NAME`, wait for it, release
//   consumer map NAME   map NAME's elements by path and check them (exit 0)
//   consumer versions   print KURA_VERSION and kura::kFormatVersion
#include <spawn.h>
#include <sys/wait.h>

#include <cstdio>
#include <iostream>
#include <kura/core/layout.hpp>
#include <kura/core/value.hpp>
#include <kura/shm/region.hpp>
#include <kura/version.hpp>
#include <string>

extern char** environ;

namespace {

int fail(const std::string& what) {
  std::cerr << "consumer: " << what << std::endl;
  return 1;
}

// Run in the second process: the f64 array at [1] and the string at [2], both
// read in place from the mapping.
int check_mapped(const std::string& name) {
  auto xs = kura::shm::map(name + "[1]");
  if (!xs) return fail("map " + name + "[1]: " + xs.status().to_string());
  auto values = xs->node().array<kura::Dtype::kF64>();
  if (!values || values->size() != 2 || (*values)[0] != 1.5 || (*values)[1] != 2.5)
    return fail(name + "[1] is not the f64 array {1.5, 2.5}");
  auto tag = kura::shm::map(name + "[2]");
  if (!tag) return fail("map " + name + "[2]: " + tag.status().to_string());
  auto s = tag->node().string(0);
  if (!s || s->bytes != "a") return fail(name + "[2] is not the string \"a\"");
  return 0;
}

// Starts this program again as `consumer map NAME` and returns its exit code.
int run_mapper(const std::string& name) {
  std::string self = "/proc/self/exe", mode = "map", arg = name;
  char* argv[] = {self.data(), mode.data(), arg.data(), nullptr};
  pid_t pid;
  if (int err = ::posix_spawn(&pid, self.c_str(), nullptr, nullptr, argv, environ); err != 0)
    return fail("cannot start the second process: " + std::to_string(err));
  int status = 0;
  if (::waitpid(pid, &status, 0) != pid) return fail("waitpid failed");
  return WIFEXITED(status) ? WEXITSTATUS(status) : fail("the second process was killed");
}

}  // namespace

int main(int argc, char** argv) {
  const std::string mode = argc > 1 ? argv[1] : "";
  if (mode == "map" && argc == 3) return check_mapped(argv[2]);
  if (mode == "versions" && argc == 2) {
    std::cout << KURA_VERSION << " " << kura::kFormatVersion << std::endl;
    return 0;
  }
  if (argc != 1) return fail("usage: consumer | consumer map NAME | consumer versions");

  kura::Value value = kura::Value::list({kura::Value::f64({1.5, 2.5}), kura::Value::strings_utf8({"a"})})
                          .with_names({kura::String{"x"}, kura::String{"tag"}});
  auto shared = kura::shm::share(value);
  if (!shared) return fail("share: " + shared.status().to_string());
  const std::string name = shared->name();
  if (int rc = run_mapper(name); rc != 0) return fail("the second process exited " + std::to_string(rc));
  if (auto s = shared->release(); !s) return fail("release: " + s.to_string());
  std::cout << "ok: shared " << name << " and mapped it in a second process" << std::endl;
  return 0;
}
