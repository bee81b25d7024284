// Validated read-only views of a region image (FORMAT.md section 5).
//
// A Region is opened over bytes that another process wrote and may still be
// able to change. Opening checks the region header only; every node is
// checked when it is reached, from a private copy of its header, so reaching
// `[2,3]` costs O(depth) whatever the size of the region. Nothing here reads
// outside the span or trusts a value it has not checked; a violation is a
// Corrupt status, never a crash.
//
// Views borrow the bytes, or share ownership of them: a Region opened with a
// `keep_alive` owner (the shm layer passes its mapping) hands a reference to
// it to every view taken from it, so a view keeps the memory alive; without
// one the caller keeps the memory alive. Spans and string_views taken from a
// view borrow from it. Views are values, safe to copy and to use from
// several threads at once.
//
// Bytes in the region may change under a reader (another process can still
// write them). A reader that checks something and then uses it (validates a
// string as UTF-8, then prints it) takes a private copy first: read_string()
// below. A view's header, tag included, is such a copy already.
//
// No function here throws. Every one that returns a Status or a Result may
// also fail with OutOfMemory: an allocation (an error message, a copy)
// failed, and nothing was changed.
#pragma once

#include <algorithm>
#include <array>
#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string_view>
#include <utility>

#include "kura/core/layout.hpp"
#include "kura/core/name.hpp"
#include "kura/core/status.hpp"
#include "kura/core/value.hpp"

namespace kura {

class Region;

// One element of a strings node, borrowed from the region.
struct StringRef {
  std::string_view bytes;  // without the terminating zero (which is there)
  Encoding encoding = Encoding::kUtf8;
  bool na = false;
};

class NodeView {
 public:
  // A copy of the node's checked header.
  const NodeHeader& header() const noexcept { return h_; }
  std::uint64_t offset() const noexcept { return offset_; }
  // Links from the root (0 for the root).
  unsigned depth() const noexcept { return depth_; }
  Kind kind() const noexcept { return static_cast<Kind>(h_.kind); }
  Dtype dtype() const noexcept { return static_cast<Dtype>(h_.dtype); }
  std::uint64_t length() const noexcept { return h_.length; }
  std::string_view tag() const noexcept;
  bool region_hashed() const noexcept { return hashed_; }
  std::uint64_t region_node_count() const noexcept { return node_count_; }
  std::uint64_t region_size() const noexcept { return region_.size(); }

  // The data block (arrays, bytes, and the raw block of any kind), in place.
  std::span<const std::byte> data() const noexcept;

  // The elements of an array of dtype D, in place (zero copies). Errors:
  // InvalidArgument when the node is not an array of dtype D.
  template <Dtype D>
  Result<std::span<const typename DtypeTraits<D>::type>> array() const noexcept {
    using T = typename DtypeTraits<D>::type;
    if (kind() != Kind::kArray || dtype() != D) return not_an_array_of(D);
    auto d = data();
    return std::span<const T>(reinterpret_cast<const T*>(d.data()), d.size() / sizeof(T));
  }

  // String `i` (0-based) of a strings node, in place: its bytes are the
  // region's and may change while they are read (read_string() copies
  // them). Errors: InvalidArgument (not a strings node), OutOfRange,
  // Corrupt (a bad entry).
  Result<StringRef> string(std::uint64_t i) const noexcept;

  // Child `i` (0-based) of a list. Errors: NotAList, OutOfRange, Corrupt.
  Result<NodeView> child(std::uint64_t i) const noexcept;
  // The first child whose name is exactly `name`. Errors: NotAList,
  // OutOfRange (no such name, or no names), Corrupt.
  Result<NodeView> child(std::string_view name) const noexcept;

  // The names node (strings, one per element), if any. Errors: Corrupt.
  Result<std::optional<NodeView>> names() const noexcept;
  // The attribute list (a list whose names are the keys), if any.
  Result<std::optional<NodeView>> attrs() const noexcept;
  // The attribute `key`, if present. Errors: Corrupt.
  Result<std::optional<NodeView>> attr(std::string_view key) const noexcept;

  // "f64 array of 3", "list of 2", ... for messages.
  std::string describe() const;

 private:
  friend class Region;
  // The node at `offset`, reached from `parent` (null for the root): checks
  // the link and the node (FORMAT.md section 7).
  static Result<NodeView> open(std::span<const std::byte> region, const std::shared_ptr<const void>& keep,
                               bool hashed, std::uint64_t node_count, std::uint64_t offset,
                               const NodeView* parent) noexcept;
  Result<StringRef> string_impl(std::uint64_t i) const;
  Result<NodeView> open_linked(std::uint64_t offset, const char* link) const noexcept;
  // The InvalidArgument of array<D>() for a node that is not an array of `d`.
  Status not_an_array_of(Dtype d) const noexcept;

  std::span<const std::byte> region_;
  std::shared_ptr<const void> keep_;  // the owner of region_'s memory, if any
  NodeHeader h_{};
  std::uint64_t offset_ = 0;
  std::uint64_t node_count_ = 0;
  bool hashed_ = false;
  unsigned depth_ = 0;
  // Offsets of the ancestors, root first; a link back to one is Corrupt.
  // Only the first depth_ entries are meaningful, and only those are copied
  // (a view is copied at every step of a walk).
  std::array<std::uint64_t, kMaxDepth> ancestors_;

