#include "kura/core/view.hpp"

#include <cstring>
#include <string>

#include "kura/core/hash.hpp"
#include "no_throw_internal.hpp"

namespace kura {
namespace {

std::string num(std::uint64_t v) {
  return std::to_string(v);
}

bool valid_header_offset(std::uint64_t offset, std::uint64_t size) {
  return offset % kAlign == 0 && offset >= kHeaderSize && size >= kHeaderSize && offset <= size - kHeaderSize;
}

template <class T>
T load(std::span<const std::byte> region, std::uint64_t offset) {
  T v;
  std::memcpy(&v, region.data() + offset, sizeof v);
  return v;
}

// What is wrong with a link or the node it reaches (FORMAT.md section 7),
// found without allocating: a walk's success path builds no message and no
// Status; fault_status() makes the message from the same private copy.
enum class Fault : std::uint8_t {
  kNone,
  kOffset,    // not a valid header offset
  kTooDeep,   // past kMaxDepth links
  kAncestor,  // points at a node on the path to it
  kMagic,
  kKind,
  kDtype,
  kFlags,
  kTag,        // a tag on a node that is not bytes
  kBytesTag,   // a bytes tag that is not printable ASCII padded with zeros
  kDataAlign,  // data_offset not 64-aligned
  kDataZero,   // data_offset 0 with data_size not 0
  kDataRange,  // the data block runs past the region
  kDataSize,   // data_size disagrees with length and kind (section 4.2)
};

// The words of a node header, as check_node() reads them.
struct HeaderWords {
  std::uint64_t w[8];
  std::uint8_t kind() const { return static_cast<std::uint8_t>(w[0] >> 32); }
  std::uint8_t dtype() const { return static_cast<std::uint8_t>(w[0] >> 40); }
  std::uint64_t length() const { return w[1]; }
  std::uint64_t data_offset() const { return w[2]; }
  std::uint64_t data_size() const { return w[3]; }
};
static_assert(sizeof(HeaderWords) == sizeof(NodeHeader));

[[gnu::always_inline]] inline bool data_size_ok(const HeaderWords& h) {
  std::uint64_t want = 0;
  switch (static_cast<Kind>(h.kind())) {
    case Kind::kNull: return h.length() == 0 && h.data_size() == 0 && h.data_offset() == 0;
    case Kind::kArray:
      return !__builtin_mul_overflow(h.length(), dtype_width(static_cast<Dtype>(h.dtype())), &want) &&
             want == h.data_size();
    case Kind::kStrings:
      if (h.length() == 0) return h.data_size() == 0;
      return h.length() <= h.data_size() / 16 && align64(16 * h.length()) <= h.data_size();
    case Kind::kList:
      return !__builtin_mul_overflow(h.length(), std::uint64_t{8}, &want) && want == h.data_size();
    case Kind::kBytes: return h.data_size() == h.length();
  }
  return false;
}

// Checks a private copy of a node header against a region of `size` bytes,
// in registers: checking fields of a copy just stored through memory stalls
// on store forwarding, and cost more than the rest of a step.
[[gnu::always_inline]] inline Fault check_node(const HeaderWords& h, std::uint64_t size) {
  constexpr std::uint32_t kMagic = 0x444f4e4b;  // "KNOD", little-endian
  if (static_cast<std::uint32_t>(h.w[0]) != kMagic) return Fault::kMagic;
  if (h.kind() > static_cast<std::uint8_t>(Kind::kBytes)) return Fault::kKind;
  const Kind kind = static_cast<Kind>(h.kind());
  if (kind == Kind::kArray ? (h.dtype() == 0 || h.dtype() > kMaxDtype) : h.dtype() != 0) return Fault::kDtype;
  if ((h.w[0] >> 48) != 0) return Fault::kFlags;
  const std::uint64_t tag = h.w[7];
  if (kind != Kind::kBytes) {
    if (tag != 0) return Fault::kTag;
  } else {
    // Printable ASCII (0x21-0x7E), then only zero bytes.
    unsigned i = 0;
    auto byte = [&](unsigned k) { return static_cast<std::uint8_t>(tag >> (8 * k)); };
    while (i < 8 && byte(i) >= 0x21 && byte(i) <= 0x7E) ++i;
    for (; i < 8; ++i)
      if (byte(i) != 0) return Fault::kBytesTag;
  }
  if (h.data_offset() % kAlign != 0) return Fault::kDataAlign;
  if (h.data_offset() == 0 && h.data_size() != 0) return Fault::kDataZero;
  if (h.data_offset() > size || h.data_size() > size - h.data_offset()) return Fault::kDataRange;
  if (!data_size_ok(h)) return Fault::kDataSize;
  return Fault::kNone;
}

// Follows a link to `offset` from a node whose path from the root, itself
// included, is `ancestors[0..depth)`: checks the link, copies the header
// there into `out` and checks the copy (also kept in `out` on a fault).
[[gnu::always_inline]] inline Fault reach(std::span<const std::byte> region, std::uint64_t offset,
                                          const std::uint64_t* ancestors, unsigned depth, NodeHeader& out) {
  if (!valid_header_offset(offset, region.size())) return Fault::kOffset;
  if (depth > kMaxDepth) return Fault::kTooDeep;
  for (unsigned i = 0; i < depth; ++i)
    if (ancestors[i] == offset) return Fault::kAncestor;
  // Each word is read from the region exactly once (an atomic load is never
  // repeated by the compiler), so the checked copy is the used one. Headers
  // are 64-aligned in a 64-aligned region: the loads are aligned.
  HeaderWords h;
  const auto* src = reinterpret_cast<const std::uint64_t*>(region.data() + offset);
  auto* dst = reinterpret_cast<std::byte*>(&out);
#pragma GCC unroll 8
  for (int i = 0; i < 8; ++i) {
    h.w[i] = __atomic_load_n(src + i, __ATOMIC_RELAXED);
    std::memcpy(dst + 8 * i, &h.w[i], sizeof h.w[i]);
  }
  return check_node(h, region.size());
}

std::string describe_header(const NodeHeader& h) {
  switch (static_cast<Kind>(h.kind)) {
    case Kind::kNull: return "null";
    case Kind::kArray:
      return std::string(dtype_name(static_cast<Dtype>(h.dtype))) + " array of " + num(h.length);
    case Kind::kStrings: return "strings of " + num(h.length);
    case Kind::kList: return "list of " + num(h.length);
    case Kind::kBytes: return "bytes of " + num(h.length);
  }
  return "?";
}

// The message of `f`, found at `offset` with the private copy `h`.
[[gnu::cold]] Status fault_status(Fault f, const NodeHeader& h, std::uint64_t offset) {
  const std::string at = " at offset " + num(offset);
  const Kind kind = static_cast<Kind>(h.kind);
  switch (f) {
    case Fault::kNone: break;
    case Fault::kOffset:
      return corrupt("node offset " + num(offset) + " is not a 64-aligned header inside the region");
    case Fault::kTooDeep: return corrupt("node deeper than " + num(kMaxDepth) + " links");
    case Fault::kAncestor: return corrupt("link at offset " + num(offset) + " points at an ancestor");
    case Fault::kMagic: return corrupt("bad node magic" + at);
    case Fault::kKind: return corrupt("unknown node kind " + num(h.kind) + at);
    case Fault::kDtype:
      return corrupt("dtype " + num(h.dtype) + " invalid for a " + std::string(kind_name(kind)) + " node" +
                     at);
    case Fault::kFlags: return corrupt("unknown node flags" + at);
    case Fault::kTag: return corrupt("tag set on a " + std::string(kind_name(kind)) + " node" + at);
    case Fault::kBytesTag: return corrupt("bytes tag is not printable ASCII padded with zeros" + at);
    case Fault::kDataAlign: return corrupt("data_offset " + num(h.data_offset) + " is not 64-aligned");
    case Fault::kDataZero: return corrupt("data_offset 0 with data_size " + num(h.data_size));
    case Fault::kDataRange:
      return corrupt("data block at " + num(h.data_offset) + " of " + num(h.data_size) +
                     " bytes runs past the region");
    case Fault::kDataSize:
      if (kind == Kind::kNull) return corrupt("null node with length, data_offset or data_size not 0" + at);
      if (kind == Kind::kStrings && h.length == 0)
        return corrupt("empty strings node with data_size " + num(h.data_size) + at);
      return corrupt(std::string(kind == Kind::kArray     ? "array"
                                 : kind == Kind::kStrings ? "strings node"
                                 : kind == Kind::kList    ? "list"
                                                          : "bytes node") +
                     " of length " + num(h.length) + " has data_size " + num(h.data_size) + at);
  }
  return corrupt("unknown fault" + at);
}

// The error of stepping to child `i` (0-based) of the node `h`: NotAList or
// OutOfRange.
[[gnu::cold]] Status step_error(const NodeHeader& h, std::uint64_t i) {
  if (static_cast<Kind>(h.kind) != Kind::kList)
    return Status(Code::kNotAList, "cannot step into " + describe_header(h) + ": not a list");
  return Status(Code::kOutOfRange, "index " + num(i + 1) + " past the end of a list of " + num(h.length));
}

}  // namespace

Result<Region> Region::open(std::span<const std::byte> bytes,
                            std::shared_ptr<const void> keep_alive) noexcept {
  return detail::no_throw([&] { return open_impl(bytes, std::move(keep_alive)); });
}

Result<Region> Region::open_impl(std::span<const std::byte> bytes, std::shared_ptr<const void> keep_alive) {
  if (reinterpret_cast<std::uintptr_t>(bytes.data()) % kAlign != 0)
    return invalid_argument("region memory is not 64-byte aligned");
  if (bytes.size() < kHeaderSize)
    return corrupt("region of " + num(bytes.size()) + " bytes is smaller than its 64-byte header");
  Region r;
  r.bytes_ = bytes;
  r.keep_ = std::move(keep_alive);
  std::memcpy(&r.header_, bytes.data(), sizeof r.header_);
  const RegionHeader& h = r.header_;
  if (std::memcmp(h.magic, "KURA", 4) != 0) return corrupt("bad region magic (not a kura region)");
  if (h.version != kFormatVersion)
    return corrupt("unsupported format version " + num(h.version) + " (this reader knows version " +
                   num(kFormatVersion) + ")");
  // Hash the private copy: the shared bytes may change under us.
  if (region_header_hash(std::as_bytes(std::span(&r.header_, 1))) != h.header_hash)
    return corrupt("region header hash mismatch");
  if ((h.flags & kRegionSealed) == 0) return corrupt("region is not sealed (its writer did not finish)");
  if ((h.flags & ~kRegionKnownFlags) != 0) return corrupt("unknown region flags " + num(h.flags));
  if (h.region_size != bytes.size())
    return corrupt("region_size " + num(h.region_size) + " differs from the object's size " +
                   num(bytes.size()));
  if (!valid_header_offset(h.root_offset, bytes.size()))
    return corrupt("invalid root offset " + num(h.root_offset));
  if (h.node_count > bytes.size() / kHeaderSize)
    return corrupt("node_count " + num(h.node_count) + " is more than the region can hold");
  return r;
}

Result<NodeView> Region::root() const noexcept {
  return NodeView::open(bytes_, keep_, hashed(), header_.node_count, header_.root_offset, nullptr);
}

Result<NodeView> Region::at(std::span<const std::uint64_t> path) const noexcept {
  // One private header copy and one record of the ancestors serve the whole
  // walk, and each step checks what open() checks; only the node reached
  // becomes a view, so the keep-alive is referenced once per walk, not once
  // per step, and the success path builds no Status.
  NodeView n;
  n.region_ = bytes_;
  n.hashed_ = hashed();
  n.node_count_ = header_.node_count;
  std::uint64_t offset = header_.root_offset;
  unsigned depth = 0;
  Fault f = reach(bytes_, offset, n.ancestors_.data(), 0, n.h_);
  for (std::uint64_t index : path) {
    if (f != Fault::kNone) break;
    if (index == 0)
      return detail::no_throw([] { return Status(Code::kOutOfRange, "index 0 (indices are 1-based)"); });
    if (n.h_.kind != static_cast<std::uint8_t>(Kind::kList) || index > n.h_.length)
      return detail::no_throw([&] { return step_error(n.h_, index - 1); });
    const auto child = load<std::uint64_t>(bytes_, n.h_.data_offset + 8 * (index - 1));
    if (child == 0) return detail::no_throw([] { return corrupt("child offset is 0"); });
    if (depth < kMaxDepth) n.ancestors_[depth] = offset;  // past kMaxDepth, reach() stops the walk
    ++depth;
    offset = child;
    f = reach(bytes_, offset, n.ancestors_.data(), depth, n.h_);
  }
  if (f != Fault::kNone) return detail::no_throw([&] { return fault_status(f, n.h_, offset); });
  n.offset_ = offset;
  n.depth_ = depth;
  n.keep_ = keep_;
  return n;
}

Result<NodeView> NodeView::open(std::span<const std::byte> region, const std::shared_ptr<const void>& keep,
                                bool hashed, std::uint64_t node_count, std::uint64_t offset,
                                const NodeView* parent) noexcept {
  NodeView n;
  unsigned depth = 0;
  if (parent) {
    depth = parent->depth_ + 1;
    if (depth <= kMaxDepth) {  // deeper, reach() fails before it reads the ancestors
      std::copy_n(parent->ancestors_.begin(), parent->depth_, n.ancestors_.begin());
      n.ancestors_[parent->depth_] = parent->offset_;
    }
  }
  const Fault f = reach(region, offset, n.ancestors_.data(), depth, n.h_);
  if (f != Fault::kNone) return detail::no_throw([&] { return fault_status(f, n.h_, offset); });
  n.region_ = region;
  n.keep_ = keep;
  n.hashed_ = hashed;
  n.node_count_ = node_count;
  n.offset_ = offset;
  n.depth_ = depth;
  return n;
}

Result<NodeView> NodeView::open_linked(std::uint64_t offset, const char* link) const noexcept {
  if (offset == 0) return detail::no_throw([&] { return corrupt(std::string(link) + " offset is 0"); });
  return open(region_, keep_, hashed_, node_count_, offset, this);
}

Status NodeView::not_an_array_of(Dtype d) const noexcept {
  return detail::no_throw([&] {
    return invalid_argument("node is " + describe() + ", not an array of " + std::string(dtype_name(d)));
  });
}

std::string_view NodeView::tag() const noexcept {
  std::size_t n = 0;
  while (n < sizeof h_.tag && h_.tag[n] != 0) ++n;
  return {h_.tag, n};
}

std::span<const std::byte> NodeView::data() const noexcept {
  if (h_.data_size == 0) return {};
  return region_.subspan(h_.data_offset, h_.data_size);
}

std::string NodeView::describe() const {
  return describe_header(h_);
}

Result<StringRef> NodeView::string(std::uint64_t i) const noexcept {
  return detail::no_throw([&] { return string_impl(i); });
}

Result<StringRef> NodeView::string_impl(std::uint64_t i) const {
  if (kind() != Kind::kStrings) return invalid_argument("node is " + describe() + ", not strings");
  if (i >= length())
    return Status(Code::kOutOfRange, "string " + num(i + 1) + " past the end of " + describe());
  StringEntry e;
  std::memcpy(&e, region_.data() + h_.data_offset + 16 * i, sizeof e);
  if (e.nbytes < -1) return corrupt("string entry with nbytes " + num(static_cast<std::uint64_t>(e.nbytes)));
  if (e.encoding > 2) return corrupt("string entry with unknown encoding " + num(e.encoding));
  if (e.nbytes == -1) return StringRef{{}, static_cast<Encoding>(e.encoding), true};
  const std::uint64_t packed_start = align64(16 * length());
  const std::uint64_t packed_size = h_.data_size - packed_start;
  const auto nbytes = static_cast<std::uint64_t>(e.nbytes);
  if (e.offset > packed_size || nbytes + 1 > packed_size - e.offset)
    return corrupt("string entry " + num(i + 1) + " runs past the packed bytes");
  const char* p = reinterpret_cast<const char*>(region_.data() + h_.data_offset + packed_start + e.offset);
  if (p[nbytes] != '\0') return corrupt("string entry " + num(i + 1) + " is not zero-terminated");
  return StringRef{std::string_view(p, nbytes), static_cast<Encoding>(e.encoding), false};
}

Result<NodeView> NodeView::child(std::uint64_t i) const noexcept {
  if (kind() != Kind::kList || i >= length()) return detail::no_throw([&] { return step_error(h_, i); });
  return open_linked(load<std::uint64_t>(region_, h_.data_offset + 8 * i), "child");
}

Result<NodeView> NodeView::child(std::string_view name) const noexcept {
  return detail::no_throw([&]() -> Result<NodeView> {
    if (kind() != Kind::kList)
      return Status(Code::kNotAList, "cannot step into " + describe() + ": not a list");
    KURA_ASSIGN_OR_RETURN(auto names_node, names());
    if (!names_node)
      return Status(Code::kOutOfRange, "list has no names, so no element \"" + std::string(name) + "\"");
    for (std::uint64_t i = 0; i < names_node->length(); ++i) {
      KURA_ASSIGN_OR_RETURN(StringRef s, names_node->string(i));
      if (!s.na && s.bytes == name) return child(i);
    }
    return Status(Code::kOutOfRange, "no element named \"" + std::string(name) + "\"");
  });
}

Result<std::optional<NodeView>> NodeView::names() const noexcept {
  return detail::no_throw([&]() -> Result<std::optional<NodeView>> {
    if (h_.names_offset == 0) return std::optional<NodeView>();
    KURA_ASSIGN_OR_RETURN(NodeView n, open_linked(h_.names_offset, "names"));
    if (n.kind() != Kind::kStrings || n.length() != length())
      return corrupt("names of " + describe() + " at offset " + num(offset_) + " is " + n.describe());
    return std::optional<NodeView>(n);
  });
}

Result<std::optional<NodeView>> NodeView::attrs() const noexcept {
  return detail::no_throw([&]() -> Result<std::optional<NodeView>> {
    if (h_.attrs_offset == 0) return std::optional<NodeView>();
    KURA_ASSIGN_OR_RETURN(NodeView a, open_linked(h_.attrs_offset, "attrs"));
    if (a.kind() != Kind::kList || a.header().names_offset == 0 || a.header().attrs_offset != 0)
      return corrupt("attributes of the node at offset " + num(offset_) +
                     " are not a named list without attributes of its own");
    return std::optional<NodeView>(a);
  });
}

Result<std::optional<NodeView>> NodeView::attr(std::string_view key) const noexcept {
  return detail::no_throw([&]() -> Result<std::optional<NodeView>> {
    KURA_ASSIGN_OR_RETURN(auto a, attrs());
    if (!a) return std::optional<NodeView>();
    KURA_ASSIGN_OR_RETURN(auto keys, a->names());
    if (!keys) return corrupt("attribute list without keys");
    for (std::uint64_t i = 0; i < keys->length(); ++i) {
      KURA_ASSIGN_OR_RETURN(StringRef s, keys->string(i));
      if (!s.na && s.bytes == key) {
        KURA_ASSIGN_OR_RETURN(NodeView v, a->child(i));
        return std::optional<NodeView>(v);
      }
    }
    return std::optional<NodeView>();
  });
}

Status WalkBudget::take(const NodeView& n) noexcept {
  const std::uint64_t cost = kHeaderSize + align64(n.header().data_size);
  if (nodes_ == 0 || cost > bytes_)
    return detail::no_throw([&] {
      return corrupt(
          "the value reaches more nodes or bytes than the region holds (a shared link) at offset " +
          num(n.offset()));
    });
  --nodes_;
  bytes_ -= cost;
  return Status::ok();
}

Status WalkBudget::take_text(std::uint64_t bytes) noexcept {
  if (bytes > text_)
    return detail::no_throw([] {
      return corrupt(
          "the value's strings hold more bytes than the region (string entries that share their bytes)");
    });
  text_ -= bytes;
  return Status::ok();
}

Result<String> read_string(const NodeView& n, std::uint64_t i, WalkBudget& budget) noexcept {
  return detail::no_throw([&]() -> Result<String> {
    KURA_ASSIGN_OR_RETURN(StringRef s, n.string(i));
    if (s.na) return String::NA();
    KURA_RETURN_IF_ERROR(budget.take_text(s.bytes.size() + 1));
    return String{std::string(s.bytes), s.encoding, false};
  });
}

namespace {

struct Walker {
  const std::function<Status(const NodeView&)>& visit;
  WalkBudget budget;

