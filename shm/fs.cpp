#include "fs_internal.hpp"

#include <sys/random.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstring>

#include "kura/core/name.hpp"

namespace kura::shm::detail {

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

std::string region_path(std::uint64_t owner, std::uint64_t counter) {
  return std::string(kShmDir) + format_region_name(owner, counter);
}

std::string region_temp_path(std::uint64_t owner, std::uint64_t counter) {
  return region_path(owner, counter) + ".tmp";
}

std::string lease_path(std::uint64_t owner) { return std::string(kShmDir) + "/kura_" + hex(owner) + ".lock"; }

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
      if (!parse_hex(s.substr(0, lock), e.owner) || !parse_hex(s.substr(lock + 6), ignored)) return std::nullopt;
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
    case EPERM:
      code = Code::kPermission;
      break;
    case ELOOP:
      code = Code::kPermission;
      hint = " (a symlink where a kura file belongs is refused; remove it)";
      break;
    case ENOSPC:
    case EDQUOT:
      code = Code::kNoSpace;
      hint = " (free space in /dev/shm, run `kura prune`, or raise the container's --shm-size)";
      break;
    default: break;
  }
  return Status(code, what + ": " + std::strerror(err) + hint, err);
}

std::uint64_t shm_free_bytes() noexcept {
  struct statvfs st;
  if (::statvfs(kShmDir, &st) != 0) return 0;
  return static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize;
}

Status check_own_file(int fd, const std::string& what) {
  struct stat st;
  if (::fstat(fd, &st) != 0) return os_error("cannot stat " + what, errno);
  if (!S_ISREG(st.st_mode))
    return Status(Code::kPermission, what + " is not a regular file; refusing it (remove it)");
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

Status pwrite_all(int fd, std::span<const std::byte> bytes, std::uint64_t offset) noexcept {
  while (!bytes.empty()) {
    ssize_t n = ::pwrite(fd, bytes.data(), bytes.size(), static_cast<off_t>(offset));
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ENOSPC) return Status(Code::kNoSpace, "/dev/shm is full while writing a region", errno);
      return os_error("cannot write a region", errno);
    }
    bytes = bytes.subspan(static_cast<std::size_t>(n));
    offset += static_cast<std::uint64_t>(n);
  }
  return Status::ok();
}

}  // namespace kura::shm::detail
