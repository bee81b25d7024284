// Regions in POSIX shared memory: share a value, map it back by name from any
// process, release, adopt, list and prune (DESIGN.md sections 2 and 3).
//
// Linux only. A region is the file kura_<owner>_<counter> in the region
// directory (directory(), kura/shm/directory.hpp). It is created at its exact size with its
// space reserved up front, written under a private temporary name, sealed,
// made read-only (0400) and only then link()ed to its name, so no process can
// ever open a half-written region.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/builder.hpp"
#include "kura/core/name.hpp"
#include "kura/core/status.hpp"
#include "kura/core/value.hpp"
#include "kura/core/view.hpp"
#include "kura/shm/directory.hpp"
#include "kura/shm/owner.hpp"

namespace kura::shm {

// A read-only mapping of a whole region and the node a name points at.
// Copies share the mapping; it stays mapped until the last copy is gone,
// even after the region is unlinked. The Region and every NodeView taken from
// it (children, names, attributes, views copied out of a temporary Mapped)
// hold a reference to the mapping too, so a view never outlives it. Spans
// and string_views taken from a view borrow from that view: keep the view
// (or the Mapped) alive while you use them. Thread-safe for concurrent
// readers.
class Mapped {
 public:
  const Region& region() const noexcept;
  // The node at the name that was mapped (the root for a plain region name).
  const NodeView& node() const noexcept;
  // The full name that was mapped, path included.
  const std::string& name() const noexcept;

 private:
  friend struct MappedAccess;
  friend Result<Mapped> map(std::string_view name) noexcept;
  struct State;
  std::shared_ptr<const State> state_;
};

// Maps the value at `name` read-only: the region is mapped without
// prefaulting, its header is checked, and the path is walked checking only
// the nodes on it (O(depth), whatever the region's size). Errors:
// InvalidName, NotFound, Permission (a symlink, another user's region, or one
// open to group/other), Corrupt, OutOfRange, NotAList, Io. Thread-safe.
//
// Mappings are cached per process: mapping a name (any path in it) of a
// region this process mapped before reuses that mapping and its checked
// header. A cached map makes one system call, fstatat(2) of the region's
// name, and reuses the mapping only when the name still leads to the same
// file (device and inode, which the kernel cannot give to another file while
// the cache maps this one), of the same size, still this user's and private;
// otherwise the name is mapped afresh (a region replaced under its name is
// the new file), and a name that is gone is NotFound as before. Views of a
// removed region keep working. Bounds (MapCacheLimits): at most 64 mappings
// and 2 GiB by default, least recently used first out; a region larger than
// the byte bound is never cached. A cached mapping holds its region's memory:
// a region this process releases or removes (Shared::release, Shared::keep,
// remove, prune) leaves the cache at once; one removed by another process
// leaves it at the next map of its name, when the bounds push it out, when a
// map that misses the cache checks the least recently used entry, or at
// drop_map_cache(). fork(): the child starts with an empty cache (views it
// inherited keep working).
Result<Mapped> map(std::string_view name) noexcept;

// The bounds of map()'s cache.
struct MapCacheLimits {
  std::size_t mappings = 64;                     // 0 turns the cache off
  std::uint64_t bytes = std::uint64_t{2} << 30;  // address space, summed over the cached regions
};
// Sets the bounds, evicting at once what exceeds them. Thread-safe.
void set_map_cache_limits(const MapCacheLimits& limits) noexcept;
// Empties the cache: mappings no view holds are unmapped. Thread-safe.
void drop_map_cache() noexcept;

struct MapCacheStats {
  std::uint64_t hits = 0;    // maps that reused a mapping
  std::uint64_t misses = 0;  // maps that found no entry, or a stale one
  std::size_t mappings = 0;  // entries now
  std::uint64_t bytes = 0;   // their regions' sizes, summed
};
// Counts since the process started (or, in a forked child, since the fork).
// Thread-safe.
MapCacheStats map_cache_stats() noexcept;

struct ShareOptions {
  bool hashed = true;  // compute node hashes (kura verify can then check them)
  bool keep = false;   // publish under owner 0: lives until removed by name
};

// An owning handle to a region this process published (or adopted). Its
// destructor, or release(), unlinks the region, unless the handle was
// created in another process (a forked child never unlinks its parent's
// regions), the region is kept (owner 0), or it was written for another
// owner (see Pending::create with a Lease). Move-only.
class Shared {
 public:
  Shared(Shared&& other) noexcept;
  Shared& operator=(Shared&& other) noexcept;
  Shared(const Shared&) = delete;
  Shared& operator=(const Shared&) = delete;
  ~Shared();

  // The region's name, "/kura_<owner>_<counter>".
  const std::string& name() const noexcept { return name_; }
  std::uint64_t size() const noexcept { return size_; }
  // Maps this region read-only (see map()).
  Result<Mapped> map() const noexcept;
  // Unlinks the region now (if this process owns it) and empties the handle.
  // Mappings that exist stay valid. Errors: Io.
  Status release() noexcept;
  // Makes the region kept: links it under a new owner-0 name, where it lives
  // until removed by name (kura rm), removes the old name and empties the
  // handle. Mappings that exist stay valid. Returns the kept name. Errors:
  // InvalidArgument (an empty handle, or one inherited through fork()),
  // Exists, Io.
  Result<std::string> keep() noexcept;
  // Gives up ownership without unlinking and returns the name; the handle is
  // empty afterwards. The region survives this process's clean exit; once
  // the process is gone it is an orphan that prune() removes, unless someone
  // removes it by name first. (To outlive its writer for good, a region is
  // shared with `keep`.)
  std::string disown() noexcept;

