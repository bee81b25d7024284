#include "kura/core/builder.hpp"

#include <algorithm>
#include <atomic>
#include <cstring>
#include <limits>
#include <set>
#include <string>

#include "hash_internal.hpp"
#include "kura/core/hash.hpp"
#include "no_throw_internal.hpp"

namespace kura {
namespace {

// Regions larger than this are refused, which keeps every sum below free of
// overflow.
constexpr std::uint64_t kMaxRegionSize = std::uint64_t{1} << 62;

bool mul_overflows(std::uint64_t a, std::uint64_t b, std::uint64_t& out) {
  return __builtin_mul_overflow(a, b, &out);
}

// FORMAT.md 4.4 and 5.2: a tag is up to 8 printable ASCII characters
// (0x21-0x7E), on bytes nodes only.
Status check_tag(const Value& v) {
  if (v.tag.empty()) return Status::ok();
  if (v.kind != Kind::kBytes) return invalid_argument("only bytes nodes carry a tag");
  if (v.tag.size() > 8)
    return invalid_argument("the bytes tag \"" + v.tag + "\" is longer than 8 characters");
  for (char c : v.tag)
    if (c < 0x21 || c > 0x7E)
      return invalid_argument("a bytes tag holds only printable ASCII characters (0x21-0x7E), not byte " +
                              std::to_string(static_cast<unsigned char>(c)));
  return Status::ok();
}

// The data size of a strings node holding `xs`.
Status strings_size(const std::vector<String>& xs, std::uint64_t& out) {
  if (xs.empty()) {
    out = 0;
    return Status::ok();
  }
  for (const String& s : xs)
    if (static_cast<std::uint8_t>(s.encoding) > static_cast<std::uint8_t>(Encoding::kBytes))
      return invalid_argument("a string has unknown encoding " +
                              std::to_string(static_cast<int>(s.encoding)));
  std::uint64_t size = align64(16 * static_cast<std::uint64_t>(xs.size()));
  for (const String& s : xs) {
    if (s.na) continue;
    if (s.bytes.size() > static_cast<std::size_t>(std::numeric_limits<std::int32_t>::max()))
      return invalid_argument("a string is longer than 2^31-1 bytes");
    size += s.bytes.size() + 1;
    if (size > kMaxRegionSize) return invalid_argument("strings too large for a region (over 2^62 bytes)");
  }
  out = size;
  return Status::ok();
}

}  // namespace

struct Planner {
  Layout& out;
  std::uint64_t cursor = kHeaderSize;

  Status alloc(std::uint64_t n, std::uint64_t& offset) {
    if (n > kMaxRegionSize || cursor > kMaxRegionSize - align64(n))
      return invalid_argument("value too large for a region (over 2^62 bytes)");
    offset = cursor;
    cursor += align64(n);
    return Status::ok();
  }

  static Status check_depth(unsigned depth) {
    if (depth > kMaxDepth)
      return invalid_argument("value nested deeper than " + std::to_string(kMaxDepth) +
                              " links (names and attributes count as links)");
    return Status::ok();
  }

  Status place_strings(const std::vector<String>& names, unsigned depth, std::uint64_t& offset) {
    KURA_RETURN_IF_ERROR(check_depth(depth));
    Layout::Slot slot;
    slot.kind = Kind::kStrings;
    slot.length = names.size();
    slot.strings = &names;
    KURA_RETURN_IF_ERROR(alloc(kHeaderSize, slot.offset));
    KURA_RETURN_IF_ERROR(strings_size(names, slot.data_size));
    if (slot.data_size) KURA_RETURN_IF_ERROR(alloc(slot.data_size, slot.data_offset));
    offset = slot.offset;
    out.nodes_.push_back(std::move(slot));
    return Status::ok();
  }

