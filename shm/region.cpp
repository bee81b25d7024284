#include "kura/shm/region.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <limits>
#include <optional>
#include <utility>

#include "fs_internal.hpp"
#include "kura/shm/owner.hpp"
#include "map_cache_internal.hpp"
#include "owner_internal.hpp"
#include "pending_internal.hpp"

namespace kura::shm {

using detail::Mapping;
using detail::OwnedFd;

namespace {

Status with_context(const Status& s, const std::string& context) {
  if (s.code() == Code::kOutOfMemory) return s;
  return Status(s.code(), context + ": " + s.message(), s.sys_errno());
}

// Opens the published region `region_name` ("/kura_<o>_<c>") read-only and
// checks it is this user's private regular file.
Result<int> open_region(const std::string& region_name) {
  auto fd = detail::open_own_file(detail::dir_path(region_name), O_RDONLY, "region " + region_name);
  if (!fd && fd.status().code() == Code::kNotFound) return detail::region_not_found(region_name);
  return fd;
}

std::uint64_t now_ns() {
  return static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::nanoseconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count());
}

}  // namespace

Status no_space(std::uint64_t asked) {
  return Status(Code::kNoSpace,
                "cannot create region of " + detail::human_bytes(asked) + ": " + detail::shm_dir() + " has " +
                    detail::human_bytes(detail::shm_free_bytes()) +
                    " free (raise the container's --shm-size, or run `kura prune` to remove orphans)",
                ENOSPC);
}

namespace {

Status owner_gone(std::uint64_t owner) {
  return Status(Code::kNotFound,
                "owner " + detail::hex(owner) +
                    " exited while a region was being written for it; nothing was published");
}

}  // namespace

// --- Mapped -----------------------------------------------------------------

struct Mapped::State {
  Region region;  // holds the mapping (its keep-alive), as every view does
  NodeView node;
  std::string name;
};

struct MappedAccess {
  static Mapped make(std::shared_ptr<const Mapped::State> state) {
    Mapped m;
    m.state_ = std::move(state);
    return m;
  }
};

const Region& Mapped::region() const noexcept {
  KURA_CHECK(state_ != nullptr);
  return state_->region;
}

const NodeView& Mapped::node() const noexcept {
  KURA_CHECK(state_ != nullptr);
  return state_->node;
}

const std::string& Mapped::name() const noexcept {
  KURA_CHECK(state_ != nullptr);
  return state_->name;
}

namespace {

// Opens the region `region_name`, checks it, maps it and checks its header,
// then offers the mapping to the cache.
Result<Region> map_region(const std::string& region_name) {
  KURA_ASSIGN_OR_RETURN(int raw_fd, open_region(region_name));
  KURA_ASSIGN_OR_RETURN(OwnedFd fd, OwnedFd::adopt(raw_fd, false));
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return detail::os_error("cannot stat region " + region_name, errno);
  const auto size = static_cast<std::uint64_t>(st.st_size);
  if (size < kHeaderSize)
    return corrupt("region " + region_name + " is " + std::to_string(size) +
                   " bytes, smaller than a region header");
  if (size > std::numeric_limits<std::size_t>::max())
    return corrupt("region " + region_name + " is too large");
  // PROT_READ, MAP_SHARED, no prefaulting: mapping is O(1) in the size.
  KURA_ASSIGN_OR_RETURN(Mapping mapping,
                        Mapping::map(fd.get(), static_cast<std::size_t>(size), false, false));
  auto owned = std::make_shared<Mapping>(std::move(mapping));
  auto bytes = std::span<const std::byte>(owned->data(), owned->size());
  auto region = Region::open(bytes, std::shared_ptr<const void>(owned));
  if (!region) return with_context(region.status(), "region " + region_name);
  detail::cache_region(region_name, *region, st);
  return region;
}

}  // namespace

Result<Mapped> map(std::string_view name) noexcept {
  return detail::boundary("map", [&]() -> Result<Mapped> {
    KURA_RETURN_IF_ERROR(check_directory());
    KURA_ASSIGN_OR_RETURN(Name n, parse_name(name));
    const std::string region_name = format_region_name(n.owner, n.counter);
    KURA_ASSIGN_OR_RETURN(std::optional<Region> cached, detail::cached_region(region_name));
    auto state = std::make_shared<Mapped::State>();
    if (cached) {
      state->region = std::move(*cached);
    } else {
      KURA_ASSIGN_OR_RETURN(state->region, map_region(region_name));
    }
    auto node = state->region.at(n.path);
    if (!node) return with_context(node.status(), std::string(name));
    state->node = std::move(node).value();
    state->name = std::string(name);
    return MappedAccess::make(std::move(state));
  });
}

