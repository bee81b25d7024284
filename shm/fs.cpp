#include <pthread.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <vector>

#include "fs_internal.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/region.hpp"

namespace kura::shm {

namespace detail {

std::string hex(std::uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%llx", static_cast<unsigned long long>(v));
  return buf;
}

bool same_file(int fd, const std::string& path) noexcept {
  struct stat a, b;
  if (::fstat(fd, &a) != 0 || ::lstat(path.c_str(), &b) != 0) return false;
  return a.st_dev == b.st_dev && a.st_ino == b.st_ino;
}

namespace {

// Parses one hex field of FORMAT.md section 1 (lowercase, 1..16 digits, no
// leading zero unless the field is "0").
bool parse_hex(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 16) return false;
  if (s.size() > 1 && s[0] == '0') return false;
  std::uint64_t v = 0;
  for (char c : s) {
    int d;
    if (c >= '0' && c <= '9') {
      d = c - '0';
    } else if (c >= 'a' && c <= 'f') {
      d = c - 'a' + 10;
    } else {
      return false;
    }
    v = (v << 4) | static_cast<std::uint64_t>(d);
  }
  out = v;
  return true;
}

bool consume_suffix(std::string_view& s, std::string_view suffix) {
  if (s.size() < suffix.size() || s.substr(s.size() - suffix.size()) != suffix) return false;
  s.remove_suffix(suffix.size());
  return true;
}

}  // namespace

std::string dir_path(std::string_view file_or_region_name) {
  std::string p = shm_dir();
  if (file_or_region_name.empty() || file_or_region_name.front() != '/') p += '/';
  p += file_or_region_name;
  return p;
}

std::string region_path(std::uint64_t owner, std::uint64_t counter) {
  return dir_path(format_region_name(owner, counter));
}

std::string region_temp_path(std::uint64_t owner, std::uint64_t counter) {
  return region_path(owner, counter) + ".tmp";
}

std::string lease_path(std::uint64_t owner) {
  return dir_path("kura_" + hex(owner) + ".lock");
}

std::optional<Entry> classify(std::string_view s) noexcept {
  constexpr std::string_view kPrefix = "kura_";
  if (s.substr(0, kPrefix.size()) != kPrefix) return std::nullopt;
  s.remove_prefix(kPrefix.size());
  Entry e{Entry::Type::kRegion};
  if (consume_suffix(s, ".lock")) {
    e.type = Entry::Type::kLease;
    if (!parse_hex(s, e.owner)) return std::nullopt;
    return e;
  }
  const bool temp = consume_suffix(s, ".tmp");
  if (temp) {
    // A lease being born: "<owner>.lock.<random>".
    auto lock = s.find(".lock.");
    if (lock != std::string_view::npos) {
      std::uint64_t ignored;
      if (!parse_hex(s.substr(0, lock), e.owner) || !parse_hex(s.substr(lock + 6), ignored))
        return std::nullopt;
      e.type = Entry::Type::kLeaseTemp;
      return e;
    }
  }
  auto sep = s.find('_');
  if (sep == std::string_view::npos) return std::nullopt;
  if (!parse_hex(s.substr(0, sep), e.owner) || !parse_hex(s.substr(sep + 1), e.counter)) return std::nullopt;
  e.type = temp ? Entry::Type::kRegionTemp : Entry::Type::kRegion;
  return e;
}

Result<std::uint64_t> random_u64() noexcept {
  std::uint64_t v = 0;
  auto* p = reinterpret_cast<unsigned char*>(&v);
  std::size_t got = 0;
  while (got < sizeof v) {
    ssize_t n = ::getrandom(p + got, sizeof v - got, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return os_error("cannot draw a random owner or counter (getrandom)", errno);
    }
    got += static_cast<std::size_t>(n);
  }
  return v;
}

Status os_error(const std::string& what, int err) {
  Code code = Code::kIo;
  std::string hint;
  switch (err) {
    case ENOENT: code = Code::kNotFound; break;
    case EEXIST: code = Code::kExists; break;
    case EACCES:
    case EPERM: code = Code::kPermission; break;
    case ELOOP:
      code = Code::kPermission;
      hint = " (a symlink where a kura file belongs is refused; remove it)";
      break;
    case ENOSPC:
    case EDQUOT:
      code = Code::kNoSpace;
      hint = " (free space in " + shm_dir() + ", run `kura prune`, or raise the container's --shm-size)";
      break;
    case ENOMEM: return Status::out_of_memory();
    default: break;
  }
  return Status(code, what + ": " + std::strerror(err) + hint, err);
}

std::uint64_t shm_free_bytes() noexcept {
  struct statvfs st;
  if (::statvfs(shm_dir().c_str(), &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

Status region_not_found(const std::string& region_name) {
  return Status(Code::kNotFound,
                "region " + region_name +
                    " does not exist (released by its owner, pruned, or never published; see `kura ls`)",
                ENOENT);
}

Status check_own_file(int fd, const std::string& what) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return os_error("cannot stat " + what, errno);
  if (!S_ISREG(st.st_mode))
    return Status(Code::kPermission, what +
                                         " is not a regular file (a FIFO, device or directory planted "
                                         "where a kura file belongs); refusing it (remove it)");
  if (st.st_uid != ::geteuid())
    return Status(Code::kPermission, what + " belongs to user " + std::to_string(st.st_uid) +
                                         ", not to this user (" + std::to_string(::geteuid()) +
                                         "); refusing it");
  if ((st.st_mode & 077) != 0) {
    char mode[8];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    return Status(Code::kPermission, what + " has mode " + mode +
                                         ", open to group or other; refusing it (kura writes 0400 regions "
                                         "and 0600 leases; remove it)");
  }
  return Status::ok();
}

Result<int> open_own_file(const std::string& path, int flags, const std::string& what) {
  int fd = ::open(path.c_str(), flags | kOpenFlags);
  if (fd < 0) {
    const int e = errno;
    if (e == ENOENT) return Status(Code::kNotFound, what + " does not exist", e);
    if (e == ELOOP)
      return Status(Code::kPermission, what + " is a symbolic link; refusing it (remove it)", e);
    return os_error("cannot open " + what, e);
  }
  Status s = check_own_file(fd, what);
  if (!s) {
    ::close(fd);
    return s;
  }
  return fd;
}

Status pwrite_all(int fd, std::span<const std::byte> bytes, std::uint64_t offset) noexcept {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC)
        return Status(Code::kNoSpace, shm_dir() + " is full while writing a region", errno);
      return os_error("cannot write a region", errno);
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return Status::ok();
}

// --- Locks on leases and region temporaries --------------------------------------

int try_lock(int fd, short type, off_t start, off_t len) noexcept {
  struct flock fl {};
  fl.l_type = type;
  fl.l_whence = SEEK_SET;
  fl.l_start = start;
  fl.l_len = len;
  int rc;
  do {
    rc = ::fcntl(fd, F_OFD_SETLK, &fl);
  } while (rc != 0 && errno == EINTR);
  return rc == 0 ? 0 : errno;
}

bool locked_by_other(int fd, off_t at) noexcept {
  struct flock fl {};
  fl.l_type = F_WRLCK;  // conflicts with any lock
  fl.l_whence = SEEK_SET;
  fl.l_start = at;
  fl.l_len = 1;
  if (::fcntl(fd, F_OFD_GETLK, &fl) != 0) return false;
  return fl.l_type != F_UNLCK;
}

// --- fork() ----------------------------------------------------------------------

namespace {

// The registry of descriptors to close in a forked child. Never destroyed:
// descriptors may be dropped from static destructors after main returns.
struct ForkRegistry {
  std::mutex mu;
  std::vector<int> fds;
};

ForkRegistry& fork_registry() {
  static ForkRegistry* r = new ForkRegistry;
  return *r;
}

// pthread_atfork handlers: the registry's mutex is held across fork() so the
// child sees a consistent list; the child closes every descriptor in it.
void registry_prepare() noexcept {
  fork_registry().mu.lock();
}
void registry_parent() noexcept {
  fork_registry().mu.unlock();
}
void registry_child() noexcept {
  ForkRegistry& r = fork_registry();
  for (int fd : r.fds) ::close(fd);
  r.fds.clear();
  r.mu.unlock();
}

}  // namespace

// Registered when the library loads (see map_cache.cpp): never while
// another thread is inside a first use.
[[maybe_unused]] const int g_fork_handlers =
    ::pthread_atfork(registry_prepare, registry_parent, registry_child);

Status close_in_child(int fd) noexcept {
  ForkRegistry& r = fork_registry();
  std::lock_guard<std::mutex> lock(r.mu);
  try {
    r.fds.push_back(fd);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
  return Status::ok();
}

void forget_in_child(int fd) noexcept {
  ForkRegistry& r = fork_registry();
  std::lock_guard<std::mutex> lock(r.mu);
  auto it = std::find(r.fds.begin(), r.fds.end(), fd);
  if (it != r.fds.end()) r.fds.erase(it);
}

Result<OwnedFd> OwnedFd::adopt(int fd, bool fork_private) noexcept {
  OwnedFd out;
  out.fd_ = fd;
  out.pid_ = ::getpid();
  if (fork_private) {
    Status s = close_in_child(fd);
    if (!s) {
      ::close(fd);
      out.fd_ = -1;
      return s;
    }
    out.registered_ = true;
  }
  return out;
}

OwnedFd::OwnedFd(OwnedFd&& other) noexcept
    : fd_(other.fd_), pid_(other.pid_), registered_(other.registered_) {
  other.fd_ = -1;
  other.registered_ = false;
}

OwnedFd& OwnedFd::operator=(OwnedFd&& other) noexcept {
  if (this != &other) {
    reset();
    fd_ = other.fd_;
    pid_ = other.pid_;
    registered_ = other.registered_;
    other.fd_ = -1;
    other.registered_ = false;
  }
  return *this;
}

bool OwnedFd::here() const noexcept {
  return fd_ >= 0 && pid_ == ::getpid();
}

void OwnedFd::reset() noexcept {
  if (fd_ >= 0) {
    if (pid_ == ::getpid()) {
      if (registered_) forget_in_child(fd_);
      ::close(fd_);
    } else if (!registered_) {
      ::close(fd_);  // an inherited copy; a registered one was closed at the fork
    }
  }
  fd_ = -1;
  registered_ = false;
}

// --- Mapping -----------------------------------------------------------------------

Result<Mapping> Mapping::map(int fd, std::size_t size, bool writable, bool fork_private) noexcept {
  void* p = ::mmap(nullptr, size, writable ? PROT_READ | PROT_WRITE : PROT_READ, MAP_SHARED, fd, 0);
  if (p == MAP_FAILED) {
    if (errno == ENOMEM) return Status::out_of_memory();
    return os_error("cannot map a region of " + human_bytes(size), errno);
  }
  Mapping m;
  m.data_ = static_cast<std::byte*>(p);
  m.size_ = size;
  m.pid_ = ::getpid();
  m.fork_private_ = fork_private;
  if (fork_private && ::madvise(p, size, MADV_DONTFORK) != 0) {
    Status s = os_error("cannot keep a writable mapping out of forked children (madvise)", errno);
    m.reset();
    return s;
  }
  return m;
}

Mapping::Mapping(Mapping&& other) noexcept
    : data_(other.data_), size_(other.size_), pid_(other.pid_), fork_private_(other.fork_private_) {
  other.data_ = nullptr;
  other.size_ = 0;
}

Mapping& Mapping::operator=(Mapping&& other) noexcept {
  if (this != &other) {
    reset();
    data_ = other.data_;
    size_ = other.size_;
    pid_ = other.pid_;
    fork_private_ = other.fork_private_;
    other.data_ = nullptr;
    other.size_ = 0;
  }
  return *this;
}

void Mapping::reset() noexcept {
  if (data_ != nullptr && (!fork_private_ || pid_ == ::getpid())) ::munmap(data_, size_);
  data_ = nullptr;
  size_ = 0;
}

}  // namespace detail
}  // namespace kura::shm
