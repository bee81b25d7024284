#include "fork_guard.hpp"

#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <new>
#include <string>
#include <vector>

namespace kura::ipc::detail {

namespace {

struct Entry {
  int fd;
  dev_t dev;
  ino_t ino;
};

// Never destroyed: descriptors may be forgotten from static destructors
// after main returns.
struct Registry {
  std::mutex mu;
  std::vector<Entry> entries;
};

Registry& registry() {
  static Registry* r = new Registry;
  return *r;
}

// The registry's mutex is held across fork(), so the child sees a whole list.
// The child's handler runs before anything else there and calls only fstat
// and close (async-signal-safe).
void prepare() noexcept {
  registry().mu.lock();
}
void parent() noexcept {
  registry().mu.unlock();
}
void child() noexcept {
  Registry& r = registry();
  for (const Entry& e : r.entries) {
    struct stat st;
    if (::fstat(e.fd, &st) == 0 && st.st_dev == e.dev && st.st_ino == e.ino) ::close(e.fd);
  }
  r.entries.clear();
  r.mu.unlock();
}

}  // namespace

Status close_in_forked_child(int fd) noexcept {
  static const bool installed = [] {
    ::pthread_atfork(prepare, parent, child);
    return true;
  }();
  (void)installed;
  struct stat st;
  if (::fstat(fd, &st) != 0) {
    const int err = errno;
    try {
      return Status(Code::kIo,
                    "cannot register descriptor " + std::to_string(fd) +
                        " to close in forked children: " + std::strerror(err),
                    err);
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory();
    }
  }
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  try {
    r.entries.push_back(Entry{fd, st.st_dev, st.st_ino});
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
  return Status::ok();
}

void forget_in_forked_child(int fd) noexcept {
  Registry& r = registry();
  std::lock_guard<std::mutex> lock(r.mu);
  r.entries.erase(
      std::remove_if(r.entries.begin(), r.entries.end(), [fd](const Entry& e) { return e.fd == fd; }),
      r.entries.end());
}

}  // namespace kura::ipc::detail