  Status place_attrs(const Value& owner, unsigned depth, std::uint64_t& offset) {
    KURA_RETURN_IF_ERROR(check_depth(depth));
    std::set<std::string_view> keys;
    auto& key_strings = *out.attr_keys_.emplace_back(std::make_unique<std::vector<String>>());
    for (const auto& [key, value] : owner.attrs) {
      if (key.empty()) return invalid_argument("an attribute key is empty");
      if (!keys.insert(key).second) return invalid_argument("duplicate attribute key \"" + key + "\"");
      key_strings.push_back(String{key, Encoding::kUtf8, false});
    }
    std::size_t idx = out.nodes_.size();
    {
      Layout::Slot slot;
      slot.kind = Kind::kList;
      slot.length = owner.attrs.size();
      slot.attrs_of = &owner;
      KURA_RETURN_IF_ERROR(alloc(kHeaderSize, slot.offset));
      slot.data_size = 8 * slot.length;
      KURA_RETURN_IF_ERROR(alloc(slot.data_size, slot.data_offset));
      offset = slot.offset;
      out.nodes_.push_back(std::move(slot));
    }
    std::uint64_t names_offset = 0;
    KURA_RETURN_IF_ERROR(place_strings(key_strings, depth + 1, names_offset));
    out.nodes_[idx].names_offset = names_offset;
    std::vector<std::uint64_t> children;
    for (const auto& kv : owner.attrs) {
      std::uint64_t child = 0;
      KURA_RETURN_IF_ERROR(place_value(kv.second, depth + 1, child));
      children.push_back(child);
    }
    out.nodes_[idx].children = std::move(children);
    return Status::ok();
  }

  Status place_value(const Value& v, unsigned depth, std::uint64_t& offset) {
    KURA_RETURN_IF_ERROR(check_depth(depth));
    KURA_RETURN_IF_ERROR(check_tag(v));
    Layout::Slot slot;
    slot.kind = v.kind;
    slot.value = &v;
    switch (v.kind) {
      case Kind::kNull:
        if (v.length != 0) return invalid_argument("a null node has length 0");
        break;
      case Kind::kArray:
      case Kind::kBytes: {
        std::size_t width = v.kind == Kind::kBytes ? 1 : dtype_width(v.dtype);
        if (v.kind == Kind::kArray && (v.dtype == Dtype::kNone || width == 0))
          return invalid_argument("array with unknown dtype " + std::to_string(static_cast<int>(v.dtype)));
        if (v.kind == Kind::kBytes && v.dtype != Dtype::kNone)
          return invalid_argument("a bytes node has no dtype");
        slot.length = v.length;
        if (mul_overflows(v.length, width, slot.data_size) || slot.data_size > kMaxRegionSize)
          return invalid_argument("array too large for a region (over 2^62 bytes)");
        if (v.source == Source::kOwned && v.data.size() != slot.data_size)
          return invalid_argument("payload of " + std::to_string(v.data.size()) +
                                  " bytes does not match length " + std::to_string(v.length) + " of " +
                                  std::string(v.kind == Kind::kBytes ? "bytes" : dtype_name(v.dtype)));
        if (v.source == Source::kBorrowed && v.borrowed == nullptr && v.length != 0)
          return invalid_argument("borrowed array with a null pointer");
        break;
      }
      case Kind::kStrings:
        if (v.length != v.strings.size())
          return invalid_argument("strings node length does not match its strings");
        slot.length = v.strings.size();
        KURA_RETURN_IF_ERROR(strings_size(v.strings, slot.data_size));
        break;
      case Kind::kList:
        if (v.length != v.children.size())
          return invalid_argument("list node length does not match its children");
        slot.length = v.children.size();
        slot.data_size = 8 * slot.length;
        break;
      default: return invalid_argument("unknown node kind " + std::to_string(static_cast<int>(v.kind)));
    }
    if (v.kind != Kind::kArray && v.dtype != Dtype::kNone)
      return invalid_argument("only arrays have a dtype");
    if (v.names && v.names->size() != slot.length)
      return invalid_argument("names has " + std::to_string(v.names->size()) +
                              " entries for a value of length " + std::to_string(slot.length));
    KURA_RETURN_IF_ERROR(alloc(kHeaderSize, slot.offset));
    if (slot.data_size) KURA_RETURN_IF_ERROR(alloc(slot.data_size, slot.data_offset));
    offset = slot.offset;
    std::size_t idx = out.nodes_.size();
    out.nodes_.push_back(std::move(slot));
    if (v.names) {
      std::uint64_t o = 0;
      KURA_RETURN_IF_ERROR(place_strings(*v.names, depth + 1, o));
      out.nodes_[idx].names_offset = o;
    }
    if (!v.attrs.empty()) {
      std::uint64_t o = 0;
      KURA_RETURN_IF_ERROR(place_attrs(v, depth + 1, o));
      out.nodes_[idx].attrs_offset = o;
    }
    if (v.kind == Kind::kList) {
      std::vector<std::uint64_t> children;
      children.reserve(v.children.size());
      for (const Value& c : v.children) {
        std::uint64_t o = 0;
        KURA_RETURN_IF_ERROR(place_value(c, depth + 1, o));
        children.push_back(o);
      }
      out.nodes_[idx].children = std::move(children);
    }
    return Status::ok();
  }
};

Result<Layout> Layout::plan(const Value& root) noexcept {
  return detail::no_throw([&]() -> Result<Layout> {
    Layout layout;
    Planner p{layout};
    std::uint64_t root_offset = 0;
    KURA_RETURN_IF_ERROR(p.place_value(root, 0, root_offset));
    layout.size_ = p.cursor;
    return layout;
  });
}

namespace {

void put_header(std::byte* at, const NodeHeader& h) {
  std::memcpy(at, &h, sizeof h);
}

void write_strings(std::byte* block, const std::vector<String>& xs) {
  std::byte* packed = block + align64(16 * static_cast<std::uint64_t>(xs.size()));
  std::uint64_t pos = 0;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    StringEntry e{};
    if (xs[i].na) {
      e.nbytes = -1;
    } else {
      e.offset = pos;
      e.nbytes = static_cast<std::int32_t>(xs[i].bytes.size());
      e.encoding = static_cast<std::uint8_t>(xs[i].encoding);
      std::memcpy(packed + pos, xs[i].bytes.data(), xs[i].bytes.size());
      packed[pos + xs[i].bytes.size()] = std::byte{0};
      pos += xs[i].bytes.size() + 1;
    }
    std::memcpy(block + 16 * i, &e, sizeof e);
  }
  std::byte* entries_end = block + 16 * xs.size();
  std::memset(entries_end, 0, static_cast<std::size_t>(packed - entries_end));
}

}  // namespace