 public:
  NodeView() noexcept = default;
  NodeView(const NodeView& o) noexcept { *this = o; }
  // A move takes over the reference to the keep-alive (no reference count
  // changes): a Result<NodeView> is moved out at every return. The view
  // moved from is left an empty null node, which reads no memory.
  NodeView(NodeView&& o) noexcept { *this = std::move(o); }
  NodeView& operator=(const NodeView& o) noexcept {
    if (this != &o) {
      keep_ = o.keep_;
      copy_fields(o);
    }
    return *this;
  }
  NodeView& operator=(NodeView&& o) noexcept {
    if (this != &o) {
      keep_ = std::move(o.keep_);
      copy_fields(o);
      o.region_ = {};
      o.h_ = NodeHeader{};
      o.offset_ = 0;
      o.depth_ = 0;
    }
    return *this;
  }

 private:
  void copy_fields(const NodeView& o) noexcept {
    region_ = o.region_;
    h_ = o.h_;
    offset_ = o.offset_;
    node_count_ = o.node_count_;
    hashed_ = o.hashed_;
    depth_ = o.depth_;
    std::copy_n(o.ancestors_.begin(), o.depth_, ancestors_.begin());
  }
};

class Region {
 public:
  // Checks the region header of `bytes` (FORMAT.md 5.1): size, magic,
  // version, header hash, sealed, flags, region_size == bytes.size(), root
  // offset and node count. Errors: Corrupt (an unsupported version is Corrupt
  // with its own message); InvalidArgument when `bytes` is not 64-byte
  // aligned. Reads 64 bytes. When `keep_alive` is given, the Region and every
  // view taken from it hold a reference to it, which keeps `bytes` valid.
  static Result<Region> open(std::span<const std::byte> bytes,
                             std::shared_ptr<const void> keep_alive = nullptr) noexcept;

  // A copy of the checked header.
  const RegionHeader& header() const noexcept { return header_; }
  bool hashed() const noexcept { return (header_.flags & kRegionHashed) != 0; }
  std::span<const std::byte> bytes() const noexcept { return bytes_; }

  // The root node. Errors: Corrupt.
  Result<NodeView> root() const noexcept;
  // The node at `path` (1-based indices, as in a name). Errors: Corrupt,
  // OutOfRange (an index past the end of a list), NotAList (a step into a
  // node that is not a list).
  Result<NodeView> at(std::span<const std::uint64_t> path) const noexcept;
  Result<NodeView> at(const Name& name) const noexcept { return at(name.path); }

 private:
  static Result<Region> open_impl(std::span<const std::byte> bytes, std::shared_ptr<const void> keep_alive);

  std::span<const std::byte> bytes_;
  std::shared_ptr<const void> keep_;
  RegionHeader header_{};
};

// What a walk over a whole value may spend (FORMAT.md 5.3): no more nodes
// than the region's node_count, no more header and data bytes than the
// region holds, and no more bytes read out of string entries (copied,
// converted, printed) than the region holds. In a valid tree every piece is
// met once and every string read once, so none of the three runs out; links
// that share a node, or string entries that share their bytes, make one run
// out instead of letting the walk do more than O(region size) work or
// output. For walks of one's own (printers, converters): take() each node
// met, and read strings with read_string(); walk() and to_value() do so
// already. Not thread-safe: one budget per walk.
class WalkBudget {
 public:
  // A budget for walking the region that `start` belongs to.
  explicit WalkBudget(const NodeView& start) noexcept
      : nodes_(start.region_node_count()), bytes_(start.region_size()), text_(start.region_size()) {}
  // Charges the node `n` (its header and data block). Errors: Corrupt once
  // the nodes or bytes are spent.
  Status take(const NodeView& n) noexcept;

 private:
  friend Result<String> read_string(const NodeView& n, std::uint64_t i, WalkBudget& budget) noexcept;
  // Charges `bytes` read out of string entries. Errors: Corrupt once the
  // region's size is spent.
  Status take_text(std::uint64_t bytes) noexcept;

  std::uint64_t nodes_;
  std::uint64_t bytes_;
  std::uint64_t text_;
};

// String `i` (0-based) of the strings node `n`, copied into private memory:
// the region's bytes are read once, so what another process writes there
// afterwards cannot change the copy that is checked and used. Charges the
// string's bytes and its terminator to `budget` before copying them.
// Errors: as NodeView::string, Corrupt when the budget is spent. The
// returned String owns its bytes.
Result<String> read_string(const NodeView& n, std::uint64_t i, WalkBudget& budget) noexcept;

// Calls `visit` on `node` and on every node below it in canonical order
// (the node, its names, its attribute list and what it holds, its
// children), checking each. Stops with Corrupt once it has met more nodes
// than the region's node_count, or more header and data bytes than the
// region holds (links that share a node), so no region can make it loop or
// do more than O(region size) work. A non-ok status from `visit` stops the
// walk and is returned. An exception thrown by `visit` stops it too and is
// returned as a status: OutOfMemory for std::bad_alloc, InvalidArgument
// (with the exception's what()) for anything else.
Status walk(const NodeView& node, const std::function<Status(const NodeView&)>& visit) noexcept;

// A deep copy of the value at `node` into ordinary memory; every string is
// read once (read_string). Errors: Corrupt (including an NA attribute key
// and a spent WalkBudget).
Result<Value> to_value(const NodeView& node) noexcept;

}  // namespace kura