  Status node(const NodeView& n) {
    KURA_RETURN_IF_ERROR(budget.take(n));
    KURA_RETURN_IF_ERROR(detail::call_callback("the walk visitor", visit, n));
    KURA_ASSIGN_OR_RETURN(auto names, n.names());
    if (names) KURA_RETURN_IF_ERROR(node(*names));
    KURA_ASSIGN_OR_RETURN(auto attrs, n.attrs());
    if (attrs) KURA_RETURN_IF_ERROR(node(*attrs));
    if (n.kind() == Kind::kList) {
      for (std::uint64_t i = 0; i < n.length(); ++i) {
        KURA_ASSIGN_OR_RETURN(NodeView c, n.child(i));
        KURA_RETURN_IF_ERROR(node(c));
      }
    }
    return Status::ok();
  }
};

struct Copier {
  WalkBudget budget;

  Result<std::vector<String>> strings(const NodeView& n) {
    KURA_RETURN_IF_ERROR(budget.take(n));
    std::vector<String> out;
    out.reserve(n.length());
    for (std::uint64_t i = 0; i < n.length(); ++i) {
      KURA_ASSIGN_OR_RETURN(String s, read_string(n, i, budget));
      out.push_back(std::move(s));
    }
    return out;
  }

  Result<Value> value(const NodeView& n) {
    if (n.kind() != Kind::kStrings) KURA_RETURN_IF_ERROR(budget.take(n));  // strings() takes its own
    Value v;
    v.kind = n.kind();
    v.dtype = n.dtype();
    v.length = n.length();
    switch (n.kind()) {
      case Kind::kNull: break;
      case Kind::kArray:
      case Kind::kBytes: {
        auto d = n.data();
        v.data.assign(d.begin(), d.end());
        v.tag = std::string(n.tag());
        break;
      }
      case Kind::kStrings: {
        KURA_ASSIGN_OR_RETURN(v.strings, strings(n));
        break;
      }
      case Kind::kList:
        v.children.reserve(n.length());
        for (std::uint64_t i = 0; i < n.length(); ++i) {
          KURA_ASSIGN_OR_RETURN(NodeView c, n.child(i));
          KURA_ASSIGN_OR_RETURN(Value cv, value(c));
          v.children.push_back(std::move(cv));
        }
        break;
    }
    KURA_ASSIGN_OR_RETURN(auto names, n.names());
    if (names) {
      KURA_ASSIGN_OR_RETURN(v.names, strings(*names));
    }
    KURA_ASSIGN_OR_RETURN(auto attrs, n.attrs());
    if (attrs) {
      KURA_RETURN_IF_ERROR(budget.take(*attrs));
      KURA_ASSIGN_OR_RETURN(auto keys_node, attrs->names());
      KURA_ASSIGN_OR_RETURN(std::vector<String> keys, strings(*keys_node));
      for (std::uint64_t i = 0; i < attrs->length(); ++i) {
        if (keys[i].na) return corrupt("attribute key is NA");
        KURA_ASSIGN_OR_RETURN(NodeView c, attrs->child(i));
        KURA_ASSIGN_OR_RETURN(Value cv, value(c));
        v.attrs.emplace_back(std::move(keys[i].bytes), std::move(cv));
      }
    }
    return v;
  }
};

}  // namespace

Status walk(const NodeView& node, const std::function<Status(const NodeView&)>& visit) noexcept {
  return detail::no_throw([&] {
    Walker w{visit, WalkBudget(node)};
    return w.node(node);
  });
}

Result<Value> to_value(const NodeView& node) noexcept {
  return detail::no_throw([&] {
    Copier c{WalkBudget(node)};
    return c.value(node);
  });
}

}  // namespace kura
