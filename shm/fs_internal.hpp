// Internal to kura_shm: the files of the region directory and the helpers
// every .cpp of shm/ shares. Not installed; no user includes it.
//
// File names in the region directory (the leading "/" of a kura name maps to
// the directory, /dev/shm unless KURA_SHM_DIR says otherwise):
//   kura_<owner>_<counter>             a published region
//   kura_<owner>_<counter>.tmp         a region being written for <owner>
//                                      (held locked by its writer)
//   kura_<owner>.lock                  the lease of <owner>
//   kura_<owner>.lock.<random>.tmp     a lease being born (held locked)
//
// Leases are locked with open-file-description locks (F_OFD_SETLK), on two
// bytes with two meanings, so that nobody mistakes one for the other:
//   byte 0  read-locked by the owner for its whole life ("alive");
//   byte 1  read-locked by every Lease::hold while it writes for the owner.
// A probe (owner_alive, kura ls) only asks (F_OFD_GETLK) and takes no lock.
// prune takes both bytes with a write lock, which it gets only when the owner
// is dead and nobody writes for it; while it holds them no hold can start.
//
// A region temporary is write-locked (OFD) on its byte 0 by its writer from
// just after its exclusive create until it is linked or removed. prune
// removes a temporary of any owner once it gets a read lock on that byte
// itself and the file is still at its path: its writer is gone, and no
// writer can be between its create and its lock (the writer retries).
#pragma once

#include <fcntl.h>
#include <sys/types.h>

#include <cstdint>
#include <exception>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/shm/directory.hpp"

namespace kura::shm::detail {

// The region directory without a trailing slash (see shm::directory();
// directory.cpp). Public functions call shm::check_directory() before using it.
const std::string& shm_dir() noexcept;

// How the region directory's file system gives regions huge pages
// (shm::directory_info(), read once; kNever when it cannot be read).
HugePages huge_pages() noexcept;

// Flags of every open() of shm/: never follow a planted symlink, never leak a
// descriptor into an exec'd program, never block on a FIFO planted where a
// region or lease belongs (the type check follows the open).
inline constexpr int kOpenFlags = O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK;

// "<dir>/kura_<owner>_<counter>" and friends.
std::string region_path(std::uint64_t owner, std::uint64_t counter);
std::string region_temp_path(std::uint64_t owner, std::uint64_t counter);
std::string lease_path(std::uint64_t owner);
// "<dir>/<file>" for a file name of the directory, or "<dir>/kura_.." for a
// region name "/kura_..".
std::string dir_path(std::string_view file_or_region_name);

// Lowercase hex without leading zeros, as in names.
std::string hex(std::uint64_t v);

// What a directory entry of the region directory is, if it is one of kura's.
struct Entry {
  enum class Type { kRegion, kRegionTemp, kLease, kLeaseTemp } type;
  std::uint64_t owner = 0;
  std::uint64_t counter = 0;  // regions and region temporaries
};
std::optional<Entry> classify(std::string_view file_name) noexcept;

// A random 64-bit number from getrandom(2). Errors: Io.
Result<std::uint64_t> random_u64() noexcept;

// A Status for a failed OS call: `what` names the operation and the file,
// the message appends strerror(err) and the code follows errno.
Status os_error(const std::string& what, int err);

// Writes all of `bytes` at `offset` of `fd`, retrying on EINTR and short
// writes. Errors: NoSpace (ENOSPC), Io.
Status pwrite_all(int fd, std::span<const std::byte> bytes, std::uint64_t offset) noexcept;

using kura::human_bytes;

// Free bytes in the region directory for this user (0 when statvfs fails).
std::uint64_t shm_free_bytes() noexcept;

// The NotFound of a region name that leads to no file.
Status region_not_found(const std::string& region_name);

// Checks an open descriptor of a region or lease: a regular file owned by this
// user with no group or other permission bits. Errors: Permission, Io.
Status check_own_file(int fd, const std::string& what);

// Opens the existing file `path` with `flags` | kOpenFlags and checks it with
// check_own_file. Errors: NotFound, Permission (a symlink, a FIFO or other
// non-file, another user's file, a file open to group/other), Io.
Result<int> open_own_file(const std::string& path, int flags, const std::string& what);

// True when `fd` is still the file at `path` (same device and inode; the
// path is not followed).
bool same_file(int fd, const std::string& path) noexcept;

// --- Locks on leases and region temporaries ------------------------------------

inline constexpr off_t kAliveByte = 0;
inline constexpr off_t kHolderByte = 1;
// The byte of a region temporary its writer locks (another file than the lease).
inline constexpr off_t kWriterByte = 0;

// Takes a lock of `type` (F_RDLCK, F_WRLCK) on `len` bytes from `start`
// without waiting. Returns 0, or the errno (EAGAIN: someone else holds a
// conflicting lock).
int try_lock(int fd, short type, off_t start, off_t len) noexcept;
// True when some other open file description holds a lock on byte `at` of
// `fd`'s file; takes no lock. False also when the question cannot be asked.
bool locked_by_other(int fd, off_t at) noexcept;

// The verdict on an owner's lease. kDead comes with `fd` holding the write
// lock on both bytes of the lease, which is still the file at its path: unlink
// the owner's files, then the lease, then close `fd`. kMissing: there is no
// lease at all. kAlive: the owner lives, someone writes for it, or the lease
// cannot be proved dead (another user's, or one that cannot be opened).
struct LeaseProbe {
  enum class State { kAlive, kDead, kMissing } state = State::kAlive;
  int fd = -1;
};
LeaseProbe probe_lease(std::uint64_t owner) noexcept;

// --- fork() ------------------------------------------------------------------

// Descriptors a forked child must not keep: the writable descriptor of a
// region being written (the child could write into it after it is published,
// and would keep the writer's lock on it after the writer died) and
// descriptors holding a lease lock (the child would keep a dead owner
// alive). Registered descriptors are closed in the child right after fork().
// Objects holding one remember the creating pid and never touch the
// descriptor in another process. Errors of register: OutOfMemory.
Status close_in_child(int fd) noexcept;
// Forgets `fd`; call before closing it.
void forget_in_child(int fd) noexcept;

// A descriptor closed on destruction, in the process that opened it only, and
// forgotten by the fork registry when it was registered there.
class OwnedFd {
 public:
  OwnedFd() = default;
  // Takes `fd`; when `fork_private`, registers it with close_in_child.
  static Result<OwnedFd> adopt(int fd, bool fork_private) noexcept;
  OwnedFd(OwnedFd&& other) noexcept;
  OwnedFd& operator=(OwnedFd&& other) noexcept;
  OwnedFd(const OwnedFd&) = delete;
  OwnedFd& operator=(const OwnedFd&) = delete;
  ~OwnedFd() { reset(); }

