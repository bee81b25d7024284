#include <sys/stat.h>

#include <algorithm>
#include <fstream>

#include "kura/shm/directory.hpp"
#include "message_internal.hpp"
#include "transfer_internal.hpp"

namespace kura::ipc::detail {

std::string region_home() {
  std::string boot;
  std::ifstream in("/proc/sys/kernel/random/boot_id");
  std::getline(in, boot);
  struct stat st {};
  if (::stat(shm::directory().c_str(), &st) != 0) return boot + ":" + shm::directory();
  return boot + ":" + std::to_string(st.st_dev) + ":" + std::to_string(st.st_ino);
}

Status OutgoingTransfer::pump(Sender& sender) {
  while (sent_ < bytes_.size() && sent_ - acked_ < kTransferWindow) {
    const std::size_t n =
        static_cast<std::size_t>(std::min<std::uint64_t>(kChunkData, bytes_.size() - sent_));
    const auto data = bytes_.subspan(static_cast<std::size_t>(sent_), n);
    OutgoingFrame f{FrameType::kChunk,
                    0,
                    id_,
                    std::make_shared<const Bytes>(encode_chunk_head(sent_, data, checksums_)),
                    data,
                    keep_};
    KURA_RETURN_IF_ERROR(sender.send_many(std::span<const OutgoingFrame>(&f, 1)));
    sent_ += n;
  }
  return Status::ok();
}

Status OutgoingTransfer::on_ack(std::uint64_t received) {
  if (received > sent_ || received < acked_)
    return corrupt("ack of " + std::to_string(received) + " bytes when " + std::to_string(sent_) +
                   " were sent and " + std::to_string(acked_) + " acknowledged");
  acked_ = received;
  return Status::ok();
}

Result<IncomingTransfer> IncomingTransfer::start(std::uint64_t id, std::uint64_t size, bool checksums,
                                                 const shm::Lease* lease) noexcept {
  auto region = lease != nullptr ? shm::Incoming::create(*lease, size) : shm::Incoming::create(size);
  if (!region) return region.status();
  return IncomingTransfer(id, std::move(region).value(), checksums);
}

Result<std::uint64_t> IncomingTransfer::on_chunk(std::span<const std::byte> payload) noexcept {
  KURA_ASSIGN_OR_RETURN(Chunk c, decode_chunk(payload, checksums_));
  if (c.offset != received_)
    return corrupt("a chunk at offset " + std::to_string(c.offset) + " where " + std::to_string(received_) +
                   " was next");
  if (c.data.empty() && !complete()) return corrupt("an empty chunk");
  KURA_RETURN_IF_ERROR(region_.write(c.offset, c.data));
  received_ += c.data.size();
  return received_;
}

}  // namespace kura::ipc::detail
