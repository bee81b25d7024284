#include "regions.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <unordered_map>
#include <utility>

#include "kura/core/layout.hpp"
#include "kura/core/name.hpp"

namespace kura::r {
namespace {

// Region name -> its core, while some R object holds it. Never destroyed:
// cores may die in finalizers that R runs late.
std::unordered_map<std::string, std::weak_ptr<RegionCore>>& cores() {
  static auto* m = new std::unordered_map<std::string, std::weak_ptr<RegionCore>>;
  return *m;
}

Status os_status(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == ENOENT) code = Code::kNotFound;
  if (err == EACCES || err == EPERM || err == ELOOP) code = Code::kPermission;
  if (err == ENOMEM) return Status::out_of_memory();
  return Status(code, what + ": " + std::strerror(err), err);
}

}  // namespace

RegionCore::~RegionCore() {
  auto& m = cores();
  auto it = m.find(name);
  // Another core of the same name may have replaced this one's entry.
  if (it != m.end() && it->second.expired()) m.erase(it);
  owned.reset();  // unlinks the region when this process published it
}

Result<std::shared_ptr<RegionCore>> open_region(std::uint64_t owner, std::uint64_t counter) noexcept {
  try {
    std::string name = format_region_name(owner, counter);
    auto& m = cores();
    if (auto it = m.find(name); it != m.end()) {
      if (auto core = it->second.lock()) return core;
    }
    auto mapped = shm::map(name);
    if (!mapped) return std::move(mapped).status();
    auto core = std::make_shared<RegionCore>();
    core->name = std::move(name);
    core->mapped = std::move(mapped).value();
    m[core->name] = core;
    return core;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

std::shared_ptr<RegionCore> adopt_published(shm::Shared shared, shm::Mapped mapped) {
  auto core = std::make_shared<RegionCore>();
  core->name = shared.name();
  core->mapped = std::move(mapped);
  core->owned.emplace(std::move(shared));
  cores()[core->name] = core;
  return core;
}

Status map_private(const RegionCore& core, std::uint64_t offset, std::uint64_t size,
                   PrivateMapping& out) noexcept {
  try {
    const std::span<const std::byte> mapped = core.mapped.region().bytes();
    if (size == 0 || offset > mapped.size() || size > mapped.size() - offset)
      return invalid_argument("private mapping outside the region");
    const std::string path = shm::directory() + core.name;
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return os_status("cannot open region " + core.name + " again for a private copy", errno);
    struct Closer {
      int fd;
      ~Closer() { ::close(fd); }
    } closer{fd};
    struct stat st;
    if (::fstat(fd, &st) != 0) return os_status("cannot stat region " + core.name, errno);
    if (!S_ISREG(st.st_mode) || st.st_uid != ::geteuid() || (st.st_mode & 077) != 0)
      return Status(Code::kPermission, "region " + core.name + " is no longer this user's private file");
    if (static_cast<std::uint64_t>(st.st_size) != mapped.size())
      return corrupt("region " + core.name + " changed size since it was mapped");
    // The same region, not another file under its name: regions never
    // change once published, so equal headers (hash, size, creation time)
    // mean the same bytes.
    RegionHeader header;
    if (::pread(fd, &header, sizeof header, 0) != static_cast<ssize_t>(sizeof header) ||
        std::memcmp(&header, mapped.data(), sizeof header) != 0)
      return corrupt("region " + core.name + " is not the region that was mapped under that name");
    const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
    const std::uint64_t start = offset / page * page;
    const std::uint64_t length = offset + size - start;
    void* p = ::mmap(nullptr, length, PROT_READ | PROT_WRITE, MAP_PRIVATE, fd, static_cast<off_t>(start));
    if (p == MAP_FAILED) return os_status("cannot map region " + core.name + " copy-on-write", errno);
    out.base = p;
    out.length = length;
    out.data = static_cast<std::byte*>(p) + (offset - start);
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

PagesWritten private_pages_written(const PrivateMapping& m) noexcept {
  if (m.base == nullptr) return PagesWritten::kClean;
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return PagesWritten::kUnknown;
  const auto page = static_cast<std::uint64_t>(::sysconf(_SC_PAGESIZE));
  const std::uint64_t first = reinterpret_cast<std::uintptr_t>(m.base) / page;
  const std::uint64_t count = (m.length + page - 1) / page;
  constexpr std::uint64_t kPresent = 1ull << 63, kSwapped = 1ull << 62, kFileOrShared = 1ull << 61;
  std::uint64_t entries[512];
  PagesWritten out = PagesWritten::kClean;
  for (std::uint64_t done = 0; done < count && out == PagesWritten::kClean;) {
    const std::uint64_t n = std::min<std::uint64_t>(count - done, 512);
    const ssize_t got = ::pread(fd, entries, n * 8, static_cast<off_t>((first + done) * 8));
    if (got != static_cast<ssize_t>(n * 8)) {
      out = PagesWritten::kUnknown;
      break;
    }
    for (std::uint64_t i = 0; i < n; ++i) {
      const std::uint64_t e = entries[i];
      if ((e & kSwapped) != 0 || ((e & kPresent) != 0 && (e & kFileOrShared) == 0))
        out = PagesWritten::kWritten;
    }
    done += n;
  }
  ::close(fd);
  return out;
}

namespace {

// Whether 16 pages spread evenly over the `pages` pages from address
// `start` (all of them, when fewer) are mapped in this process, from
// /proc/self/pagemap; false when it cannot be read.
bool sampled_pages_present(std::uintptr_t start, std::uintptr_t pages, std::uintptr_t page) noexcept {
  const int fd = ::open("/proc/self/pagemap", O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  constexpr std::uintptr_t kSamples = 16;
  constexpr std::uint64_t kPresent = 1ull << 63;
  bool present = true;
  for (std::uintptr_t k = 0; k < std::min(kSamples, pages) && present; ++k) {
    const std::uintptr_t i = pages <= kSamples ? k : k * (pages - 1) / (kSamples - 1);
    std::uint64_t entry = 0;
    present = ::pread(fd, &entry, sizeof entry, static_cast<off_t>((start / page + i) * sizeof entry)) ==
                  static_cast<ssize_t>(sizeof entry) &&
              (entry & kPresent) != 0;
  }
  ::close(fd);
  return present;
}

}  // namespace

void populate_read(const std::byte* data, std::uint64_t size) noexcept {
#ifdef MADV_POPULATE_READ
  if (data == nullptr || size == 0) return;
  const auto page = static_cast<std::uintptr_t>(::sysconf(_SC_PAGESIZE));
  const auto start = reinterpret_cast<std::uintptr_t>(data) / page * page;
  const std::uintptr_t end = reinterpret_cast<std::uintptr_t>(data) + size;
  // Asking again for pages already mapped in costs a walk of them all (3 ms
  // for 80 MB here): a mapping this process had read before (kept by the map
  // cache) is recognised from a sample of its pages instead.
  if (sampled_pages_present(start, (end - start + page - 1) / page, page)) return;
  (void)::madvise(reinterpret_cast<void*>(start), end - start, MADV_POPULATE_READ);
#else
  (void)data;
  (void)size;
#endif
}

void unmap_private(PrivateMapping& m) noexcept {
  if (m.base != nullptr) ::munmap(m.base, m.length);
  m = PrivateMapping{};
}

}  // namespace kura::r
