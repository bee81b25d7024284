#include "kura/shm/owner.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <pthread.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <mutex>
#include <new>
#include <string>

#include "fs_internal.hpp"

namespace kura::shm {

namespace {

using detail::kOpenFlags;

int flock_retry(int fd, int op) {
  int rc;
  do {
    rc = ::flock(fd, op);
  } while (rc != 0 && errno == EINTR);
  return rc;
}

// The process's owner. Never destroyed: regions may be released from static
// destructors after main returns.
struct OwnerState {
  std::mutex mu;
  pid_t pid = 0;  // the process that made `owner`; another pid means a fork
  std::uint64_t owner = 0;
  int fd = -1;    // the lease, held with LOCK_SH
  bool at_exit_registered = false;
};

OwnerState& owner_state() {
  static OwnerState* s = new OwnerState;
  return *s;
}

// At a clean exit, removes every region and temporary file of the process's
// owner that is still present, then the lease (DESIGN.md section 3).
void clean_up_at_exit() noexcept {
  OwnerState& s = owner_state();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.fd < 0 || s.pid != ::getpid()) return;
  if (DIR* dir = ::opendir(detail::kShmDir)) {
    const int dfd = ::dirfd(dir);
    while (dirent* de = ::readdir(dir)) {
      auto e = detail::classify(de->d_name);
      if (!e || e->owner != s.owner) continue;
      if (e->type != detail::Entry::Type::kRegion && e->type != detail::Entry::Type::kRegionTemp) continue;
      struct stat st;
      if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) == 0 && S_ISREG(st.st_mode) &&
          st.st_uid == ::geteuid())
        ::unlinkat(dfd, de->d_name, 0);
    }
    ::closedir(dir);
  }
  try {
    const std::string path = detail::lease_path(s.owner);
    if (detail::same_file(s.fd, path)) ::unlink(path.c_str());
  } catch (...) {
  }
  ::close(s.fd);
  s.fd = -1;
  s.owner = 0;
}

// In a forked child, right after fork(): the inherited lease descriptor
// shares the parent's lock, and would keep the parent's owner alive after
// the parent died. Close it; the child makes an owner of its own when it
// needs one. The mutex is made anew: another thread may have held it at the
// fork, and that thread does not exist in the child.
void forget_owner_in_child() noexcept {
  OwnerState& s = owner_state();
  new (&s.mu) std::mutex();
  if (s.fd >= 0) ::close(s.fd);
  s.fd = -1;
  s.owner = 0;
  s.pid = 0;
}

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
    auto fail = [&](const std::string& what) {
      Status s = detail::os_error(what, errno);
      ::unlink(temp.c_str());
      ::close(fd);
      return s;
    };
    // 0600 whatever the umask.
    if (::fchmod(fd, 0600) != 0) return fail("cannot set mode 0600 on lease file " + temp);
    if (flock_retry(fd, LOCK_SH) != 0) return fail("cannot lock lease file " + temp);
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
      return fail("cannot link lease file " + temp + " to " + path);
    }
    ::unlink(temp.c_str());
    owner_out = owner;
    fd_out = fd;
    return Status::ok();
  }
  return Status(Code::kExists, "cannot create a lease in /dev/shm: 16 random owner ids were all taken");
}

}  // namespace

namespace detail {

LeaseProbe probe_lease(std::uint64_t owner) noexcept {
  LeaseProbe out;
  if (owner == kKeptOwner) return out;
  try {
    const std::string path = lease_path(owner);
    int fd = ::open(path.c_str(), O_RDONLY | kOpenFlags);
    if (fd < 0) {
      if (errno == ENOENT) out.state = LeaseProbe::State::kMissing;
      return out;  // a lease that cannot be opened counts as alive
    }
    struct stat st;
    if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) {
      ::close(fd);
      return out;  // another user's lease: never proved dead
    }
    // Nobody holds a shared lock if an exclusive one can be taken at once.
    if (flock_retry(fd, LOCK_EX | LOCK_NB) != 0 || !same_file(fd, path)) {
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

}  // namespace detail

Result<std::uint64_t> process_owner() noexcept {
  return detail::boundary("process owner", [&]() -> Result<std::uint64_t> {
    OwnerState& s = owner_state();
    std::lock_guard<std::mutex> lock(s.mu);
    const pid_t pid = ::getpid();
    if (s.fd >= 0 && s.pid == pid) return s.owner;
    if (s.fd >= 0) {
      // A forked child: its copy of the parent's lease descriptor would keep
      // the parent's owner alive after the parent dies. Drop it (the parent's
      // own descriptor keeps its lock) and become an owner of our own.
      ::close(s.fd);
      s.fd = -1;
    }
    std::uint64_t owner = 0;
    int fd = -1;
    KURA_RETURN_IF_ERROR(create_owner(owner, fd));
    s.owner = owner;
    s.fd = fd;
    s.pid = pid;
    if (!s.at_exit_registered) {
      s.at_exit_registered = true;
      std::atexit([] { clean_up_at_exit(); });
      ::pthread_atfork(nullptr, nullptr, forget_owner_in_child);
    }
    return owner;
  });
}

Result<Lease> Lease::hold(std::uint64_t owner) noexcept {
  return detail::boundary("hold lease", [&]() -> Result<Lease> {
    if (owner == kKeptOwner) return Status(Code::kNotFound, "owner 0 (kept regions) has no lease to hold");
    const std::string path = detail::lease_path(owner);
    const std::string who = "owner " + detail::hex(owner);
    int fd = ::open(path.c_str(), O_RDONLY | kOpenFlags);
    if (fd < 0) {
      if (errno == ENOENT)
        return Status(Code::kNotFound, who + " has no lease (" + path + "): the owner is gone", ENOENT);
      return detail::os_error("cannot open the lease of " + who + " (" + path + ")", errno);
    }
    Lease lease(owner, fd);  // closes fd on every early return
    KURA_RETURN_IF_ERROR(detail::check_own_file(fd, "lease " + path));
    if (flock_retry(fd, LOCK_EX | LOCK_NB) == 0)
      return Status(Code::kNotFound, who + " is dead: nobody holds its lease " + path);
    if (errno != EWOULDBLOCK) return detail::os_error("cannot lock lease " + path, errno);
    if (flock_retry(fd, LOCK_SH) != 0) return detail::os_error("cannot lock lease " + path, errno);
    // A prune may have removed the lease while we waited for the lock.
    if (!detail::same_file(fd, path))
      return Status(Code::kNotFound, who + " is gone: its lease " + path + " was removed");
    return Result<Lease>(std::move(lease));
  });
}

Lease::Lease(Lease&& other) noexcept : owner_(other.owner_), fd_(other.fd_) { other.fd_ = -1; }

Lease& Lease::operator=(Lease&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) ::close(fd_);
    owner_ = other.owner_;
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

Lease::~Lease() {
  if (fd_ >= 0) ::close(fd_);
}

bool owner_alive(std::uint64_t owner) noexcept {
  if (owner == kKeptOwner) return true;
  detail::LeaseProbe p = detail::probe_lease(owner);
  if (p.fd >= 0) ::close(p.fd);  // releases the exclusive lock at once
  return p.state == detail::LeaseProbe::State::kAlive;
}

}  // namespace kura::shm
