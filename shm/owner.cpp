#include "kura/shm/owner.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <new>
#include <set>
#include <string>

#include "fs_internal.hpp"
#include "owner_internal.hpp"

namespace kura::shm {

namespace {

using detail::kOpenFlags;

// The process's owner. Never destroyed: regions may be released from static
// destructors after main returns.
struct OwnerState {
  std::mutex mu;
  pid_t pid = 0;  // the process that made `owner`; another pid means a fork
  std::uint64_t owner = 0;
  int fd = -1;  // the lease, read-locked on its alive byte
  bool at_exit_registered = false;
  std::set<std::string> disowned;  // region files the clean exit leaves
};

OwnerState& owner_state() {
  static OwnerState* s = new OwnerState;
  return *s;
}

// At a clean exit, removes every region and temporary file of the process's
// owner that is still present (but those disown()ed), then the lease
// (DESIGN.md section 3).
void clean_up_at_exit() noexcept {
  OwnerState& s = owner_state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.fd < 0 || s.pid != ::getpid()) return;
  try {
    if (DIR* dir = ::opendir(detail::shm_dir().c_str())) {
      const int dfd = ::dirfd(dir);
      while (dirent* de = ::readdir(dir)) {
        auto e = detail::classify(de->d_name);
        if (!e || e->owner != s.owner) continue;
        if (e->type != detail::Entry::Type::kRegion && e->type != detail::Entry::Type::kRegionTemp) continue;
        if (s.disowned.count(de->d_name) != 0) continue;
        struct stat st;
        if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
            st.st_uid == ::geteuid())
          ::unlinkat(dfd, de->d_name, 0);
      }
      ::closedir(dir);
    }
    const std::string path = detail::lease_path(s.owner);
    if (detail::same_file(s.fd, path)) ::unlink(path.c_str());
  } catch (...) {
    // Out of memory at exit: what is left is an orphan that prune removes.
  }
  detail::forget_in_child(s.fd);
  ::close(s.fd);
  s.fd = -1;
  s.owner = 0;
}

// In a forked child, right after fork(): the lease descriptor was closed by
// the fork registry (it would keep the parent's owner alive after the parent
// died); forget the owner, so the child makes one of its own when it needs
// one. The mutex is made anew: another thread may have held it at the fork,
// and that thread does not exist in the child.
void forget_owner_in_child() noexcept {
  OwnerState& s = owner_state();
  new (&s.mu) std::mutex();
  s.fd = -1;
  s.owner = 0;
  s.pid = 0;
  s.disowned.clear();
}

// Registered when the library loads, not at the first owner: a fork() while
// another thread made the first owner (holding the mutex) would otherwise
// leave the child's mutex held for good. Before a fork, the state is made
// whole (a first use on another thread finishes first).
[[maybe_unused]] const int g_fork_handlers =
    ::pthread_atfork([] { (void)owner_state(); }, nullptr, forget_owner_in_child);

// Creates a new owner and its lease, born locked: the lease is made under a
// private temporary name, locked, and only then linked into place, so no
// other process ever sees it unlocked.
Status create_owner(std::uint64_t& owner_out, int& fd_out) {
  for (int attempt = 0; attempt < 16; ++attempt) {
    KURA_ASSIGN_OR_RETURN(std::uint64_t owner, detail::random_u64());
    KURA_ASSIGN_OR_RETURN(std::uint64_t salt, detail::random_u64());
    if (owner == kKeptOwner) continue;
    const std::string path = detail::lease_path(owner);
    const std::string temp = path + "." + detail::hex(salt) + ".tmp";
    int fd = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | kOpenFlags, 0600);
    if (fd < 0) {
      if (errno == EEXIST) continue;
      return detail::os_error("cannot create lease file " + temp, errno);
    }
    auto fail = [&](const std::string& what, int err) {
      Status s = detail::os_error(what, err);
      ::unlink(temp.c_str());
      ::close(fd);
      return s;
    };
    // 0600 whatever the umask.
    if (::fchmod(fd, 0600) != 0) return fail("cannot set mode 0600 on lease file " + temp, errno);
    if (int err = detail::try_lock(fd, F_RDLCK, detail::kAliveByte, 1); err != 0)
      return fail("cannot lock lease file " + temp, err);
    // A concurrent prune may have found the temporary before the lock and
    // removed it: then start again with a new one.
    if (!detail::same_file(fd, temp)) {
      ::close(fd);
      continue;
    }
    if (::link(temp.c_str(), path.c_str()) != 0) {
      if (errno == EEXIST || errno == ENOENT) {
        ::unlink(temp.c_str());
        ::close(fd);
        continue;
      }
      return fail("cannot link lease file " + temp + " to " + path, errno);
    }
    ::unlink(temp.c_str());
    if (Status s = detail::close_in_child(fd); !s) {
      ::unlink(path.c_str());
      ::close(fd);
      return s;
    }
    owner_out = owner;
    fd_out = fd;
    return Status::ok();
  }
  return Status(Code::kExists,
                "cannot create a lease in " + detail::shm_dir() + ": 16 random owner ids were all taken");
}

}  // namespace

