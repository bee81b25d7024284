// Internal to kura_shm: the files of /dev/shm and the helpers every .cpp of
// shm/ shares. Not installed; no user includes it.
//
// File names in /dev/shm (the leading "/" of a kura name maps to the
// directory):
//   kura_<owner>_<counter>             a published region
//   kura_<owner>_<counter>.tmp         a region being written by <owner>
//   kura_<owner>.lock                  the lease of <owner>
//   kura_<owner>.lock.<random>.tmp     a lease being born (held locked)
#pragma once

#include <fcntl.h>

#include <cstdint>
#include <exception>
#include <new>
#include <optional>
#include <span>
#include <string>
#include <string_view>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"

namespace kura::shm::detail {

inline constexpr const char* kShmDir = "/dev/shm";

// Flags of every open() of shm/: never follow a planted symlink, never leak a
// descriptor into an exec'd program.
inline constexpr int kOpenFlags = O_NOFOLLOW | O_CLOEXEC;

// "/dev/shm/kura_<owner>_<counter>" and friends.
std::string region_path(std::uint64_t owner, std::uint64_t counter);
std::string region_temp_path(std::uint64_t owner, std::uint64_t counter);
std::string lease_path(std::uint64_t owner);

// Lowercase hex without leading zeros, as in names.
std::string hex(std::uint64_t v);

// What a directory entry of /dev/shm is, if it is one of kura's.
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

// Free bytes in /dev/shm for this user (0 when statvfs fails).
std::uint64_t shm_free_bytes() noexcept;

// Checks an open descriptor of a region or lease: a regular file owned by this
// user with no group or other permission bits. Errors: Permission, Io.
Status check_own_file(int fd, const std::string& what);

// True when `fd` is still the file at `path` (same device and inode; the
// path is not followed).
bool same_file(int fd, const std::string& path) noexcept;

// The verdict on an owner's lease. kDead comes with `fd` holding LOCK_EX on
// the lease, which is still the file at its path: unlink the owner's files,
// then the lease, then close `fd`. kMissing: there is no lease at all.
struct LeaseProbe {
  enum class State { kAlive, kDead, kMissing } state = State::kAlive;
  int fd = -1;
};
LeaseProbe probe_lease(std::uint64_t owner) noexcept;

// Runs `f` and turns any exception (std::bad_alloc, Boost.Interprocess) into
// a Status, so nothing crosses a public boundary.
template <class F>
auto boundary(const char* what, F&& f) noexcept -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status(Code::kIo, std::string(what) + ": out of memory");
  } catch (const std::exception& e) {
    return Status(Code::kIo, std::string(what) + ": " + e.what());
  } catch (...) {
    return Status(Code::kIo, std::string(what) + ": unknown exception");
  }
}

}  // namespace kura::shm::detail