// --- Shared -----------------------------------------------------------------

struct SharedAccess {
  static Shared make(std::string name, std::uint64_t size, bool unlink_on_release) noexcept {
    return Shared(std::move(name), size, unlink_on_release);
  }
};

Shared::Shared(std::string name, std::uint64_t size, bool unlink_on_release) noexcept
    : name_(std::move(name)),
      size_(size),
      creator_pid_(static_cast<int>(::getpid())),
      unlink_(unlink_on_release) {}

Shared::Shared(Shared&& other) noexcept
    : name_(std::move(other.name_)),
      size_(other.size_),
      creator_pid_(other.creator_pid_),
      unlink_(other.unlink_) {
  other.name_.clear();
  other.size_ = 0;
  other.unlink_ = false;
}

Shared& Shared::operator=(Shared&& other) noexcept {
  if (this != &other) {
    (void)release();
    name_ = std::move(other.name_);
    size_ = other.size_;
    creator_pid_ = other.creator_pid_;
    unlink_ = other.unlink_;
    other.name_.clear();
    other.size_ = 0;
    other.unlink_ = false;
  }
  return *this;
}

Shared::~Shared() {
  (void)release();
}

Result<Mapped> Shared::map() const noexcept {
  if (name_.empty()) return invalid_argument("map of an empty Shared handle (released or disowned)");
  return shm::map(name_);
}

Status Shared::release() noexcept {
  return detail::boundary("release region", [&]() -> Status {
    if (name_.empty()) return Status::ok();
    std::string name = std::move(name_);
    name_.clear();
    size_ = 0;
    const bool unlink = unlink_ && creator_pid_ == static_cast<int>(::getpid());
    unlink_ = false;
    if (!unlink) return Status::ok();  // kept, disowned, written for another owner, or inherited by fork()
    const std::string path = detail::dir_path(name);
    const int rc = ::unlink(path.c_str());
    const int err = errno;
    detail::forget_region(name);
    if (rc != 0 && err != ENOENT) return detail::os_error("cannot unlink region " + name, err);
    return Status::ok();
  });
}

Result<std::string> Shared::keep() noexcept {
  return detail::boundary("keep region", [&]() -> Result<std::string> {
    if (name_.empty()) return invalid_argument("keep of an empty Shared handle (released or disowned)");
    if (creator_pid_ != static_cast<int>(::getpid()))
      return invalid_argument("keep of a Shared inherited through fork(): the region is the parent's");
    const std::string from = detail::dir_path(name_);
    for (int attempt = 0; attempt < 16; ++attempt) {
      KURA_ASSIGN_OR_RETURN(std::uint64_t counter, detail::random_u64());
      const std::string kept = format_region_name(kKeptOwner, counter);
      if (::link(from.c_str(), detail::dir_path(kept).c_str()) != 0) {
        if (errno == EEXIST) continue;
        return detail::os_error("cannot link " + name_ + " to a kept name", errno);
      }
      ::unlink(from.c_str());
      detail::forget_region(name_);
      name_.clear();
      size_ = 0;
      unlink_ = false;
      return kept;
    }
    return Status(Code::kExists,
                  "cannot keep a region: 16 random names were all taken in " + detail::shm_dir());
  });
}

std::string Shared::disown() noexcept {
  std::string name = std::move(name_);
  name_.clear();
  size_ = 0;
  if (unlink_ && creator_pid_ == static_cast<int>(::getpid())) detail::disowned(name);
  unlink_ = false;
  return name;
}

// --- Pending ----------------------------------------------------------------

