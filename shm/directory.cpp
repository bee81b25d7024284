// The region directory: fixed once per process (set_directory, KURA_SHM_DIR,
// /dev/shm), checked once, and how its file system backs regions with pages.
#include "kura/shm/directory.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <mutex>
#include <sstream>
#include <vector>

#include "fs_internal.hpp"
#include "kura/core/name.hpp"

namespace kura::shm {

namespace {

constexpr std::uint64_t kHugePageSize = std::uint64_t{2} << 20;

// The directory once fixed (never changes afterwards, never freed, so the
// reference directory() returns stays valid), and the result of checking it.
// Every member is trivially destructible: nothing here is torn down at exit
// while another thread may still use it.
struct DirState {
  std::mutex mu;
  std::atomic<const std::string*> dir{nullptr};
  const Status* check = nullptr;  // set with `dir`, read and replaced under `mu`
  // Set once `check` is ok, which it then stays: check_directory() returns
  // without the mutex, so every map() is spared a lock, and a child forked
  // while another thread held it is not left waiting on it for ever.
  std::atomic<bool> good{false};
};

DirState& dir_state() noexcept {
  static DirState s;
  return s;
}

std::string without_trailing_slashes(std::string d) {
  while (d.size() > 1 && d.back() == '/') d.pop_back();
  return d;
}

std::string mode_string(mode_t m) {
  char buf[8];
  std::snprintf(buf, sizeof buf, "%04o", static_cast<unsigned>(m & 07777));
  return buf;
}

// The checks of check_directory() on `dir`.
Status validate(const std::string& dir) {
  const std::string what = "region directory " + dir;
  if (dir.empty() || dir.front() != '/')
    return invalid_argument(what + " is not an absolute path (KURA_SHM_DIR and set_directory take one)");
  struct stat st;
  if (::lstat(dir.c_str(), &st) != 0) {
    const int e = errno;
    if (e == ENOENT)
      return Status(Code::kNotFound, what + " does not exist (create it, or mount a tmpfs there)", e);
    return detail::os_error("cannot stat " + what, e);
  }
  if (S_ISLNK(st.st_mode))
    return Status(Code::kPermission,
                  what + " is a symbolic link; refusing it (name the directory it points to)");
  if (!S_ISDIR(st.st_mode)) return invalid_argument(what + " is not a directory");
  const bool sticky = (st.st_mode & S_ISVTX) != 0;
  if (sticky) return Status::ok();  // like /dev/shm: nobody else can remove or rename our files
  if (st.st_uid != ::geteuid())
    return Status(Code::kPermission,
                  what + " belongs to user " + std::to_string(st.st_uid) + " and is not sticky (mode " +
                      mode_string(st.st_mode) +
                      "); use a directory of your own, or one with mode 1777 like /dev/shm");
  if ((st.st_mode & 022) != 0)
    return Status(Code::kPermission,
                  what + " is writable by group or other without the sticky bit (mode " +
                      mode_string(st.st_mode) +
                      "): anyone could remove or replace regions there; chmod 700 or chmod 1777 it");
  return Status::ok();
}

// Fixes the directory to `dir` unless it is fixed already; returns the fixed one.
const std::string& fix(DirState& s, std::string dir, Status check) {
  std::lock_guard<std::mutex> lock(s.mu);
  if (const std::string* d = s.dir.load(std::memory_order_acquire)) return *d;
  s.check = new Status(std::move(check));
  auto* fixed = new std::string(std::move(dir));
  s.good.store(s.check->is_ok(), std::memory_order_release);
  s.dir.store(fixed, std::memory_order_release);
  return *fixed;
}

// "[never]" of "always within_size advise [never] deny force".
std::string bracketed(const std::string& line) {
  auto open = line.find('[');
  auto close = line.find(']', open);
  if (open == std::string::npos || close == std::string::npos) return {};
  return line.substr(open + 1, close - open - 1);
}

// The file system type and super-block options of the mount holding `dir`,
// from /proc/self/mountinfo (matched by device number).
bool mount_of(const std::string& dir, std::string& fs_type, std::string& options) {
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0) return false;
  const std::string dev = std::to_string(major(st.st_dev)) + ":" + std::to_string(minor(st.st_dev));
  std::ifstream in("/proc/self/mountinfo");
  std::string line;
  while (std::getline(in, line)) {
    // id parent major:minor root mount-point options [optional...] - type source super-options
    std::istringstream f(line);
    std::string id, parent, devno;
    if (!(f >> id >> parent >> devno) || devno != dev) continue;
    auto sep = line.find(" - ");
    if (sep == std::string::npos) continue;
    // "type source super-options", one space apart; the source may be
    // empty ("tmpfs  rw,huge=always"), so split on each space rather than
    // skipping runs of them.
    const std::string tail = line.substr(sep + 3);
    const auto sp1 = tail.find(' ');
    const auto sp2 = sp1 == std::string::npos ? std::string::npos : tail.find(' ', sp1 + 1);
    if (sp2 == std::string::npos) continue;
    fs_type = tail.substr(0, sp1);
    options = tail.substr(sp2 + 1, tail.find(' ', sp2 + 1) - (sp2 + 1));
    return true;
  }
  return false;
}

// The value of `key=` in a comma-separated option list, or "".
std::string option(const std::string& options, const std::string& key) {
  std::istringstream in(options);
  std::string item;
  while (std::getline(in, item, ','))
    if (item.rfind(key + "=", 0) == 0) return item.substr(key.size() + 1);
  return {};
}

DirectoryInfo read_info(const std::string& dir) {
  DirectoryInfo info;
  info.path = dir;
  if (!mount_of(dir, info.fs_type, info.mount_options)) {
    info.reason = "the mount is not in /proc/self/mountinfo";
    return info;
  }
  if (info.fs_type != "tmpfs") {
    info.reason = info.fs_type + " is not a tmpfs";
    return info;
  }
  std::string forced;
  {
    std::ifstream in("/sys/kernel/mm/transparent_hugepage/shmem_enabled");
    std::string line;
    if (std::getline(in, line)) forced = bracketed(line);
  }
  const std::string huge = option(info.mount_options, "huge");
  if (forced == "deny") {
    info.reason = "shmem_enabled=deny";
  } else if (forced == "force") {
    info.huge = HugePages::kAlways;
    info.reason = "shmem_enabled=force";
  } else if (huge == "always") {
    info.huge = HugePages::kAlways;
  } else if (huge == "within_size") {
    info.huge = HugePages::kWithinSize;
  } else if (huge == "advise") {
    info.huge = HugePages::kAdvise;
  }
  if (info.reason.empty()) info.reason = huge.empty() ? "no huge= mount option" : "mount option huge=" + huge;
  if (info.huge != HugePages::kNever) info.page_size = kHugePageSize;
  return info;
}

// The kB of the mapping that starts at `start` mapped with huge-page
// entries: its ShmemPmdMapped plus FilePmdMapped in /proc/self/smaps, read
// in one pass; 0 when neither is there.
long long smaps_pmd_kb(const void* start) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  const auto want = reinterpret_cast<std::uintptr_t>(start);
  bool in_it = false;
  long long kb = 0;
  while (std::getline(in, line)) {
    if (line.empty()) continue;
    const char c = line[0];
    if ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f')) {  // "7f84..-7f84.. r--s ..." starts a mapping
      if (in_it) break;
      in_it = std::strtoull(line.c_str(), nullptr, 16) == want;
      continue;
    }
    if (!in_it) continue;
    for (const char* field : {"ShmemPmdMapped:", "FilePmdMapped:"}) {
      const std::size_t n = std::strlen(field);
      if (line.compare(0, n, field) == 0) kb += std::max(0LL, std::strtoll(line.c_str() + n, nullptr, 10));
    }
  }
  return kb;
}

}  // namespace

