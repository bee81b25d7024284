// Internal to kura_shm: the cache of this process's read-only mappings that
// map() reuses (the contract users see is in kura/shm/region.hpp, at
// map()). Not installed.
#pragma once

#include <sys/stat.h>

#include <optional>
#include <string>

#include "kura/core/status.hpp"
#include "kura/core/view.hpp"

namespace kura::shm::detail {

// The Region (the mapping, its header checked) cached for `region_name`
// ("/kura_<o>_<c>"), when the entry is still the file at that name: one
// fstatat(2) of the name, which must be the same regular file (device and
// inode, which cannot be reused while the cache maps it), of the same size,
// this user's and private. Nothing when the name is not cached or its entry
// is stale (the entry is dropped; the caller maps afresh and reports what is
// wrong). Errors: NotFound (the name is gone; the entry is dropped).
// Thread-safe.
Result<std::optional<Region>> cached_region(const std::string& region_name);

// Caches `region`, the mapping of the file `st` describes, under
// `region_name`, evicting the least recently used entries to stay within
// the limits; does nothing when the region alone exceeds them. Thread-safe.
void cache_region(const std::string& region_name, const Region& region, const struct stat& st);

// Drops the entry of `region_name`, if any: this process removed the name,
// and the cache must not keep the region's memory. Thread-safe.
void forget_region(const std::string& region_name) noexcept;

}  // namespace kura::shm::detail