Result<Writer> Writer::write(const Layout& layout, std::span<std::byte> dest, const Stamp& stamp,
                             const WriteOptions& options) noexcept {
  return detail::no_throw([&] { return write_impl(layout, dest, stamp, options); });
}

Result<Writer> Writer::write_impl(const Layout& layout, std::span<std::byte> dest, const Stamp& stamp,
                                  const WriteOptions& options) {
  if (dest.size() != layout.size())
    return invalid_argument("destination is " + std::to_string(dest.size()) + " bytes, layout needs " +
                            std::to_string(layout.size()));
  if (reinterpret_cast<std::uintptr_t>(dest.data()) % kAlign != 0)
    return invalid_argument("destination is not 64-byte aligned");
  if (layout.nodes_.empty()) return invalid_argument("the layout is empty (not made by Layout::plan)");
  std::byte* base = dest.data();
  Writer writer(&layout, dest);
  if (options.hash_copies) {
    writer.copy_hashes_.assign(layout.nodes_.size(), 0);
    writer.copy_hashed_.assign(layout.nodes_.size(), false);
  }

  RegionHeader rh{};
  std::memcpy(rh.magic, "KURA", 4);
  rh.version = kFormatVersion;
  rh.flags = 0;
  rh.region_size = layout.size();
  rh.root_offset = layout.nodes_.front().offset;
  rh.node_count = layout.nodes_.size();
  rh.created_ns = stamp.created_ns;
  rh.creator_pid = stamp.creator_pid;
  std::memcpy(base, &rh, sizeof rh);

  for (std::size_t i = 0; i < layout.nodes_.size(); ++i) {
    const Layout::Slot& s = layout.nodes_[i];
    NodeHeader h{};
    std::memcpy(h.magic, "KNOD", 4);
    h.kind = static_cast<std::uint8_t>(s.kind);
    h.length = s.length;
    h.data_offset = s.data_offset;
    h.data_size = s.data_size;
    h.names_offset = s.names_offset;
    h.attrs_offset = s.attrs_offset;
    if (s.value) {
      h.dtype = static_cast<std::uint8_t>(s.value->dtype);
      std::memcpy(h.tag, s.value->tag.data(), s.value->tag.size());  // checked: at most 8
    }
    put_header(base + s.offset, h);
    if (s.data_size == 0) continue;
    std::byte* block = base + s.data_offset;
    std::uint64_t padded = align64(s.data_size);
    if (s.kind == Kind::kStrings) {
      write_strings(block, s.strings ? *s.strings : s.value->strings);
      writer.bytes_copied_ += s.data_size - align64(16 * s.length);
    } else if (s.kind == Kind::kList) {
      std::memcpy(block, s.children.data(), 8 * s.children.size());
    } else if (s.value->source != Source::kInPlace) {
      KURA_RETURN_IF_ERROR(writer.copy_payload(i, h, s.value->payload(), options));
    }
    std::memset(block + s.data_size, 0, padded - s.data_size);
  }
  return writer;
}