Pending::Pending(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Pending::Pending(Pending&& other) noexcept = default;
Pending& Pending::operator=(Pending&& other) noexcept = default;
Pending::~Pending() = default;

Result<std::unique_ptr<Pending::State>> PendingAccess::create(const Lease* lease, const Value& value,
                                                              const ShareOptions& options) {
  KURA_RETURN_IF_ERROR(check_directory());
  KURA_ASSIGN_OR_RETURN(Layout layout, Layout::plan(value));
  KURA_ASSIGN_OR_RETURN(auto state, create_file(lease, layout.size(), options));
  state->value = &value;
  state->layout = std::move(layout);
  return finish_create(std::move(state));
}

Result<std::unique_ptr<Pending::State>> PendingAccess::create_file(const Lease* lease, std::uint64_t size,
                                                                   const ShareOptions& options) {
  if (size > static_cast<std::uint64_t>(std::numeric_limits<off_t>::max()) ||
      size > std::numeric_limits<std::size_t>::max())
    return invalid_argument("value of " + detail::human_bytes(size) + " is too large for a region");

  auto state = std::make_unique<Pending::State>();
  state->options = options;
  state->size = size;
  state->pid = ::getpid();
  if (lease != nullptr) {
    // A copy of the lease's descriptor shares its lock: the Pending keeps the
    // owner's files safe from prune however long the caller's Lease lives.
    const int src = detail::lease_fd(*lease);
    if (src < 0) return invalid_argument("a Lease that was moved from, or inherited through fork()");
    int copy = ::fcntl(src, F_DUPFD_CLOEXEC, 0);
    if (copy < 0)
      return detail::os_error("cannot duplicate the lease of owner " + detail::hex(lease->owner()), errno);
    KURA_ASSIGN_OR_RETURN(state->lease, OwnedFd::adopt(copy, true));
    state->owner = lease->owner();
    if (!state->owner_alive()) return owner_gone(state->owner);
  } else {
    KURA_ASSIGN_OR_RETURN(state->owner, process_owner());
  }

  // Exclusive create under a private temporary name with a random counter:
  // a name someone planted is never opened for writing. The temporary is
  // then write-locked for as long as it is written (prune removes one that
  // nobody holds locked, whoever its owner), and checked to still be the file
  // at its path: a prune may have found it unlocked in the instant before.
  for (int attempt = 0;; ++attempt) {
    if (attempt == 16)
      return Status(Code::kExists, "cannot create a region: 16 random counters were all taken or pruned in " +
                                       detail::shm_dir());
    KURA_ASSIGN_OR_RETURN(std::uint64_t counter, detail::random_u64());
    std::string temp = detail::region_temp_path(state->owner, counter);
    int raw = ::open(temp.c_str(), O_RDWR | O_CREAT | O_EXCL | detail::kOpenFlags, 0600);
    if (raw < 0) {
      if (errno == EEXIST) continue;
      if (errno == ENOSPC) return no_space(size);
      return detail::os_error("cannot create temporary region " + temp, errno);
    }
    auto fd = OwnedFd::adopt(raw, true);
    if (!fd) {
      ::unlink(temp.c_str());
      return fd.status();
    }
    const int err = detail::try_lock(fd->get(), F_WRLCK, detail::kWriterByte, 1);
    if (err == EAGAIN || err == EACCES) continue;  // a prune holds it and removes it
    if (err != 0) {
      ::unlink(temp.c_str());
      return detail::os_error("cannot lock temporary region " + temp, err);
    }
    if (!detail::same_file(fd->get(), temp)) continue;  // pruned before our lock
    state->counter = counter;
    state->temp_path = std::move(temp);  // from here on ~State removes it on every error
    state->fd = std::move(fd).value();
    break;
  }
  const int fd = state->fd.get();
  if (::fchmod(fd, 0600) != 0)  // 0600 whatever the umask
    return detail::os_error("cannot set mode 0600 on " + state->temp_path, errno);
  // Reserve every page now: a full directory is NoSpace here, never a SIGBUS
  // while writing. On a tmpfs with huge=always or within_size, fallocate
  // reserves 2 MiB pages by itself (docs/design.md section 3.9).
  if (detail::huge_pages() == HugePages::kAdvise) {
    KURA_ASSIGN_OR_RETURN(bool reserved, reserve_advised(*state, size));
    if (reserved) return state;
  }
  int rc;
  do {
    rc = ::posix_fallocate(fd, 0, static_cast<off_t>(size));
  } while (rc == EINTR);
  if (rc == ENOSPC || rc == EFBIG || rc == EDQUOT) return no_space(size);
  if (rc != 0) return detail::os_error("cannot reserve " + detail::human_bytes(size) + " for a region", rc);
  if (!state->mapping.data()) {
    KURA_ASSIGN_OR_RETURN(state->mapping, Mapping::map(fd, static_cast<std::size_t>(size), true, true));
  }
  return state;
}

// On a tmpfs mounted huge=advise, fallocate(2) has no mapping to take advice
// from and would reserve 4 KiB pages. Instead the file is given its size, the
// writable mapping asks for huge pages (MADV_HUGEPAGE), and populating it
// (MADV_POPULATE_WRITE, Linux 5.14) reserves every page as fallocate would:
// a full directory fails here (EFAULT: a SIGBUS that did not happen). Returns
// false, with the mapping made, where the kernel cannot populate; the caller
// then falls back to fallocate.
Result<bool> PendingAccess::reserve_advised(State& state, std::uint64_t size) {
  const int fd = state.fd.get();
  if (::ftruncate(fd, static_cast<off_t>(size)) != 0) {
    if (errno == EFBIG || errno == ENOSPC) return no_space(size);
    return detail::os_error("cannot size " + state.temp_path, errno);
  }
  KURA_ASSIGN_OR_RETURN(state.mapping, Mapping::map(fd, static_cast<std::size_t>(size), true, true));
  (void)::madvise(state.mapping.data(), state.mapping.size(), MADV_HUGEPAGE);
  if (::madvise(state.mapping.data(), state.mapping.size(), MADV_POPULATE_WRITE) == 0) return true;
  const int e = errno;
  if (e == EINVAL) return false;  // a kernel without MADV_POPULATE_WRITE
  if (e == EFAULT || e == ENOSPC) return no_space(size);
  if (e == ENOMEM) return Status::out_of_memory();
  return detail::os_error("cannot reserve " + detail::human_bytes(size) + " for a region", e);
}

Result<std::unique_ptr<Pending::State>> PendingAccess::finish_create(std::unique_ptr<State> state) {
  const int fd = state->fd.get();
  auto dest = std::span<std::byte>(state->mapping.data(), state->mapping.size());
  // Copied payloads go in with pwrite(2): the kernel fills the pages
  // directly, where a memcpy through the mapping would take a page fault
  // per page. Each chunk is hashed while it is still in cache.
  WriteOptions write_options;
  write_options.hash_copies = state->options.hashed;
  write_options.copy = [fd](std::uint64_t offset, std::span<const std::byte> bytes) -> Status {
    return detail::pwrite_all(fd, bytes, offset);
  };
  auto writer = Writer::write(state->layout, dest, Stamp{now_ns(), static_cast<std::uint32_t>(::getpid())},
                              write_options);
  if (!writer) return writer.status();
  state->writer.emplace(std::move(writer).value());
  return state;
}

Result<Pending> Pending::create(const Value& value, const ShareOptions& options) noexcept {
  return detail::boundary("create region", [&]() -> Result<Pending> {
    KURA_ASSIGN_OR_RETURN(auto state, PendingAccess::create(nullptr, value, options));
    return PendingAccess::make(std::move(state));
  });
}

Result<Pending> Pending::create(const Lease& lease, const Value& value,
                                const ShareOptions& options) noexcept {
  return detail::boundary("create region", [&]() -> Result<Pending> {
    KURA_ASSIGN_OR_RETURN(auto state, PendingAccess::create(&lease, value, options));
    return PendingAccess::make(std::move(state));
  });
}

std::span<std::byte> Pending::block(const Value& v) const noexcept {
  KURA_CHECK(state_ != nullptr && state_->writer.has_value());
  KURA_CHECK(state_->pid == ::getpid());  // a Pending inherited through fork() is not the child's
  return state_->writer->block(v);
}

std::uint64_t Pending::bytes_copied() const noexcept {
  KURA_CHECK(state_ != nullptr && state_->writer.has_value());
  return state_->writer->bytes_copied();
}

Result<Shared> Pending::publish() && noexcept {
  KURA_CHECK(state_ != nullptr && state_->writer.has_value());
  KURA_CHECK(state_->pid == ::getpid());  // a Pending inherited through fork() is not the child's
  // The state dies with this call: on any error ~State removes the temporary.
  std::unique_ptr<State> state = std::move(state_);
  return detail::boundary("publish region", [&]() -> Result<Shared> {
    state->writer->seal(state->options.hashed);
    state->writer.reset();
    return PendingAccess::link(std::move(state));
  });
}

Result<Shared> PendingAccess::link(std::unique_ptr<State> state) {
  state->mapping.reset();  // drop the writable mapping
  if (::fchmod(state->fd.get(), 0400) != 0)
    return detail::os_error("cannot make " + state->temp_path + " read-only", errno);

  const bool keep = state->options.keep;
  const std::uint64_t owner = keep ? kKeptOwner : state->owner;
  std::uint64_t counter = state->counter;
  if (keep) {
    KURA_ASSIGN_OR_RETURN(counter, detail::random_u64());
  }
  std::string path;
  for (int attempt = 0;; ++attempt) {
    if (attempt == 16)
      return Status(Code::kExists,
                    "cannot publish a region: 16 random names were all taken in " + detail::shm_dir());
    path = detail::region_path(owner, counter);
    if (::link(state->temp_path.c_str(), path.c_str()) == 0) break;
    // The owner written for exited cleanly and removed our temporary file.
    if (errno == ENOENT && state->for_other()) return owner_gone(state->owner);
    if (errno != EEXIST) return detail::os_error("cannot link " + state->temp_path + " to " + path, errno);
    KURA_ASSIGN_OR_RETURN(counter, detail::random_u64());
  }
  ::unlink(state->temp_path.c_str());
  state->temp_path.clear();
  state->fd.reset();  // only now: the temporary stayed locked until it was gone
  // Written for an owner that exited meanwhile: its clean exit may have
  // missed the new name, and nobody would ever release it.
  if (!keep && !state->owner_alive()) {
    ::unlink(path.c_str());
    return owner_gone(state->owner);
  }
  // A region written for another owner is theirs from now on: this handle
  // never unlinks it (the recipient adopts it).
  return SharedAccess::make(format_region_name(owner, counter), state->size, !keep && !state->for_other());
}

Result<Shared> share(const Value& value, const ShareOptions& options) noexcept {
  auto pending = Pending::create(value, options);
  if (!pending) return std::move(pending).status();
  return std::move(pending).value().publish();
}

Result<Shared> share(const Lease& lease, const Value& value, const ShareOptions& options) noexcept {
  auto pending = Pending::create(lease, value, options);
  if (!pending) return std::move(pending).status();
  return std::move(pending).value().publish();
}

// --- adopt, remove ------------------------------------------------------------

Result<Shared> adopt(std::string_view name) noexcept {
  return detail::boundary("adopt", [&]() -> Result<Shared> {
    KURA_RETURN_IF_ERROR(check_directory());
    KURA_ASSIGN_OR_RETURN(Name n, parse_name(name));
    if (!n.path.empty())
      return invalid_name("adopt takes a region name without a path, not " + std::string(name));
    KURA_ASSIGN_OR_RETURN(std::uint64_t me, process_owner());
    const std::string region_name = format_region_name(n.owner, n.counter);
    if (n.owner != me)
      return Status(Code::kPermission, "region " + region_name + " belongs to owner " + detail::hex(n.owner) +
                                           ", not to this process's owner " + detail::hex(me) +
                                           "; only regions written for this process can be adopted");
    KURA_ASSIGN_OR_RETURN(int raw_fd, open_region(region_name));
    KURA_ASSIGN_OR_RETURN(OwnedFd fd, OwnedFd::adopt(raw_fd, false));
    struct stat st;
    if (::fstat(fd.get(), &st) != 0) return detail::os_error("cannot stat region " + region_name, errno);
    return SharedAccess::make(region_name, static_cast<std::uint64_t>(st.st_size), true);
  });
}

Status remove(std::string_view name) noexcept {
  return detail::boundary("remove", [&]() -> Status {
    KURA_RETURN_IF_ERROR(check_directory());
    auto n = parse_name(name);
    if (!n) return n.status();
    if (!n->path.empty())
      return invalid_name("remove takes a region name without a path, not " + std::string(name));
    const std::string region_name = format_region_name(n->owner, n->counter);
    const std::string path = detail::dir_path(region_name);
    struct stat st;
    if (::lstat(path.c_str(), &st) != 0) {
      if (errno == ENOENT)
        return Status(Code::kNotFound, "region " + region_name + " does not exist", ENOENT);
      return detail::os_error("cannot stat region " + region_name, errno);
    }
    if (st.st_uid != ::geteuid())
      return Status(Code::kPermission, "region " + region_name + " belongs to user " +
                                           std::to_string(st.st_uid) +
                                           "; kura never removes another user's files");
    if (::unlink(path.c_str()) != 0) {
      if (errno == ENOENT)
        return Status(Code::kNotFound, "region " + region_name + " does not exist", ENOENT);
      return detail::os_error("cannot remove region " + region_name, errno);
    }
    detail::forget_region(region_name);
    return Status::ok();
  });
}

}  // namespace kura::shm
