// The builder: lays a Value out in the canonical order of FORMAT.md section 6
// inside a caller-provided byte span.
//
//   Value v = ...;
//   KURA_ASSIGN_OR_RETURN(Layout layout, Layout::plan(v));
//   std::vector<std::byte> buf(layout.size());          // or a new region
//   KURA_ASSIGN_OR_RETURN(Writer w, Writer::write(layout, buf, stamp));
//   auto xs = w.array<double>(v.children[0]);            // fill in place
//   w.seal(/*hashed=*/true);
//
// Core makes no system calls: the caller supplies the memory, the creation
// time and the process id. Layout and Writer keep pointers into the Value
// tree they were given; the tree must outlive them and not change meanwhile.
#pragma once

#include <cstddef>
#include <cstdint>
#include <functional>
#include <memory>
#include <span>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/core/layout.hpp"
#include "kura/core/status.hpp"
#include "kura/core/value.hpp"

namespace kura {

// Where each node of a value goes. Computing it touches every node of the
// Value tree but none of the array data. Move-only, and must neither move nor
// die while a Writer made from it is in use.
class Layout {
 public:
  Layout() = default;  // empty: only plan() makes a layout Writer accepts
  Layout(Layout&&) noexcept = default;
  Layout& operator=(Layout&&) noexcept = default;
  Layout(const Layout&) = delete;
  Layout& operator=(const Layout&) = delete;

  // Plans the layout of `root`. Errors: InvalidArgument for a value the
  // format cannot hold: a node deeper than 64 links (FORMAT.md section 4;
  // names and attribute lists count), an unknown kind, dtype or string
  // encoding, a dtype on a node that is not an array, a length that
  // disagrees with the payload (length * width bytes), the strings, the
  // children or the names, a null node of non-zero length, a borrowed array
  // with a null pointer, empty or duplicate attribute keys, a string longer
  // than 2^31-1 bytes, a tag longer than 8 characters or holding anything
  // but printable ASCII (0x21-0x7E), a tag on a node that is not bytes, or a
  // region larger than 2^62 bytes; OutOfMemory.
  static Result<Layout> plan(const Value& root) noexcept;

  // Exact size of the region in bytes (a multiple of 64).
  std::uint64_t size() const noexcept { return size_; }
  // Number of node headers, names and attribute nodes included.
  std::uint64_t node_count() const noexcept { return nodes_.size(); }

 private:
  friend class Writer;
  // One node header to write. Exactly one of `value`, `names` and `attrs_of`
  // says where its content comes from.
  struct Slot {
    std::uint64_t offset = 0;
    Kind kind = Kind::kNull;
    std::uint64_t length = 0;
    std::uint64_t data_offset = 0;
    std::uint64_t data_size = 0;
    std::uint64_t names_offset = 0;
    std::uint64_t attrs_offset = 0;
    const Value* value = nullptr;                  // a node of the tree
    const std::vector<String>* strings = nullptr;  // a names node
    const Value* attrs_of = nullptr;               // the attribute list of this value
    std::vector<std::uint64_t> children;           // list child offsets
  };
  std::vector<Slot> nodes_;  // in pre-order, nodes_[0] is the root
  // Names of attribute lists, each at a fixed address (slots point at them).
  // Not a std::deque: its move constructor allocates, and Layout's must not.
  std::vector<std::unique_ptr<std::vector<String>>> attr_keys_;
  std::uint64_t size_ = 0;
  friend struct Planner;
};

// What a region header records about its making.
struct Stamp {
  std::uint64_t created_ns = 0;
  std::uint32_t creator_pid = 0;
};

// How Writer::write places the payloads it copies.
struct WriteOptions {
  // Hash each copied array or bytes payload while it is being copied (from
  // the source, while it is in cache), so that seal(true) need not read it
  // again. Only worth it when the region will be sealed hashed.
  bool hash_copies = false;
  // When set, payloads of array and bytes nodes are handed to this function
  // (the offset in the region, the bytes) instead of being copied into the
  // destination span, in chunks; a non-ok status stops the write. The shm
  // layer writes them with pwrite(2), which spares a page fault per page of
  // the mapping.
  std::function<Status(std::uint64_t offset, std::span<const std::byte> bytes)> copy;
};

// Writes a planned value into memory and seals it. Move-only; borrows the
// destination span and the Value tree.
class Writer {
 public:
  // Writes every header, every copied payload and every padding byte of
  // `layout` into `dest`, which must be exactly layout.size() bytes and
  // 64-byte aligned (InvalidArgument otherwise). Blocks of kInPlace arrays are
  // left as they are for the caller to fill. The region is not sealed yet.
  // Errors: InvalidArgument, OutOfMemory, or what `options.copy` returned;
  // an exception thrown by `options.copy` stops the write and comes back as
  // OutOfMemory (std::bad_alloc) or InvalidArgument (anything else, with its
  // what()).
  static Result<Writer> write(const Layout& layout, std::span<std::byte> dest, const Stamp& stamp,
                              const WriteOptions& options = {}) noexcept;

  // The writable data block of `v`, an array or bytes node built with
  // Value::array_in_place or Value::bytes_in_place in the planned tree (by
  // identity). Aborts if `v` is not part of the layout or not built in place
  // (writing into a copied block would leave its hash stale).
  std::span<std::byte> block(const Value& v) const noexcept;
  // block(v) as elements of type T. Aborts unless sizeof(T) is the width of
  // v's dtype (1 for bytes).
  template <class T>
  std::span<T> array(const Value& v) const noexcept {
    KURA_CHECK(sizeof(T) == (v.kind == Kind::kBytes ? 1 : dtype_width(v.dtype)));
    auto b = block(v);
    return {reinterpret_cast<T*>(b.data()), b.size() / sizeof(T)};
  }

  // Payload bytes that write() copied from the Value tree: arrays and bytes
  // not built in place, and strings (0 when the value is only arrays built in
  // place).
  std::uint64_t bytes_copied() const noexcept { return bytes_copied_; }

  // Computes node hashes when `hashed` (reusing those computed while
  // copying), then the header hash, and sets the flags last. After this the
  // bytes are a complete region.
  void seal(bool hashed) noexcept;

 private:
  Writer(const Layout* layout, std::span<std::byte> dest) : layout_(layout), dest_(dest) {}
  static Result<Writer> write_impl(const Layout& layout, std::span<std::byte> dest, const Stamp& stamp,
                                   const WriteOptions& options);
  Status copy_payload(std::size_t slot, const NodeHeader& header, std::span<const std::byte> payload,
                      const WriteOptions& options);
  const Layout* layout_;
  std::span<std::byte> dest_;
  std::uint64_t bytes_copied_ = 0;
  // Per slot of the layout: the node hash computed while copying, if any.
  std::vector<std::uint64_t> copy_hashes_;
  std::vector<bool> copy_hashed_;
};

// Convenience: plans, writes and seals `root` into a new aligned buffer.
// Arrays built in place are left zero. Errors: as Layout::plan, and
// OutOfMemory when the buffer cannot be allocated.
Result<Bytes> build(const Value& root, const Stamp& stamp, bool hashed) noexcept;

}  // namespace kura