namespace detail {

const std::string& shm_dir() noexcept {
  DirState& s = dir_state();
  if (const std::string* d = s.dir.load(std::memory_order_acquire)) return *d;
  // A path is small; if even that cannot be allocated the process cannot do
  // anything with regions anyway.
  try {
    const char* env = std::getenv("KURA_SHM_DIR");
    std::string d = without_trailing_slashes((env != nullptr && *env != '\0') ? env : "/dev/shm");
    Status check = validate(d);
    return fix(s, std::move(d), std::move(check));
  } catch (...) {
    // Out of memory: nothing is fixed, check_directory() says OutOfMemory
    // (every function that touches the directory checks it first), and the
    // next call tries again.
    static const std::string none;
    return none;
  }
}

HugePages huge_pages() noexcept {
  static const HugePages h = [] {
    auto info = directory_info();
    return info ? info->huge : HugePages::kNever;
  }();
  return h;
}

}  // namespace detail

Status set_directory(std::string_view path) noexcept {
  return detail::boundary("set_directory", [&]() -> Status {
    if (path.find('\0') != std::string_view::npos)
      return invalid_argument("a region directory cannot contain a NUL byte");
    std::string dir = without_trailing_slashes(std::string(path));
    KURA_RETURN_IF_ERROR(validate(dir));
    DirState& s = dir_state();
    const std::string& fixed = fix(s, dir, Status::ok());
    if (fixed != dir)
      return invalid_argument("the region directory is already " + fixed +
                              " (kura::shm was used before set_directory(\"" + dir +
                              "\")); call set_directory first, or set KURA_SHM_DIR");
    {
      // The same directory, refused at first use (missing, say) and good
      // now: from here on it is checked as good.
      std::lock_guard<std::mutex> lock(s.mu);
      if (!s.check->is_ok()) {
        const Status* refused = s.check;  // read only under `mu`
        s.check = new Status();
        s.good.store(true, std::memory_order_release);
        delete refused;
      }
    }
    if (::setenv("KURA_SHM_DIR", dir.c_str(), 1) != 0)
      return detail::os_error("cannot set KURA_SHM_DIR", errno);
    return Status::ok();
  });
}

