// The helper processes of the multi-process tests: `kura_shm_tests --helper
// NAME ARGS...`. Each writes one line per event to stdout (flushed at once)
// and takes the closing of its stdin as "finish now". Exit code 0 means the
// helper's own checks passed.
#include <dirent.h>
#include <poll.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "kura/core/name.hpp"
#include "kura/core/value.hpp"
#include "kura/shm/directory.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "private_shm_dir.hpp"
#include "sample.hpp"

namespace kura::test {

namespace {

void say(const std::string& line) {
  std::string s = line + "\n";
  if (::write(1, s.data(), s.size()) < 0) std::_Exit(3);
}

int fail(const std::string& why) {
  say("fail " + why);
  std::fprintf(stderr, "helper: %s\n", why.c_str());
  return 1;
}

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

// Blocks until the test closes our stdin (or writes a line); returns the line.
std::string wait_input() {
  std::string line;
  char c;
  while (::read(0, &c, 1) == 1 && c != '\n') line += c;
  return line;
}

// True when stdin has a line or EOF waiting.
bool input_ready() {
  pollfd p{0, POLLIN, 0};
  return ::poll(&p, 1, 0) > 0;
}

unsigned mode_of(const std::string& path) {
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0) return 07777;
  return st.st_mode & 07777;
}

// Shares the sample, prints its name, waits for stdin to close, releases.
int share_sample() {
  Value v = sample_value();
  auto s = shm::share(v);
  if (!s) return fail(s.status().to_string());
  say(s->name());
  wait_input();
  Status r = s->release();
  return r ? 0 : fail(r.to_string());
}

// Maps the sample at argv[0] and the element at its path, checks every value.
int check_sample_at(const std::string& name) {
  auto m = shm::map(name);
  if (!m) return fail("map " + name + ": " + m.status().to_string());
  std::string why = check_sample(m->node());
  if (!why.empty()) return fail(why);
  auto sub = shm::map(name + kSamplePath);
  if (!sub) return fail("map " + name + kSamplePath + ": " + sub.status().to_string());
  auto copy = to_value(sub->node());
  if (!copy || !(*copy == sample_at_path())) return fail("the value at " + name + kSamplePath + " differs");
  say("ok");
  return 0;
}

// Shares `n` small regions, prints each name, its owner, "ready"; holds them
// until stdin closes.
int hold(int n) {
  std::vector<shm::Shared> held;
  for (int i = 0; i < n; ++i) {
    Value v = Value::i32({i, i + 1});
    auto s = shm::share(v);
    if (!s) return fail(s.status().to_string());
    say(s->name());
    held.push_back(std::move(s).value());
  }
  say("owner " + hex(*shm::process_owner()));
  say("ready");
  wait_input();
  return 0;
}

// Creates a Pending region, fills part of it, then waits to be killed.
int pending() {
  Value v = Value::list({Value::array_in_place(Dtype::kF64, 1000), Value::strings_utf8({"never seen"})});
  auto p = shm::Pending::create(v);
  if (!p) return fail(p.status().to_string());
  auto xs = p->array<double>(v.children[0]);
  for (std::size_t i = 0; i < xs.size() / 2; ++i) xs[i] = static_cast<double>(i);
  say("owner " + hex(*shm::process_owner()));
  say("ready");
  wait_input();  // killed here
  return 0;
}

// Holds the lease of `owner` and starts a Pending region of `mib` MiB for it,
// writes its first half, says "writing" and waits. With `heir`, it forks a
// child first, which says "heir <pid>" and then holds whatever it inherited
// until its stdin closes. On the line "publish" it publishes, says the name
// and waits for stdin to close.
int write_for(std::uint64_t owner, std::size_t mib, bool heir) {
  auto lease = shm::Lease::hold(owner);
  if (!lease) return fail(lease.status().to_string());
  Value v = Value::array_in_place(Dtype::kU8, mib << 20);
  auto p = shm::Pending::create(*lease, v);
  if (!p) return fail(p.status().to_string());
  if (heir) {
    int ready[2];
    if (::pipe(ready) != 0) return fail("pipe failed");
    pid_t child = ::fork();
    if (child < 0) return fail("fork failed");
    if (child == 0) {
      say("heir " + std::to_string(::getpid()));
      (void)!::write(ready[1], "r", 1);
      wait_input();
      std::_Exit(0);
    }
    char c;
    if (::read(ready[0], &c, 1) != 1) return fail("the heir did not start");
  }
  auto block = p->block(v);
  std::memset(block.data(), 0x5a, block.size() / 2);
  say("writing");
  if (wait_input() != "publish") return 0;
  std::memset(block.data() + block.size() / 2, 0xa5, block.size() - block.size() / 2);
  auto s = std::move(p).value().publish();
  if (!s) return fail(s.status().to_string());
  say(s->name());
  wait_input();
  return 0;
}

// Prunes (the whole directory and `owner`, in turn) without end until stdin
// closes. Fails when a prune fails or removes anything but a temporary: the
// test's owner lives, so its regions and lease are never prune's.
int prune_loop(std::uint64_t owner) {
  say("looping");
  long prunes = 0, removed = 0;
  while (!input_ready()) {
    auto r = prunes % 2 == 0 ? shm::prune() : shm::prune(owner);
    if (!r) return fail("prune: " + r.status().to_string());
    for (const std::string& f : r->removed) {
      if (f.size() < 4 || f.substr(f.size() - 4) != ".tmp") return fail("prune removed " + f);
      ++removed;
    }
    ++prunes;
  }
  say("prunes " + std::to_string(prunes) + " removed " + std::to_string(removed));
  return 0;
}

// Makes an owner, then forks a child that never touches kura and outlives
// us. The child says its pid itself, after fork() has returned in it (so
// after the fork handlers dropped the lease there), and waits for its stdin
// to close.
int fork_heir() {
  auto owner = shm::process_owner();
  if (!owner) return fail(owner.status().to_string());
  say("owner " + hex(*owner));
  pid_t child = ::fork();
  if (child < 0) return fail("fork failed");
  if (child == 0) {
    say("heir " + std::to_string(::getpid()));
    wait_input();
    std::_Exit(0);
  }
  wait_input();  // killed here
  return 0;
}

// Makes an owner, says it, and exits cleanly (through exit(), so the clean-up
// handler runs) when the test writes a line.
int owner_then_exit() {
  auto owner = shm::process_owner();
  if (!owner) return fail(owner.status().to_string());
  say("owner " + hex(*owner));
  wait_input();
  return 0;
}

// Shares two regions, disown()s the first, says both names, and exits
// cleanly.
int disown_and_exit() {
  Value v = Value::i32({1, 2, 3});
  auto kept = shm::share(v);
  auto dropped = shm::share(v);
  if (!kept || !dropped) return fail("share failed");
  say("disowned " + kept->disown());
  say("held " + dropped->name());
  say("owner " + hex(*shm::process_owner()));
  wait_input();
  return 0;
}

// Asks about `owner` without end until stdin closes: owner_alive() and
// list(), the probes that must never be mistaken for a holder.
int probe_loop(std::uint64_t owner) {
  say("looping");
  long probes = 0;
  while (!input_ready()) {
    (void)shm::owner_alive(owner);
    if (probes % 16 == 0) (void)shm::list();
    ++probes;
  }
  say("probes " + std::to_string(probes));
  return 0;
}

// Tries Lease::hold(owner) without end until stdin closes; says how many
// holds succeeded.
int hold_loop(std::uint64_t owner) {
  say("looping");
  long held = 0, tries = 0;
  while (!input_ready()) {
    if (shm::Lease::hold(owner).is_ok()) ++held;
    ++tries;
  }
  say("held " + std::to_string(held) + " of " + std::to_string(tries));
  return 0;
}

// Runs every shm entry point that touches the files of region `name` and of
// its owner's lease, saying each result. The test gives it a bounded time:
// a FIFO planted at any of them must not make it block.
int touch_all(const std::string& name) {
  auto n = parse_name(name);
  if (!n) return fail(n.status().to_string());
  auto m = shm::map(name);
  say("map " + std::string(code_name(m.is_ok() ? Code::kOk : m.status().code())));
  auto a = shm::adopt(name);
  say("adopt " + std::string(code_name(a.is_ok() ? Code::kOk : a.status().code())));
  say(std::string("alive ") + (shm::owner_alive(n->owner) ? "yes" : "no"));
  auto l = shm::Lease::hold(n->owner);
  say("hold " + std::string(code_name(l.is_ok() ? Code::kOk : l.status().code())));
  auto ls = shm::list();
  say("list " + std::string(code_name(ls.is_ok() ? Code::kOk : ls.status().code())));
  auto p = shm::prune(n->owner);
  say("prune-owner " + std::string(code_name(p.is_ok() ? Code::kOk : p.status().code())) + " " +
      std::to_string(p.is_ok() ? p->removed.size() : 0));
  auto all = shm::prune();
  say("prune " + std::string(code_name(all.is_ok() ? Code::kOk : all.status().code())));
  return 0;
}

// Maps `name` (an f64 array of `n` elements, element i == i), loops over it,
// keeps looping after the test says the region is unlinked, then checks that
// the name is gone.
int reader(const std::string& name, std::size_t n) {
  auto m = shm::map(name);
  if (!m) return fail(m.status().to_string());
  auto xs = m->node().array<Dtype::kF64>();
  if (!xs || xs->size() != n) return fail("not an f64 array of the expected length");
  auto pass = [&]() {
    double sum = 0;
    for (std::size_t i = 0; i < xs->size(); ++i) {
      if ((*xs)[i] != static_cast<double>(i)) return false;
      sum += (*xs)[i];
    }
    return sum == static_cast<double>(n) * static_cast<double>(n - 1) / 2;
  };
  if (!pass()) return fail("wrong values before unlink");
  say("looping");
  int passes = 0;
  while (!input_ready()) {
    if (!pass()) return fail("wrong values while looping");
    ++passes;
  }
  if (wait_input() != "unlinked") return fail("unexpected input");
  for (int i = 0; i < 3; ++i)
    if (!pass()) return fail("wrong values after unlink");
  auto again = shm::map(name);
  if (again || again.status().code() != Code::kNotFound)
    return fail("a new map of an unlinked region did not give NotFound");
  say("ok " + std::to_string(passes));
  return 0;
}

// Under umask 000: the modes of a new lease, a temporary and a published region.
int modes() {
  ::umask(0);
  auto owner = shm::process_owner();
  if (!owner) return fail(owner.status().to_string());
  const std::string lease = shm_path("kura_" + hex(*owner) + ".lock");
  Value v = Value::f64({1, 2, 3});
  auto p = shm::Pending::create(v);
  if (!p) return fail(p.status().to_string());
  unsigned temp_mode = 07777;
  if (DIR* d = ::opendir(shm_dir().c_str())) {
    std::string prefix = "kura_" + hex(*owner) + "_";
    while (dirent* de = ::readdir(d)) {
      std::string f = de->d_name;
      if (f.rfind(prefix, 0) == 0 && f.size() > 4 && f.substr(f.size() - 4) == ".tmp")
        temp_mode = mode_of(shm_path(f));
    }
    ::closedir(d);
  }
  auto s = std::move(p).value().publish();
  if (!s) return fail(s.status().to_string());
  char line[128];
  std::snprintf(line, sizeof line, "lease %o temp %o region %o", mode_of(lease), temp_mode,
                mode_of(shm_path(s->name())));
  say(line);
  return 0;
}

// Run inside a private mount namespace with a 1 MiB tmpfs on the region directory.
int nospace() {
  auto sp = shm::space();
  if (!sp || sp->total > 4 * 1024 * 1024)
    return fail("the region directory is not the small tmpfs this helper expects");
  Value v = Value::array_in_place(Dtype::kU8, 2 * 1024 * 1024);
  auto s = shm::share(v);
  if (s) return fail("a 2 MiB region was created in a 1 MiB region directory");
  if (s.status().code() != Code::kNoSpace) return fail("expected NoSpace, got " + s.status().to_string());
  std::string lease = "kura_" + hex(*shm::process_owner()) + ".lock";
  if (DIR* d = ::opendir(shm_dir().c_str())) {
    while (dirent* de = ::readdir(d)) {
      std::string f = de->d_name;
      if (f.rfind("kura_", 0) == 0 && f != lease) return fail("left behind " + shm_path(f));
    }
    ::closedir(d);
  }
  say("nospace " + s.status().message());
  return 0;
}

// The NoSpace test on a small tmpfs mounted with huge pages: a region of
// 6 MiB in a directory of 4 MiB, whose pages are reserved in 2 MiB steps
// (fallocate for huge=always, MADV_POPULATE_WRITE for huge=advise).
int nospace_huge(const std::string& mode) {
  auto info = shm::directory_info();
  if (!info) return fail(info.status().to_string());
  if (shm::huge_pages_name(info->huge) != mode)
    return fail("the directory's huge pages are " + std::string(shm::huge_pages_name(info->huge)) + ", not " +
                mode);
  Value v = Value::array_in_place(Dtype::kU8, 6 * 1024 * 1024);
  auto s = shm::share(v);
  if (s) return fail("a 6 MiB region was created in a 4 MiB region directory");
  if (s.status().code() != Code::kNoSpace) return fail("expected NoSpace, got " + s.status().to_string());
  std::string lease = "kura_" + hex(*shm::process_owner()) + ".lock";
  if (DIR* d = ::opendir(shm_dir().c_str())) {
    while (dirent* de = ::readdir(d)) {
      std::string f = de->d_name;
      if (f.rfind("kura_", 0) == 0 && f != lease) return fail("left behind " + shm_path(f));
    }
    ::closedir(d);
  }
  // What fits still works: 2 MiB.
  Value small = Value::array_in_place(Dtype::kU8, 1024 * 1024);
  auto ok = shm::share(small);
  if (!ok) return fail("a 1 MiB region after the failure: " + ok.status().to_string());
  say("nospace " + s.status().message());
  return 0;
}

// Sets the region directory to `dir` before anything else (set_directory, or
// KURA_SHM_DIR when `how` is "env"), and prints what happened:
// "check <code>: <message>", then for a usable directory the name of a
// region shared there, whether its file is in `dir`, and KURA_SHM_DIR.
int set_dir(const std::string& how, const std::string& dir) {
  Status s;
  if (how == "late") {
    // KURA_SHM_DIR names a directory that does not exist yet: refused at
    // first use; created, then set_directory of the same path makes it good.
    ::setenv("KURA_SHM_DIR", dir.c_str(), 1);
    Status first = shm::check_directory();
    say("first " + std::string(code_name(first.code())));
    if (::mkdir(dir.c_str(), 0700) != 0) return fail("mkdir " + dir);
    Status set = shm::set_directory(dir);
    say("set " + std::string(code_name(set.code())) + ": " + set.message());
    s = shm::check_directory();
  } else if (how == "env") {
    ::setenv("KURA_SHM_DIR", dir.c_str(), 1);
    s = shm::check_directory();
  } else {
    s = shm::set_directory(dir);
  }
  say("check " + std::string(code_name(s.code())) + ": " + s.message());
  Value v = sample_value();
  auto shared = shm::share(v);
  if (!s) {
    if (how == "env") {
      // Every function that touches the directory refuses it the same way.
      if (shared) return fail("share worked in a refused directory");
      say("share " + std::string(code_name(shared.status().code())));
    } else {
      // A refused set_directory changes nothing: the directory is still
      // the one KURA_SHM_DIR names.
      if (!shared) return fail("share after a refused set_directory: " + shared.status().to_string());
      say("share ok in " + shm::directory());
    }
    return 0;
  }
  if (!shared) return fail("share: " + shared.status().to_string());
  const char* env = std::getenv("KURA_SHM_DIR");
  say("shared " + shared->name());
  struct stat st;
  say(std::string("in-dir ") + (::stat((dir + shared->name()).c_str(), &st) == 0 ? "yes" : "no"));
  say(std::string("env ") + (env ? env : ""));
  return 0;
}

}  // namespace

