#include "kura/core/verify.hpp"

#include <cstring>
#include <string>

#include "kura/core/hash.hpp"

namespace kura {

Result<VerifyReport> verify(const NodeView& node) noexcept {
  VerifyReport report;
  report.hashed = node.region_hashed();
  Status s = walk(node, [&](const NodeView& n) -> Status {
    ++report.nodes;
    if (n.kind() == Kind::kStrings) {
      for (std::uint64_t i = 0; i < n.length(); ++i) {
        auto entry = n.string(i);
        if (!entry) return entry.status();
      }
    }
    if (report.hashed) {
      std::byte header[kHeaderSize];
      std::memcpy(header, &n.header(), kHeaderSize);
      if (node_hash(header, n.data()) != n.header().hash)
        return corrupt("hash mismatch in the " + n.describe() + " node at offset " +
                       std::to_string(n.offset()));
    }
    return Status::ok();
  });
  if (!s) return s;
  return report;
}

}  // namespace kura
