// The region directory: where regions and leases live, which checks it must
// pass, and how its file system backs regions with memory pages (DESIGN.md
// section 3.1; docs/design.md section 3.9 for huge pages).
//
// The directory is configuration of a deployment, never part of a name:
// every process that exchanges names must use the same one. It is fixed for
// the life of a process at the first use of any function of kura::shm.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kura/core/status.hpp"

namespace kura::shm {

// Makes `path` (absolute) the region directory of this process, after
// checking it as check_directory() does. Call it once at start-up, before
// any other function of kura::shm and before starting threads: it also sets
// KURA_SHM_DIR in this process's environment (setenv), so that the processes
// it starts afterwards (workers, helpers, the kura tool) use the same
// directory. Calling it again with the same path does nothing. Errors:
// InvalidArgument (a relative path, or the directory is already fixed to
// another one because kura::shm was used before this call), NotFound,
// Permission (see check_directory()), Io. On error nothing changes.
Status set_directory(std::string_view path) noexcept;

// The region directory, without a trailing slash: the one set_directory()
// chose, else $KURA_SHM_DIR when it is set and not empty, else /dev/shm.
// Calling it fixes the directory when nothing has yet. Thread-safe; the
// reference stays valid for the life of the process.
const std::string& directory() noexcept;

// Checks the region directory (and fixes it, as directory() does); every
// function of kura::shm that touches the directory returns this error first.
// The directory must be an absolute path to a directory, not a symbolic link,
// and either sticky (mode 1777, like /dev/shm: others cannot remove or
// rename this user's files in it) or owned by this user and not writable by
// group or other. Checked once per process. Errors: InvalidArgument (a
// relative path, not a directory), NotFound (no such directory), Permission
// (a symbolic link; another user's directory that is not sticky; writable by
// group or other without the sticky bit), Io.
Status check_directory() noexcept;

// How the file system of the region directory backs regions with pages.
enum class HugePages {
  kNever,       // 4 KiB pages only (a tmpfs without huge=, such as /dev/shm; any other file system)
  kAlways,      // tmpfs huge=always: every region in 2 MiB pages, a small one too (2 MiB at least)
  kWithinSize,  // tmpfs huge=within_size: a region's whole 2 MiB pieces; its tail in 4 KiB pages
  kAdvise,      // tmpfs huge=advise: 2 MiB pages where asked for; kura asks (MADV_HUGEPAGE) as it writes
};

// "never", "always", "within_size", "advise".
std::string_view huge_pages_name(HugePages h) noexcept;

struct DirectoryInfo {
  std::string path;           // directory()
  std::string fs_type;        // "tmpfs", ... ("" when /proc/self/mountinfo does not say)
  std::string mount_options;  // the file system's options from /proc/self/mountinfo
  HugePages huge = HugePages::kNever;
  // 2 MiB when regions get huge pages (huge != kNever), else 4096: the page
  // size, and the step in which a region's memory is reserved.
  std::uint64_t page_size = 4096;
  // What decided `huge`: "mount option huge=always",
  // "no huge= mount option", "shmem_enabled=force", ...
  std::string reason;
};

// What the region directory's file system is and whether regions there get
// huge pages, from the mount's huge= option in /proc/self/mountinfo (and
// /sys/kernel/mm/transparent_hugepage/shmem_enabled, whose "force" and
// "deny" override every tmpfs mount). Read once per process. Errors: those of
// check_directory(), Io.
Result<DirectoryInfo> directory_info() noexcept;

struct RegionPages {
  std::uint64_t size = 0;        // bytes in the region
  std::uint64_t huge_bytes = 0;  // bytes of it that lie in 2 MiB pages
};

// Measures how much of the region `name` (a region name, no path) lies in
// huge pages. Maps it read-only, faults in one byte of every 2 MiB that
// holds data (MADV_POPULATE_READ, Linux 5.14: memory that is already there;
// holes are skipped, nothing is allocated or copied, and a region truncated
// meanwhile is no SIGBUS) and takes the
// ShmemPmdMapped bytes of that mapping from /proc/self/smaps; a last piece
// shorter than 2 MiB, which no mapping can cover with one huge page, counts
// as huge when the file holds more memory than its 4 KiB pages would (its
// st_blocks). Costs one page-table entry per 2 MiB. Errors: InvalidName,
// NotFound, Permission, Io, and those of check_directory().
Result<RegionPages> region_pages(std::string_view name) noexcept;

}  // namespace kura::shm
