// The mapping cache of map() (kura/shm/region.hpp; map_cache_internal.hpp).
//
// A small vector searched linearly (64 entries by default) under one mutex,
// held only to find, add or take out entries: system calls (the fstatat of a
// hit, the munmap of an evicted entry) run outside it.
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "fs_internal.hpp"
#include "kura/shm/region.hpp"
#include "map_cache_internal.hpp"

namespace kura::shm {
namespace detail {
namespace {

struct CacheEntry {
  std::string name;  // "/kura_<o>_<c>"
  Region region;     // holds the mapping
  dev_t dev = 0;
  ino_t ino = 0;
  off_t size = 0;
  uid_t uid = 0;
  std::uint64_t used = 0;  // the cache's clock when last found or added
};

struct Cache {
  std::mutex mu;
  std::vector<CacheEntry> entries;
  MapCacheLimits limits;
  std::uint64_t bytes = 0;
  std::uint64_t clock = 0;
  std::atomic<std::uint64_t> hits{0};
  std::atomic<std::uint64_t> misses{0};

  // Takes out entry `i`; the caller destroys it after unlocking.
  CacheEntry take(std::size_t i) {
    CacheEntry e = std::move(entries[i]);
    bytes -= static_cast<std::uint64_t>(e.size);
    entries[i] = std::move(entries.back());
    entries.pop_back();
    return e;
  }
  std::size_t oldest() const {
    std::size_t o = 0;
    for (std::size_t i = 1; i < entries.size(); ++i)
      if (entries[i].used < entries[o].used) o = i;
    return o;
  }
  // Takes out least recently used entries until `extra` more entries
  // holding `more` bytes fit the limits.
  void make_room(std::size_t extra, std::uint64_t more, std::vector<CacheEntry>& out) {
    while (!entries.empty() && (entries.size() + extra > limits.mappings || bytes + more > limits.bytes))
      out.push_back(take(oldest()));
  }
  std::ptrdiff_t find(const std::string& name) const {
    for (std::size_t i = 0; i < entries.size(); ++i)
      if (entries[i].name == name) return static_cast<std::ptrdiff_t>(i);
    return -1;
  }
};

void locked_at_fork() noexcept;
void unlocked_in_parent() noexcept;
void emptied_in_child() noexcept;

// Never destroyed: views may outlive static destruction.
Cache& cache() {
  static Cache* c = new Cache;
  return *c;
}

// Registered when the library loads, not when the cache is first made: a
// fork() while another thread was making it would leave the child waiting
// forever on the half-made cache. Registered, the handler waits for it
// before the fork.
[[maybe_unused]] const int g_fork_handlers =
    ::pthread_atfork(locked_at_fork, unlocked_in_parent, emptied_in_child);

// fork(): the mutex is held across it, so the child sees whole entries; the
// child starts with an empty cache (its copies of the mappings go with the
// entries, unless the child holds views into them).
void locked_at_fork() noexcept {
  cache().mu.lock();
}
void unlocked_in_parent() noexcept {
  cache().mu.unlock();
}
void emptied_in_child() noexcept {
  Cache& c = cache();
  c.entries.clear();
  c.bytes = 0;
  c.hits = 0;
  c.misses = 0;
  c.mu.unlock();
}

// Takes out the entry of `name` if it is still the file (dev, ino).
void drop_if_same(const std::string& name, dev_t dev, ino_t ino) {
  Cache& c = cache();
  std::optional<CacheEntry> gone;
  std::lock_guard<std::mutex> lock(c.mu);
  const std::ptrdiff_t i = c.find(name);
  if (i >= 0 && c.entries[i].dev == dev && c.entries[i].ino == ino)
    gone = c.take(static_cast<std::size_t>(i));
}

// Whether the file `st` is still the one cached as (dev, ino, size, uid),
// and still a private regular file (what open_own_file checks).
bool still_same(const struct stat& st, const CacheEntry& e) {
  return S_ISREG(st.st_mode) && st.st_dev == e.dev && st.st_ino == e.ino && st.st_size == e.size &&
         st.st_uid == e.uid && (st.st_mode & 077) == 0;
}

}  // namespace

Result<std::optional<Region>> cached_region(const std::string& region_name) {
  Cache& c = cache();
  CacheEntry found;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    const std::ptrdiff_t i = c.find(region_name);
    if (i < 0) {
      c.misses.fetch_add(1, std::memory_order_relaxed);
      return std::optional<Region>();
    }
    CacheEntry& e = c.entries[static_cast<std::size_t>(i)];
    e.used = ++c.clock;
    found.region = e.region;
    found.dev = e.dev;
    found.ino = e.ino;
    found.size = e.size;
    found.uid = e.uid;
  }
  // The one system call of a hit: the name must still lead to this file.
  struct stat st;
  if (::fstatat(AT_FDCWD, dir_path(region_name).c_str(), &st, AT_SYMLINK_NOFOLLOW) != 0) {
    const int err = errno;
    drop_if_same(region_name, found.dev, found.ino);
    c.misses.fetch_add(1, std::memory_order_relaxed);
    if (err == ENOENT) return region_not_found(region_name);
    return std::optional<Region>();
  }
  if (!still_same(st, found)) {
    drop_if_same(region_name, found.dev, found.ino);
    c.misses.fetch_add(1, std::memory_order_relaxed);
    return std::optional<Region>();
  }
  c.hits.fetch_add(1, std::memory_order_relaxed);
  return std::optional<Region>(std::move(found.region));
}

void cache_region(const std::string& region_name, const Region& region, const struct stat& st) {
  Cache& c = cache();
  std::vector<CacheEntry> evicted;  // destroyed (unmapped) after the lock is released
  std::string oldest;
  CacheEntry probe;
  {
    std::lock_guard<std::mutex> lock(c.mu);
    const auto size = static_cast<std::uint64_t>(st.st_size);
    if (c.limits.mappings == 0 || size > c.limits.bytes) return;
    const std::ptrdiff_t i = c.find(region_name);
    if (i >= 0) evicted.push_back(c.take(static_cast<std::size_t>(i)));
    c.make_room(1, size, evicted);
    CacheEntry e;
    e.name = region_name;
    e.region = region;
    e.dev = st.st_dev;
    e.ino = st.st_ino;
    e.size = st.st_size;
    e.uid = st.st_uid;
    e.used = ++c.clock;
    c.entries.push_back(std::move(e));
    c.bytes += size;
    if (c.entries.size() > 1) {
      const CacheEntry& o = c.entries[c.oldest()];
      oldest = o.name;
      probe.dev = o.dev;
      probe.ino = o.ino;
      probe.size = o.size;
      probe.uid = o.uid;
    }
  }
  // A miss pays for system calls anyway: one more checks the least recently
  // used entry, so that the memory of regions other processes removed is
  // given back while this process goes on mapping new names.
  if (!oldest.empty()) {
    struct stat ost;
    if (::fstatat(AT_FDCWD, dir_path(oldest).c_str(), &ost, AT_SYMLINK_NOFOLLOW) != 0 ||
        !still_same(ost, probe))
      drop_if_same(oldest, probe.dev, probe.ino);
  }
}

void forget_region(const std::string& region_name) noexcept {
  Cache& c = cache();
  std::optional<CacheEntry> gone;
  std::lock_guard<std::mutex> lock(c.mu);
  const std::ptrdiff_t i = c.find(region_name);
  if (i >= 0) gone = c.take(static_cast<std::size_t>(i));
}

}  // namespace detail

void set_map_cache_limits(const MapCacheLimits& limits) noexcept {
  detail::Cache& c = detail::cache();
  std::lock_guard<std::mutex> lock(c.mu);
  c.limits = limits;
  // Unmapped under the lock: collecting them first could fail to allocate.
  while (!c.entries.empty() && (c.entries.size() > limits.mappings || c.bytes > limits.bytes))
    (void)c.take(c.oldest());
}

void drop_map_cache() noexcept {
  detail::Cache& c = detail::cache();
  std::vector<detail::CacheEntry> evicted;
  std::lock_guard<std::mutex> lock(c.mu);
  evicted.swap(c.entries);
  c.bytes = 0;
}

MapCacheStats map_cache_stats() noexcept {
  detail::Cache& c = detail::cache();
  std::lock_guard<std::mutex> lock(c.mu);
  MapCacheStats s;
  s.hits = c.hits.load(std::memory_order_relaxed);
  s.misses = c.misses.load(std::memory_order_relaxed);
  s.mappings = c.entries.size();
  s.bytes = c.bytes;
  return s;
}

}  // namespace kura::shm
