// list(), prune() and space(): what is in /dev/shm and who may remove it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <string>
#include <vector>

#include "fs_internal.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"

namespace kura::shm {

namespace {

using detail::Entry;

struct DirEntry {
  std::string file;  // "kura_..."
  Entry entry;
  std::uint64_t size = 0;
};

// The kura files of /dev/shm that are regular files of this user. Other
// users' files and anything that is not a regular file are never listed, so
// never removed.
Result<std::vector<DirEntry>> scan() {
  DIR* dir = ::opendir(detail::kShmDir);
  if (dir == nullptr) return detail::os_error(std::string("cannot list ") + detail::kShmDir, errno);
  std::vector<DirEntry> out;
  const int dfd = ::dirfd(dir);
  errno = 0;
  while (dirent* de = ::readdir(dir)) {
    auto e = detail::classify(de->d_name);
    if (!e) continue;
    struct stat st;
    if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) continue;
    out.push_back(DirEntry{de->d_name, *e, static_cast<std::uint64_t>(st.st_size)});
  }
  ::closedir(dir);
  return out;
}

}  // namespace

Result<std::vector<RegionInfo>> list() noexcept {
  return detail::boundary("list", [&]() -> Result<std::vector<RegionInfo>> {
    KURA_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, scan());
    std::map<std::uint64_t, bool> alive;
    std::vector<RegionInfo> out;
    for (const DirEntry& d : entries) {
      if (d.entry.type != Entry::Type::kRegion) continue;  // temporaries are not regions yet
      auto it = alive.find(d.entry.owner);
      if (it == alive.end()) it = alive.emplace(d.entry.owner, owner_alive(d.entry.owner)).first;
      out.push_back(RegionInfo{"/" + d.file, d.size, d.entry.owner, it->second});
    }
    std::sort(out.begin(), out.end(), [](const RegionInfo& a, const RegionInfo& b) { return a.name < b.name; });
    return out;
  });
}

Result<PruneReport> prune() noexcept {
  return detail::boundary("prune", [&]() -> Result<PruneReport> {
    KURA_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, scan());
    PruneReport report;
    std::map<std::uint64_t, std::vector<std::string>> files;  // regions and temporaries by owner
    std::vector<std::string> lease_temps;
    for (const DirEntry& d : entries) {
      switch (d.entry.type) {
        case Entry::Type::kRegion:
        case Entry::Type::kRegionTemp:
          if (d.entry.owner != kKeptOwner) files[d.entry.owner].push_back(d.file);
          break;
        case Entry::Type::kLease: files[d.entry.owner]; break;
        case Entry::Type::kLeaseTemp: lease_temps.push_back(d.file); break;
      }
    }
    const std::string dir = std::string(detail::kShmDir) + "/";
    for (auto& [owner, owned] : files) {
      if (owner == kKeptOwner) continue;
      // A dead owner's lease stays locked exclusively by us until it is gone,
      // so no Lease::hold can revive it meanwhile.
      detail::LeaseProbe probe = detail::probe_lease(owner);
      if (probe.state == detail::LeaseProbe::State::kAlive) continue;
      for (const std::string& f : owned) {
        if (::unlink((dir + f).c_str()) == 0) report.removed.push_back("/" + f);
      }
      if (probe.state == detail::LeaseProbe::State::kDead) {
        const std::string lease = detail::lease_path(owner);
        if (::unlink(lease.c_str()) == 0) report.removed.push_back(lease.substr(dir.size() - 1));
        ::close(probe.fd);
      }
    }
    // A lease being born is held locked by its creator from the start: one
    // that can be locked exclusively belongs to a process that died.
    for (const std::string& f : lease_temps) {
      const std::string path = dir + f;
      int fd = ::open(path.c_str(), O_RDONLY | detail::kOpenFlags);
      if (fd < 0) continue;
      struct stat st;
      if (::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
          ::flock(fd, LOCK_EX | LOCK_NB) == 0 && detail::same_file(fd, path) && ::unlink(path.c_str()) == 0)
        report.removed.push_back("/" + f);
      ::close(fd);
    }
    std::sort(report.removed.begin(), report.removed.end());
    return report;
  });
}

Result<Space> space() noexcept {
  struct statvfs st;
  if (::statvfs(detail::kShmDir, &st) != 0)
    return detail::os_error(std::string("cannot read the size of ") + detail::kShmDir, errno);
  return Space{static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize,
               static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize};
}

}  // namespace kura::shm