Status Writer::copy_payload(std::size_t slot, const NodeHeader& header, std::span<const std::byte> payload,
                            const WriteOptions& options) {
  // Chunks small enough to stay in cache between the copy and the hash.
  constexpr std::size_t kChunk = std::size_t{1} << 20;
  const Layout::Slot& s = layout_->nodes_[slot];
  detail::Xxh3State state;
  if (options.hash_copies) node_hash_begin(state, header);
  for (std::size_t done = 0; done < payload.size(); done += kChunk) {
    auto chunk = payload.subspan(done, std::min(kChunk, payload.size() - done));
    if (options.copy) {
      KURA_RETURN_IF_ERROR(detail::call_callback("the copy hook", options.copy, s.data_offset + done, chunk));
    } else {
      std::memcpy(dest_.data() + s.data_offset + done, chunk.data(), chunk.size());
    }
    if (options.hash_copies) node_hash_update(state, chunk);
  }
  if (options.hash_copies) {
    copy_hashes_[slot] = node_hash_end(state);
    copy_hashed_[slot] = true;
  }
  bytes_copied_ += payload.size();
  return Status::ok();
}

std::span<std::byte> Writer::block(const Value& v) const noexcept {
  for (const Layout::Slot& s : layout_->nodes_) {
    if (s.value == &v) {
      KURA_CHECK((s.kind == Kind::kArray || s.kind == Kind::kBytes) && v.source == Source::kInPlace);
      if (s.data_size == 0) return {};
      return dest_.subspan(s.data_offset, s.data_size);
    }
  }
  KURA_CHECK(!"Writer::block: value is not part of this layout");
  return {};
}

void Writer::seal(bool hashed) noexcept {
  std::byte* base = dest_.data();
  if (hashed) {
    for (std::size_t i = 0; i < layout_->nodes_.size(); ++i) {
      const Layout::Slot& s = layout_->nodes_[i];
      if (i < copy_hashed_.size() && copy_hashed_[i]) {
        std::memcpy(base + s.offset + offsetof(NodeHeader, hash), &copy_hashes_[i], sizeof(std::uint64_t));
        continue;
      }
      std::span<const std::byte> header(base + s.offset, kHeaderSize);
      std::span<const std::byte> data;
      if (s.data_size) data = {base + s.data_offset, s.data_size};
      std::uint64_t h = node_hash(header, data);
      std::memcpy(base + s.offset + offsetof(NodeHeader, hash), &h, sizeof h);
    }
  }
  std::uint16_t flags = kRegionSealed | (hashed ? kRegionHashed : 0);
  std::byte header[kHeaderSize];
  std::memcpy(header, base, kHeaderSize);
  std::memcpy(header + offsetof(RegionHeader, flags), &flags, sizeof flags);
  std::uint64_t hh = region_header_hash(header);
  std::memcpy(base + offsetof(RegionHeader, header_hash), &hh, sizeof hh);
  // Everything else is in place: the flags, and with them `sealed`, go last.
  std::atomic_thread_fence(std::memory_order_release);
  std::memcpy(base + offsetof(RegionHeader, flags), &flags, sizeof flags);
}

Result<Bytes> build(const Value& root, const Stamp& stamp, bool hashed) noexcept {
  return detail::no_throw([&]() -> Result<Bytes> {
    KURA_ASSIGN_OR_RETURN(Layout layout, Layout::plan(root));
    Bytes out(layout.size());
    KURA_ASSIGN_OR_RETURN(Writer w, Writer::write(layout, out, stamp));
    w.seal(hashed);
    return out;
  });
}

}  // namespace kura
