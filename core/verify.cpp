#include "kura/core/verify.hpp"

#include <algorithm>
#include <cstring>
#include <string>
#include <vector>

#include "kura/core/hash.hpp"
#include "no_throw_internal.hpp"

namespace kura {
namespace {

// A piece of the region that a value uses: the header or the data block of
// the node at `node`, the bytes [begin, end).
struct Piece {
  std::uint64_t begin;
  std::uint64_t end;
  std::uint64_t node;
  bool header;
};

std::string describe(const Piece& p) {
  if (p.header) return "the header of the node at offset " + std::to_string(p.node);
  return "the data block (" + std::to_string(p.begin) + "+" + std::to_string(p.end - p.begin) +
         ") of the node at offset " + std::to_string(p.node);
}

// FORMAT.md section 4: every header and data block is referenced once and no
// two overlap. Sorted by where they begin, pieces that do not overlap each
// end before the next begins, so the first overlap is between neighbours.
Status check_tree(std::vector<Piece>& pieces) {
  std::sort(pieces.begin(), pieces.end(), [](const Piece& a, const Piece& b) {
    return a.begin != b.begin ? a.begin < b.begin : a.end < b.end;
  });
  for (std::size_t i = 1; i < pieces.size(); ++i) {
    const Piece& a = pieces[i - 1];
    const Piece& b = pieces[i];
    if (b.begin >= a.end) continue;
    if (a.node == b.node && a.header == b.header)
      return corrupt("the node at offset " + std::to_string(a.node) +
                     " is reached by two links (a value is a tree: FORMAT.md section 4)");
    return corrupt(describe(a) + " and " + describe(b) + " overlap (FORMAT.md section 4)");
  }
  return Status::ok();
}

}  // namespace

Result<VerifyReport> verify(const NodeView& node) noexcept {
  return detail::no_throw([&]() -> Result<VerifyReport> {
    VerifyReport report;
    report.hashed = node.region_hashed();
    std::vector<Piece> pieces;
    Status s = walk(node, [&](const NodeView& n) -> Status {
      ++report.nodes;
      const NodeHeader& h = n.header();
      pieces.push_back(Piece{n.offset(), n.offset() + kHeaderSize, n.offset(), true});
      if (h.data_size) pieces.push_back(Piece{h.data_offset, h.data_offset + h.data_size, n.offset(), false});
      if (n.kind() == Kind::kStrings) {
        for (std::uint64_t i = 0; i < n.length(); ++i) {
          auto entry = n.string(i);
          if (!entry) return entry.status();
        }
      }
      if (report.hashed) {
        std::byte header[kHeaderSize];
        std::memcpy(header, &h, kHeaderSize);
        if (node_hash(header, n.data()) != h.hash)
          return corrupt("hash mismatch in the " + n.describe() + " node at offset " +
                         std::to_string(n.offset()));
      }
      return Status::ok();
    });
    if (!s) return s;
    KURA_RETURN_IF_ERROR(check_tree(pieces));
    return report;
  });
}

}  // namespace kura