namespace detail {

LeaseProbe probe_lease(std::uint64_t owner) noexcept {
  LeaseProbe out;
  if (owner == kKeptOwner) return out;
  try {
    const std::string path = lease_path(owner);
    // Read-write: prune's lock is a write lock.
    int fd = ::open(path.c_str(), O_RDWR | kOpenFlags);
    if (fd < 0) {
      if (errno == ENOENT) out.state = LeaseProbe::State::kMissing;
      return out;  // a lease that cannot be opened counts as alive
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
      ::close(fd);
      return out;  // another user's lease, or not a lease: never proved dead
    }
    // Both bytes at once: the owner is dead and nobody writes for it.
    if (try_lock(fd, F_WRLCK, kAliveByte, 2) != 0 || !same_file(fd, path)) {
      ::close(fd);
      return out;
    }
    out.state = LeaseProbe::State::kDead;
    out.fd = fd;
    return out;
  } catch (...) {
    return out;
  }
}

void disowned(const std::string& region_name) noexcept {
  OwnerState& s = owner_state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.fd < 0 || s.pid != ::getpid()) return;
  try {
    s.disowned.insert(region_name.substr(1));  // the file name, without "/"
  } catch (...) {
    // Out of memory: the region is removed at exit after all.
  }
}

int lease_fd(const Lease& lease) noexcept {
  return LeaseAccess::fd(lease);
}

}  // namespace detail

Result<std::uint64_t> process_owner() noexcept {
  return detail::boundary("process owner", [&]() -> Result<std::uint64_t> {
    KURA_RETURN_IF_ERROR(check_directory());
    OwnerState& s = owner_state();
    std::lock_guard<std::mutex> lock(s.mu);
    const pid_t pid = ::getpid();
    if (s.fd >= 0 && s.pid == pid) return s.owner;
    std::uint64_t owner = 0;
    int fd = -1;
    KURA_RETURN_IF_ERROR(create_owner(owner, fd));
    s.owner = owner;
    s.fd = fd;
    s.pid = pid;
    if (!s.at_exit_registered) {
      s.at_exit_registered = true;
      std::atexit([] { clean_up_at_exit(); });
    }
    return owner;
  });
}

Lease::Lease(std::uint64_t owner, int fd) noexcept : owner_(owner), fd_(fd), pid_(::getpid()) {}

Result<Lease> Lease::hold(std::uint64_t owner) noexcept {
  return detail::boundary("hold lease", [&]() -> Result<Lease> {
    KURA_RETURN_IF_ERROR(check_directory());
    const std::string who = "owner " + detail::hex(owner);
    if (owner == kKeptOwner) return Status(Code::kNotFound, "owner 0 (kept regions) has no lease to hold");
    const std::string path = detail::lease_path(owner);
    auto fd = detail::open_own_file(path, O_RDONLY, "the lease of " + who + " (" + path + ")");
    if (!fd) {
      if (fd.status().code() == Code::kNotFound)
        return Status(Code::kNotFound, who + " has no lease (" + path + "): the owner is gone", ENOENT);
      return fd.status();
    }
    if (Status s = detail::close_in_child(*fd); !s) {
      ::close(*fd);
      return s;
    }
    Lease lease(owner, *fd);  // closes the descriptor on every early return
    // The holder byte first: from here on prune leaves the owner's files.
    if (int err = detail::try_lock(*fd, F_RDLCK, detail::kHolderByte, 1); err != 0) {
      if (err == EAGAIN || err == EACCES)
        return Status(Code::kNotFound, who + " is dead: its lease " + path + " is being pruned");
      return detail::os_error("cannot lock lease " + path, err);
    }
    if (!detail::locked_by_other(*fd, detail::kAliveByte))
      return Status(Code::kNotFound, who + " is dead: nobody holds its lease " + path);
    // A prune or the owner's clean exit may have removed the lease meanwhile.
    if (!detail::same_file(*fd, path))
      return Status(Code::kNotFound, who + " is gone: its lease " + path + " was removed");
    return Result<Lease>(std::move(lease));
  });
}

bool Lease::owner_alive() const noexcept {
  if (fd_ < 0 || pid_ != ::getpid()) return false;
  try {
    return detail::locked_by_other(fd_, detail::kAliveByte) &&
           detail::same_file(fd_, detail::lease_path(owner_));
  } catch (...) {
    return false;
  }
}

void Lease::reset() noexcept {
  if (fd_ >= 0 && pid_ == ::getpid()) {
    detail::forget_in_child(fd_);
    ::close(fd_);
  }
  fd_ = -1;
}

Lease::Lease(Lease&& other) noexcept : owner_(other.owner_), fd_(other.fd_), pid_(other.pid_) {
  other.fd_ = -1;
}

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    reset();
    owner_ = other.owner_;
    fd_ = other.fd_;
    pid_ = other.pid_;
    other.fd_ = -1;
  }
  return *this;
}

Lease::~Lease() {
  reset();
}

bool owner_alive(std::uint64_t owner) noexcept {
  if (owner == kKeptOwner) return true;
  try {
    const std::string path = detail::lease_path(owner);
    int fd = ::open(path.c_str(), O_RDONLY | kOpenFlags);
    if (fd < 0) return errno != ENOENT;  // a lease that cannot be opened counts as alive
    struct stat st;
    bool alive = true;
    if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid())
      alive = detail::locked_by_other(fd, detail::kAliveByte);
    ::close(fd);
    return alive;
  } catch (...) {
    return true;
  }
}

}  // namespace kura::shm
