#include "kura/shm/incoming.hpp"

#include <cstring>
#include <string>

#include "kura/core/verify.hpp"
#include "kura/core/view.hpp"
#include "owner_internal.hpp"
#include "pending_internal.hpp"

namespace kura::shm {

struct Incoming::State {
  std::unique_ptr<PendingAccess::State> file;
};

Incoming::Incoming(std::unique_ptr<State> state) noexcept : state_(std::move(state)) {}
Incoming::Incoming(Incoming&& other) noexcept = default;
Incoming& Incoming::operator=(Incoming&& other) noexcept = default;
Incoming::~Incoming() = default;

struct IncomingAccess {
  static Result<Incoming> make(const Lease* lease, std::uint64_t size) {
    return detail::boundary("create region", [&]() -> Result<Incoming> {
      if (size < kHeaderSize)
        return invalid_argument("a region of " + std::to_string(size) + " bytes is shorter than its header");
      KURA_RETURN_IF_ERROR(check_directory());
      ShareOptions options;
      options.hashed = false;  // the image says whether it is
      auto state = std::make_unique<Incoming::State>();
      KURA_ASSIGN_OR_RETURN(state->file, PendingAccess::create_file(lease, size, options));
      return Incoming(std::move(state));
    });
  }
};

Result<Incoming> Incoming::create(std::uint64_t size) noexcept {
  return IncomingAccess::make(nullptr, size);
}

Result<Incoming> Incoming::create(const Lease& lease, std::uint64_t size) noexcept {
  return IncomingAccess::make(&lease, size);
}

std::uint64_t Incoming::size() const noexcept {
  KURA_CHECK(state_ != nullptr);
  return state_->file->size;
}

Status Incoming::write(std::uint64_t offset, std::span<const std::byte> bytes) noexcept {
  KURA_CHECK(state_ != nullptr && state_->file->pid == ::getpid());
  const std::uint64_t size = state_->file->size;
  if (offset > size || bytes.size() > size - offset)
    return Status(Code::kOutOfRange, std::to_string(bytes.size()) + " bytes at offset " +
                                         std::to_string(offset) + " run past the end of a region of " +
                                         std::to_string(size) + " bytes");
  std::memcpy(state_->file->mapping.data() + offset, bytes.data(), bytes.size());
  return Status::ok();
}

Result<Shared> Incoming::publish() && noexcept {
  KURA_CHECK(state_ != nullptr && state_->file->pid == ::getpid());
  std::unique_ptr<State> state = std::move(state_);
  return detail::boundary("publish region", [&]() -> Result<Shared> {
    PendingAccess::State& file = *state->file;
    const auto image = std::span<const std::byte>(file.mapping.data(), file.size);
    auto region = Region::open(image);
    if (!region)
      return Status(Code::kCorrupt, "the region received is damaged: " + region.status().message());
    auto root = region->root();
    if (!root) return Status(Code::kCorrupt, "the region received is damaged: " + root.status().message());
    auto checked = verify(*root);
    if (!checked)
      return Status(Code::kCorrupt, "the region received is damaged: " + checked.status().message());
    return PendingAccess::link(std::move(state->file));
  });
}

}  // namespace kura::shm
