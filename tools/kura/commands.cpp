#include "commands.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "kura/core/name.hpp"
#include "kura/core/verify.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "print.hpp"
#include "typed_json.hpp"

namespace kura::tool {

int exit_code_for(Code code) noexcept {
  switch (code) {
    case Code::kOk: return kExitOk;
    case Code::kInvalidName:
    case Code::kInvalidArgument: return kExitUsage;
    case Code::kNotFound: return kExitNotFound;
    case Code::kCorrupt: return kExitCorrupt;
    case Code::kOutOfRange:
    case Code::kNotAList: return kExitOutOfRange;
    case Code::kNoSpace: return kExitNoSpace;
    case Code::kExists:
    case Code::kPermission:
    case Code::kIo:
    case Code::kOutOfMemory: return kExitError;
  }
  return kExitError;
}

int fail(const Status& status, const std::string& context) {
  std::cout.flush();
  std::cerr << "kura: ";
  if (!context.empty()) std::cerr << context << ": ";
  std::cerr << status.to_string() << std::endl;
  return exit_code_for(status.code());
}

namespace {

void on_sigbus(int) {
  static const char msg[] =
      "kura: corrupt: the region shrank while it was being read (SIGBUS): another process truncated it\n";
  ssize_t n = ::write(STDERR_FILENO, msg, sizeof msg - 1);
  (void)n;
  ::_exit(kExitCorrupt);
}

// Writes `text` and a newline to stdout and flushes; false when that failed
// (stdout closed).
bool print_line(const std::string& text) {
  std::cout << text << '\n';
  std::cout.flush();
  return static_cast<bool>(std::cout);
}

}  // namespace

void install_sigbus_handler() noexcept {
  struct sigaction sa {};
  sa.sa_handler = on_sigbus;
  sigemptyset(&sa.sa_mask);
  sigaction(SIGBUS, &sa, nullptr);
}

bool reopen_closed_standard_descriptors() noexcept {
  bool stdout_closed = false;
  for (int fd = 0; fd <= 2; ++fd) {
    if (::fcntl(fd, F_GETFD) != -1 || errno != EBADF) continue;
    if (fd == STDOUT_FILENO) stdout_closed = true;
    // The lowest free number is `fd` itself: those below it are open by now.
    int got = ::open("/dev/null", fd == STDIN_FILENO ? O_RDONLY : O_WRONLY);
    if (got >= 0 && got != fd) {
      ::dup2(got, fd);
      ::close(got);
    }
  }
  return stdout_closed;
}

int cmd_put(const std::string& file, bool keep, bool stdout_closed) {
  if (stdout_closed)
    return fail(
        Status(Code::kIo,
               "standard output is closed, so the region's name could not be printed; nothing was created"),
        "put");
  // A stdout that cannot be written is an error below, not a death by
  // SIGPIPE that leaves a kept region or holds one.
  signal(SIGPIPE, SIG_IGN);
  std::ifstream file_in;
  if (file != "-") {
    file_in.open(file, std::ios::binary);
    if (!file_in)
      return fail(Status(Code::kIo, "cannot open " + file + ": " + std::strerror(errno), errno), "put");
  }
  std::istream& in = file == "-" ? std::cin : static_cast<std::istream&>(file_in);
  auto value = parse_typed_json(in);
  if (!value) return fail(value.status(), "put: " + (file == "-" ? std::string("standard input") : file));

  // Block the signals that end the hold before the region exists, so that one
  // arriving at any moment after is seen by sigwait below.
  sigset_t stop;
  sigemptyset(&stop);
  sigaddset(&stop, SIGINT);
  sigaddset(&stop, SIGTERM);
  if (!keep) pthread_sigmask(SIG_BLOCK, &stop, nullptr);

  shm::ShareOptions options;
  options.hashed = true;
  options.keep = keep;
  auto shared = shm::share(*value, options);
  if (!shared) return fail(shared.status(), "put");
  const std::string name = shared->name();
  if (keep) {
    if (!print_line(name)) {
      // Nobody learns a kept region's name now, so nobody would remove it.
      Status removed = shm::remove(name);
      if (!removed)
        return fail(
            Status(Code::kIo, "cannot write the name " + name +
                                  " to standard output, and removing it failed: " + removed.to_string()),
            "put");
      return fail(Status(Code::kIo, "cannot write the name to standard output; region removed"), "put");
    }
    shared->disown();
    return kExitOk;
  }
  if (!print_line(name)) {
    Status s = shared->release();
    (void)s;
    return fail(Status(Code::kIo, "cannot write the name to standard output; region released"), "put");
  }
  int sig = 0;
  while (sigwait(&stop, &sig) != 0) {
  }
  Status s = shared->release();
  if (!s) return fail(s, "put: releasing " + name);
  return kExitOk;
}

int cmd_get(const std::string& name, bool json, bool all) {
  auto m = shm::map(name);
  if (!m) return fail(m.status(), "get " + name);
  Status s =
      json ? write_typed_json(m->node(), std::cout) : print_value(m->node(), std::cout, PrintOptions{all});
  if (json && s) std::cout << '\n';
  std::cout.flush();
  if (!s) {
    // InvalidArgument here is a value typed JSON cannot hold (an attribute
    // key that is not UTF-8), not a usage error.
    int code = fail(s, "get " + name);
    return s.code() == Code::kInvalidArgument ? kExitError : code;
  }
  if (!std::cout) return fail(Status(Code::kIo, "cannot write to standard output"), "get");
  return kExitOk;
}

int cmd_inspect(const std::string& name, bool all) {
  auto m = shm::map(name);
  if (!m) return fail(m.status(), "inspect " + name);
  std::cout << m->name() << ": ";
  print_region_header(m->region().header(), std::cout);
  Status s = print_tree(m->node(), std::cout, PrintOptions{all});
  std::cout.flush();
  if (!s) return fail(s, "inspect " + name);
  return kExitOk;
}

int cmd_verify(const std::string& name) {
  auto m = shm::map(name);
  if (!m) return fail(m.status(), "verify " + name);
  auto r = verify(m->node());
  if (!r) {
    // Every failure of verify is a corrupt region (exit 4).
    Status s = r.status().code() == Code::kCorrupt ? r.status() : corrupt(r.status().message());
    return fail(s, "verify " + name + " failed");
  }
  std::cout << "ok: " << m->name() << ": " << r->nodes << (r->nodes == 1 ? " node" : " nodes") << ", "
            << (r->hashed ? "structure and hashes checked"
                          : "structure checked only (the region has no hashes)")
            << std::endl;
  return kExitOk;
}

namespace {

// "2M" (every byte in 2 MiB pages), "4K" (none), or "2M 37%" (some), from
// shm::region_pages(); "?" when it could not be measured.
std::string pages_column(const Result<shm::RegionPages>& p) {
  if (!p) return "?";
  if (p->huge_bytes == 0) return "4K";
  if (p->huge_bytes >= p->size) return "2M";
  return "2M " + std::to_string(p->huge_bytes * 100 / p->size) + "%";
}

// "tmpfs huge=always: 2 MiB pages", "tmpfs without huge=: 4 KiB pages",
// "ext4: 4 KiB pages".
std::string pages_summary(const shm::DirectoryInfo& d) {
  std::string what = d.fs_type.empty() ? "file system unknown" : d.fs_type;
  if (d.reason.rfind("mount option ", 0) == 0) {
    what += " " + d.reason.substr(13);
  } else if (d.reason == "no huge= mount option") {
    what += " without huge=";
  } else if (d.fs_type == "tmpfs") {
    what += ", " + d.reason;
  }
  return what + ": " + (d.page_size == 4096 ? std::string("4 KiB") : human_bytes(d.page_size)) + " pages";
}

}  // namespace

int cmd_ls(bool json) {
  auto regions = shm::list();
  if (!regions) return fail(regions.status(), "ls");
  auto space = shm::space();
  if (!space) return fail(space.status(), "ls");
  auto dir = shm::directory_info();
  if (!dir) return fail(dir.status(), "ls");
  const std::uint64_t used = space->total >= space->free ? space->total - space->free : 0;
  auto hex = [](std::uint64_t x) {
    std::ostringstream o;
    o << std::hex << x;
    return o.str();
  };
  // Which regions lie in huge pages: measured on each (a read of one byte
  // per 2 MiB), not guessed from the mount option.
  std::vector<Result<shm::RegionPages>> pages;
  for (const auto& r : *regions) pages.push_back(shm::region_pages(r.name));
  if (json) {
    Json out;
    out["regions"] = Json::array();
    for (std::size_t i = 0; i < regions->size(); ++i) {
      const auto& r = (*regions)[i];
      Json e;
      e["name"] = r.name;
      e["size"] = r.size;
      e["owner"] = hex(r.owner);
      e["kept"] = r.owner == shm::kKeptOwner;
      e["alive"] = r.alive;
      e["huge_page_bytes"] = pages[i] ? Json(pages[i]->huge_bytes) : Json(nullptr);
      out["regions"].push_back(std::move(e));
    }
    out["space"] = {
        {"directory", shm::directory()}, {"total", space->total},   {"used", used},
        {"free", space->free},           {"fs_type", dir->fs_type}, {"huge", shm::huge_pages_name(dir->huge)},
        {"page_size", dir->page_size}};
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::size_t w = 4;
  for (const auto& r : *regions) w = std::max(w, r.name.size());
  std::cout << std::left << std::setw(static_cast<int>(w)) << "NAME"
            << "  " << std::right << std::setw(10) << "SIZE"
            << "  " << std::left << std::setw(16) << "OWNER"
            << "  " << std::setw(6) << "STATE"
            << "  PAGES\n";
  for (std::size_t i = 0; i < regions->size(); ++i) {
    const auto& r = (*regions)[i];
    std::string state = r.owner == shm::kKeptOwner ? "kept" : r.alive ? "alive" : "orphan";
    std::cout << std::left << std::setw(static_cast<int>(w)) << r.name << "  " << std::right << std::setw(10)
              << human_bytes(r.size) << "  " << std::left << std::setw(16) << hex(r.owner) << "  "
              << std::setw(6) << state << "  " << pages_column(pages[i]) << '\n';
  }
  std::cout << regions->size() << (regions->size() == 1 ? " region" : " regions") << "; " << shm::directory()
            << ": " << human_bytes(used) << " used, " << human_bytes(space->free) << " free of "
            << human_bytes(space->total) << "; " << pages_summary(*dir) << std::endl;
  return kExitOk;
}

int cmd_rm(const std::string& name) {
  auto parsed = parse_name(name);
  if (!parsed) return fail(parsed.status(), "rm");
  if (!parsed->path.empty())
    return fail(
        invalid_name("rm removes a whole region: give " + format_name(parsed->region()) + " without a path"),
        "rm");
  Status s = shm::remove(name);
  if (!s) return fail(s, "rm " + name);
  return kExitOk;
}

int cmd_prune() {
  auto r = shm::prune();
  if (!r) return fail(r.status(), "prune");
  for (const auto& n : r->removed) std::cout << n << '\n';
  std::cout.flush();
  return kExitOk;
}

}  // namespace kura::tool
