// Regions as an R session holds them.
//
// Every R object made from a region (a shared vector, a list's registry
// entry) holds a std::shared_ptr to the region's RegionCore, which keeps the
// read-only mapping and, when this session published the region, the
// shm::Shared handle that unlinks it. So the region is unlinked when the last
// R object made from it is garbage-collected (or at the session's clean exit,
// by kura::shm), and a forked child never unlinks it (shm::Shared knows the
// process that made it). One core per region and process: mapping a name
// whose region is already mapped here reuses the mapping.
//
// R is single-threaded; nothing here is meant for other threads.
#pragma once

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "kura/core/status.hpp"
#include "kura/shm/region.hpp"

namespace kura::r {

struct RegionCore {
  RegionCore() = default;
  RegionCore(const RegionCore&) = delete;
  RegionCore& operator=(const RegionCore&) = delete;
  ~RegionCore();

  std::string name;                  // "/kura_<owner>_<counter>"
  shm::Mapped mapped;                // the whole region, read-only; its node() is the root
  std::optional<shm::Shared> owned;  // set when this session published the region
};

// The core of region (owner, counter): the one this process already has, or
// a new read-only mapping. Errors: as shm::map (NotFound, Corrupt,
// Permission, Io, OutOfMemory).
Result<std::shared_ptr<RegionCore>> open_region(std::uint64_t owner, std::uint64_t counter) noexcept;

// Makes the core of a region this session has just published: the core owns
// `shared` and unlinks the region when it dies.
std::shared_ptr<RegionCore> adopt_published(shm::Shared shared, shm::Mapped mapped);

// A private, copy-on-write mapping of part of a region's file: reads see the
// region's bytes (the same physical pages, not counted as the process's
// anonymous memory), and a write copies only the page it touches, which
// never reaches the region. Inherited by forked children like any private
// mapping. Unmapped by unmap_private (in whichever process holds it).
struct PrivateMapping {
  void* base = nullptr;       // page-aligned start of the mapping
  std::size_t length = 0;     // bytes mapped
  std::byte* data = nullptr;  // the requested offset inside it
};

// Maps bytes [offset, offset + size) of `core`'s region privately. The file
// is opened again by name (O_NOFOLLOW, this user's regular file of the
// mapped size, with the same 64-byte header as the mapping), since the
// mapping does not keep its descriptor. Errors: NotFound (the region was
// unlinked meanwhile), Permission, Corrupt (another file under that name),
// Io, OutOfMemory. REQUIRES: size > 0.
Status map_private(const RegionCore& core, std::uint64_t offset, std::uint64_t size,
                   PrivateMapping& out) noexcept;
void unmap_private(PrivateMapping& m) noexcept;

// Maps every page of [data, data + size), part of a read-only mapping of a
// region, into this process's page tables now, in one call
// (MADV_POPULATE_READ, Linux 5.14): for a reader about to read all of it,
// one call costs less than a fault per 64 KiB. Does nothing where the
// kernel lacks it (the pages are then faulted in as they are read), and
// when a sample of the pages (/proc/self/pagemap) shows them mapped in
// already.
// Allocates nothing; no error (the pages are still readable either way).
void populate_read(const std::byte* data, std::uint64_t size) noexcept;

// Whether some page of `m` has been written since it was mapped (it is no
// longer the file's page but a private copy, present or swapped out), from
// /proc/self/pagemap: kWritten, kClean, or kUnknown when pagemap cannot be
// read. Allocates nothing.
enum class PagesWritten { kClean, kWritten, kUnknown };
PagesWritten private_pages_written(const PrivateMapping& m) noexcept;

}  // namespace kura::r