  int get() const noexcept { return fd_; }
  explicit operator bool() const noexcept { return fd_ >= 0; }
  // True in the process that opened it (false in a forked child, where the
  // descriptor was closed at the fork when it was fork-private).
  bool here() const noexcept;
  void reset() noexcept;

 private:
  int fd_ = -1;
  pid_t pid_ = 0;
  bool registered_ = false;
};

// A mapping of a whole file, unmapped on destruction. A `fork_private`
// mapping (writable ones) is not inherited by a forked child
// (MADV_DONTFORK), and a copy of the object in the child never unmaps it
// (the child may have mapped something else at that address meanwhile).
class Mapping {
 public:
  Mapping() = default;
  // Maps `size` bytes of `fd` shared, read-only or read-write, without
  // prefaulting. Errors: OutOfMemory (ENOMEM: address space, ulimit -v), Io.
  static Result<Mapping> map(int fd, std::size_t size, bool writable, bool fork_private) noexcept;
  Mapping(Mapping&& other) noexcept;
  Mapping& operator=(Mapping&& other) noexcept;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping() { reset(); }

  std::byte* data() const noexcept { return data_; }
  std::size_t size() const noexcept { return size_; }
  void reset() noexcept;

 private:
  std::byte* data_ = nullptr;
  std::size_t size_ = 0;
  pid_t pid_ = 0;
  bool fork_private_ = false;
};

// Runs `f` and turns any exception (std::bad_alloc, Boost.Interprocess) into
// a Status, so nothing crosses a public boundary. Out of memory gives
// Status::out_of_memory(), which allocates nothing.
template <class F>
auto boundary(const char* what, F&& f) noexcept -> decltype(f()) {
  try {
    try {
      return f();
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory();
    } catch (const std::exception& e) {
      return Status(Code::kIo, std::string(what) + ": " + e.what());
    } catch (...) {
      return Status(Code::kIo, std::string(what) + ": unknown exception");
    }
  } catch (...) {
    return Status::out_of_memory();  // building the message above failed
  }
}

}  // namespace kura::shm::detail