int run_helper(int argc, char** argv) {
  const std::string name = argv[0];
  if (name == "share-sample") return share_sample();
  if (name == "check-sample" && argc == 2) return check_sample_at(argv[1]);
  if (name == "hold" && argc == 2) return hold(std::atoi(argv[1]));
  if (name == "pending") return pending();
  if (name == "write-for" && (argc == 3 || (argc == 4 && std::strcmp(argv[3], "fork") == 0)))
    return write_for(std::strtoull(argv[1], nullptr, 16), std::strtoull(argv[2], nullptr, 10), argc == 4);
  if (name == "prune-loop" && argc == 2) return prune_loop(std::strtoull(argv[1], nullptr, 16));
  if (name == "fork-heir") return fork_heir();
  if (name == "owner-then-exit") return owner_then_exit();
  if (name == "disown-and-exit") return disown_and_exit();
  if (name == "probe-loop" && argc == 2) return probe_loop(std::strtoull(argv[1], nullptr, 16));
  if (name == "hold-loop" && argc == 2) return hold_loop(std::strtoull(argv[1], nullptr, 16));
  if (name == "touch-all" && argc == 2) return touch_all(argv[1]);
  if (name == "reader" && argc == 3) return reader(argv[1], std::strtoull(argv[2], nullptr, 10));
  if (name == "modes") return modes();
  if (name == "nospace") return nospace();
  if (name == "nospace-huge" && argc == 2) return nospace_huge(argv[1]);
  if (name == "set-dir" && argc == 3) return set_dir(argv[1], argv[2]);
  std::fprintf(stderr, "unknown helper: %s\n", name.c_str());
  return 2;
}

}  // namespace kura::test
