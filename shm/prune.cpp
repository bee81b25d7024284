// list(), prune() and space(): what is in the region directory and who may
// remove it.
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "fs_internal.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "map_cache_internal.hpp"

namespace kura::shm {

namespace {

using detail::Entry;

struct DirEntry {
  std::string file;  // "kura_..."
  Entry entry;
  std::uint64_t size = 0;
};

// The kura files of the region directory that are regular files of this
// user, of every owner or of `only` when given. Other users' files and
// anything that is not a regular file are never listed, so never removed.
Result<std::vector<DirEntry>> scan(std::optional<std::uint64_t> only = std::nullopt) {
  DIR* dir = ::opendir(detail::shm_dir().c_str());
  if (dir == nullptr) return detail::os_error("cannot list " + detail::shm_dir(), errno);
  std::vector<DirEntry> out;
  const int dfd = ::dirfd(dir);
  while (dirent* de = ::readdir(dir)) {
    auto e = detail::classify(de->d_name);
    if (!e || (only && e->owner != *only)) continue;
    struct stat st;
    if (::fstatat(dfd, de->d_name, &st, AT_SYMLINK_NOFOLLOW) != 0) continue;  // gone meanwhile
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid()) continue;
    out.push_back(DirEntry{de->d_name, *e, static_cast<std::uint64_t>(st.st_size)});
  }
  ::closedir(dir);
  return out;
}

// Removes the file `f` of the region directory when its creator, which
// locks it from birth, is gone: this process gets the lock `type` on `len`
// bytes from `start` of it (open with `access`), and it is still the file at
// its path. Anything that cannot be opened or is not this user's regular file
// is left alone.
bool remove_abandoned(const std::string& f, int access, short type, off_t start, off_t len) {
  const std::string path = detail::dir_path(f);
  int fd = ::open(path.c_str(), access | detail::kOpenFlags);
  if (fd < 0) return false;
  struct stat st;
  const bool removed = ::fstat(fd, &st) == 0 && S_ISREG(st.st_mode) && st.st_uid == ::geteuid() &&
                       detail::try_lock(fd, type, start, len) == 0 && detail::same_file(fd, path) &&
                       ::unlink(path.c_str()) == 0;
  ::close(fd);
  return removed;
}

// Removes what `entries` hold of dead owners, and temporaries whose writer
// died (see prune()).
PruneReport prune_entries(const std::vector<DirEntry>& entries) {
  PruneReport report;
  std::map<std::uint64_t, std::vector<const DirEntry*>> files;  // regions and temporaries by owner
  std::vector<std::string> lease_temps;
  for (const DirEntry& d : entries) {
    switch (d.entry.type) {
      case Entry::Type::kRegion:
      case Entry::Type::kRegionTemp:
        if (d.entry.owner != kKeptOwner) files[d.entry.owner].push_back(&d);
        break;
      case Entry::Type::kLease: files[d.entry.owner]; break;
      case Entry::Type::kLeaseTemp: lease_temps.push_back(d.file); break;
    }
  }
  for (auto& [owner, owned] : files) {
    if (owner == kKeptOwner) continue;
    // A dead owner's lease stays write-locked by us until it is gone, so no
    // Lease::hold can start meanwhile.
    detail::LeaseProbe probe = detail::probe_lease(owner);
    if (probe.state == detail::LeaseProbe::State::kAlive) {
      // The owner lives, but a temporary its writer no longer holds locked
      // is nobody's. A read lock is enough to keep a writer out, and needs
      // only a read-only open, which also works on a temporary its writer
      // had already made 0400 when it died.
      for (const DirEntry* d : owned)
        if (d->entry.type == Entry::Type::kRegionTemp &&
            remove_abandoned(d->file, O_RDONLY, F_RDLCK, detail::kWriterByte, 1))
          report.removed.push_back("/" + d->file);
      continue;
    }
    for (const DirEntry* d : owned) {
      if (::unlink(detail::dir_path(d->file).c_str()) == 0) {
        detail::forget_region("/" + d->file);
        report.removed.push_back("/" + d->file);
      }
    }
    if (probe.state == detail::LeaseProbe::State::kDead) {
      const std::string lease = detail::lease_path(owner);
      if (::unlink(lease.c_str()) == 0) report.removed.push_back("/kura_" + detail::hex(owner) + ".lock");
      ::close(probe.fd);
    }
  }
  // A lease being born is held locked by its creator from the start: one
  // that can be locked is left by a process that died (write lock: the
  // creator's is a read lock).
  for (const std::string& f : lease_temps)
    if (remove_abandoned(f, O_RDWR, F_WRLCK, detail::kAliveByte, 2)) report.removed.push_back("/" + f);
  std::sort(report.removed.begin(), report.removed.end());
  return report;
}

}  // namespace

Result<std::vector<RegionInfo>> list() noexcept {
  return detail::boundary("list", [&]() -> Result<std::vector<RegionInfo>> {
    KURA_RETURN_IF_ERROR(check_directory());
    KURA_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, scan());
    std::map<std::uint64_t, bool> alive;
    std::vector<RegionInfo> out;
    for (const DirEntry& d : entries) {
      if (d.entry.type != Entry::Type::kRegion) continue;  // temporaries are not regions yet
      auto it = alive.find(d.entry.owner);
      if (it == alive.end()) it = alive.emplace(d.entry.owner, owner_alive(d.entry.owner)).first;
      out.push_back(RegionInfo{"/" + d.file, d.size, d.entry.owner, it->second});
    }
    std::sort(out.begin(), out.end(),
              [](const RegionInfo& a, const RegionInfo& b) { return a.name < b.name; });
    return out;
  });
}

Result<PruneReport> prune() noexcept {
  return detail::boundary("prune", [&]() -> Result<PruneReport> {
    KURA_RETURN_IF_ERROR(check_directory());
    KURA_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, scan());
    return prune_entries(entries);
  });
}

Result<PruneReport> prune(std::uint64_t owner) noexcept {
  return detail::boundary("prune", [&]() -> Result<PruneReport> {
    KURA_RETURN_IF_ERROR(check_directory());
    if (owner == kKeptOwner) return PruneReport{};
    KURA_ASSIGN_OR_RETURN(std::vector<DirEntry> entries, scan(owner));
    return prune_entries(entries);
  });
}

Result<Space> space() noexcept {
  return detail::boundary("space", [&]() -> Result<Space> {
    KURA_RETURN_IF_ERROR(check_directory());
    struct statvfs st;
    if (::statvfs(detail::shm_dir().c_str(), &st) != 0)
      return detail::os_error("cannot read the size of " + detail::shm_dir(), errno);
    return Space{static_cast<std::uint64_t>(st.f_blocks) * st.f_frsize,
                 static_cast<std::uint64_t>(st.f_bavail) * st.f_frsize};
  });
}

}  // namespace kura::shm