const std::string& directory() noexcept {
  return detail::shm_dir();
}

Status check_directory() noexcept {
  (void)detail::shm_dir();
  DirState& s = dir_state();
  if (s.good.load(std::memory_order_acquire)) return Status::ok();
  std::lock_guard<std::mutex> lock(s.mu);
  if (s.check == nullptr) return Status::out_of_memory();  // shm_dir() could not fix the directory
  try {
    return *s.check;
  } catch (...) {
    return Status::out_of_memory();
  }
}

std::string_view huge_pages_name(HugePages h) noexcept {
  switch (h) {
    case HugePages::kNever: return "never";
    case HugePages::kAlways: return "always";
    case HugePages::kWithinSize: return "within_size";
    case HugePages::kAdvise: return "advise";
  }
  return "?";
}

Result<DirectoryInfo> directory_info() noexcept {
  return detail::boundary("directory_info", [&]() -> Result<DirectoryInfo> {
    KURA_RETURN_IF_ERROR(check_directory());
    static const DirectoryInfo info = read_info(detail::shm_dir());
    return info;
  });
}

Result<RegionPages> region_pages(std::string_view name) noexcept {
  return detail::boundary("region_pages", [&]() -> Result<RegionPages> {
    KURA_RETURN_IF_ERROR(check_directory());
    KURA_ASSIGN_OR_RETURN(Name n, parse_name(name));
    if (!n.path.empty())
      return invalid_name("region_pages takes a region name without a path, not " + std::string(name));
    const std::string region_name = format_region_name(n.owner, n.counter);
    KURA_ASSIGN_OR_RETURN(
        int raw_fd, detail::open_own_file(detail::dir_path(region_name), O_RDONLY, "region " + region_name));
    KURA_ASSIGN_OR_RETURN(detail::OwnedFd fd, detail::OwnedFd::adopt(raw_fd, false));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return detail::os_error("cannot stat region " + region_name, errno);
    RegionPages out;
    out.size = static_cast<std::uint64_t>(st.st_size);
    if (out.size == 0) return out;
    KURA_ASSIGN_OR_RETURN(detail::Mapping m,
                          detail::Mapping::map(fd.get(), static_cast<std::size_t>(out.size), false, false));
    // One read fault per 2 MiB that holds data maps each huge page there
    // with one PMD entry (or one 4 KiB page and its neighbours, where pages
    // are small). Holes are skipped (SEEK_DATA): a read fault in a tmpfs
    // hole would allocate a page there. The faults are taken with
    // MADV_POPULATE_READ, never by touching the mapping: a region truncated
    // meanwhile (or a page that cannot be had in a full tmpfs) is an error
    // of madvise, where a read would be a SIGBUS.
    for (std::uint64_t at = 0; at < out.size;) {
      const off_t data = ::lseek(fd.get(), static_cast<off_t>(at), SEEK_DATA);
      if (data < 0) break;  // ENXIO: no data from `at` on (or the file shrank)
      const std::uint64_t page = static_cast<std::uint64_t>(data) / 4096 * 4096;
      if (page >= out.size) break;
      if (::madvise(m.data() + page, 4096, MADV_POPULATE_READ) != 0 && errno == EINVAL)
        return Status(Code::kIo, "cannot measure the pages of region " + region_name +
                                     ": the kernel lacks MADV_POPULATE_READ (Linux 5.14)");
      at = page / kHugePageSize * kHugePageSize + kHugePageSize;
    }
    const long long pmd = smaps_pmd_kb(m.data());
    const std::uint64_t whole = out.size / kHugePageSize * kHugePageSize;
    out.huge_bytes = std::min<std::uint64_t>(static_cast<std::uint64_t>(pmd) * 1024, whole);
    const std::uint64_t tail = out.size - whole;
    const std::uint64_t small_pages = (out.size + 4095) / 4096 * 4096;
    if (tail > 0 && static_cast<std::uint64_t>(st.st_blocks) * 512 > small_pages) out.huge_bytes += tail;
    return out;
  });
}

}  // namespace kura::shm