 private:
  friend struct SharedAccess;
  Shared(std::string name, std::uint64_t size, bool unlink_on_release) noexcept;
  std::string name_;
  std::uint64_t size_ = 0;
  int creator_pid_ = 0;
  bool unlink_ = false;
};

// A region being written in place: created under a private temporary name at
// its exact size with space reserved, mapped writable, with every header
// already written. The producer fills the arrays and bytes built in place
// (Value::array_in_place, Value::bytes_in_place) directly in shared memory
// (no copy at all), then publishes. Dropping it unpublished removes the
// temporary file. While it lives it holds a lock on the temporary file, so
// prune() removes the temporary of a writer that died (SIGKILL), even while
// the owner it wrote for lives, and never one still being written. Move-only.
//
// Across fork(): the writable mapping and descriptor are not inherited (the
// child could otherwise write into the region after it is published, or keep
// the lock on the temporary after the writer died). A
// forked child must not use a Pending it inherited: block() and publish()
// abort there, and dropping it does nothing.
class Pending {
 public:
  // Plans `value` and creates the temporary region under this process's
  // owner. `value` must outlive the Pending and not change. Errors:
  // InvalidArgument (the value cannot be laid out), NoSpace (with the size
  // asked and the space free), Permission, Io, OutOfMemory.
  static Result<Pending> create(const Value& value, const ShareOptions& options = {}) noexcept;
  // The same, written for the owner of `lease` (a worker writing a result for
  // its client, DESIGN.md section 3). The Pending keeps the lease held until
  // it is published or dropped, so prune leaves the temporary file alone; the
  // published handle never unlinks the region, which belongs to that owner.
  // Errors: as above, and NotFound when the owner has exited.
  static Result<Pending> create(const Lease& lease, const Value& value,
                                const ShareOptions& options = {}) noexcept;

  Pending(Pending&& other) noexcept;
  Pending& operator=(Pending&& other) noexcept;
  Pending(const Pending&) = delete;
  Pending& operator=(const Pending&) = delete;
  ~Pending();

  // The writable data block of `v`, an array or bytes node of the value built
  // in place (by identity). Aborts when `v` is not one (a copied block would
  // leave its hash stale), or in a forked child.
  std::span<std::byte> block(const Value& v) const noexcept;
  // block(v) as elements of type T. Aborts unless sizeof(T) is the width of
  // v's dtype (1 for bytes).
  template <class T>
  std::span<T> array(const Value& v) const noexcept {
    KURA_CHECK(sizeof(T) == (v.kind == Kind::kBytes ? 1 : dtype_width(v.dtype)));
    auto b = block(v);
    return {reinterpret_cast<T*>(b.data()), b.size() / sizeof(T)};
  }

  // Bytes that create() copied from the caller's memory into the region:
  // array and bytes payloads not built in place, and string bytes (names and
  // attributes included). 0 when every array is filled in place.
  std::uint64_t bytes_copied() const noexcept;

  // Seals (hashing when asked), drops the writable mapping, makes the file
  // 0400 and links it to its final name. Errors: Io, NotFound (written for an
  // owner that exited meanwhile: its clean exit removed the temporary file),
  // OutOfMemory; on error nothing is published and the temporary file is
  // removed.
  Result<Shared> publish() && noexcept;

 private:
  friend struct PendingAccess;
  struct State;
  explicit Pending(std::unique_ptr<State> state) noexcept;
  std::unique_ptr<State> state_;
};

// Copies `value` into a new region (one copy of each array) and publishes it.
// Errors: as Pending::create and Pending::publish.
Result<Shared> share(const Value& value, const ShareOptions& options = {}) noexcept;
// The same, written for the owner of `lease` (see Pending::create).
Result<Shared> share(const Lease& lease, const Value& value, const ShareOptions& options = {}) noexcept;

// Takes ownership of a region written for this process (its owner id must be
// this process's owner): the returned handle unlinks it on release. Errors:
// InvalidName, NotFound, Permission (another owner's region).
Result<Shared> adopt(std::string_view name) noexcept;

// Removes the region `name` (a region name, no path) whoever owns it, if it
// belongs to this user. Errors: InvalidName, NotFound, Permission, Io.
Status remove(std::string_view name) noexcept;

struct RegionInfo {
  std::string name;        // "/kura_<owner>_<counter>"
  std::uint64_t size = 0;  // bytes
  std::uint64_t owner = 0;
  bool alive = true;  // false: the owner's lease is not held (an orphan)
};

// Every kura region in the region directory that this user can see, sorted
// by name. Errors: Io.
Result<std::vector<RegionInfo>> list() noexcept;

struct PruneReport {
  std::vector<std::string> removed;  // regions, temporary files and leases
};

// Removes every region, temporary file and lease file of this user whose
// owner is provably dead (its lease is not held) and for whom nobody writes
// (no Lease is held on it), and every temporary file of this user whose
// writer is provably gone (nobody holds the lock its writer takes on it),
// even while its owner lives. Never touches a live owner's regions, kept
// regions, or other users' files. Never blocks on what it finds (a FIFO
// planted as a lease or temporary counts as alive). Errors: Io.
Result<PruneReport> prune() noexcept;
// The same, for the files of one owner only.
Result<PruneReport> prune(std::uint64_t owner) noexcept;

struct Space {
  std::uint64_t total = 0;  // bytes in the region directory's file system
  std::uint64_t free = 0;   // bytes available to this user
};

// Size and free space of the region directory's file system. Errors: Io.
Result<Space> space() noexcept;

}  // namespace kura::shm
