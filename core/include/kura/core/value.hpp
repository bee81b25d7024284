// kura::Value: a value tree in ordinary memory, the input of the builder and
// the output of a deep copy out of a region.
//
// A Value is plain data: copyable, comparable (arrays compare bit for bit, so
// NaN payloads and NA count), not thread-safe for concurrent mutation.
#pragma once

#include <array>
#include <complex>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kura/core/layout.hpp"

namespace kura {

// One element of a strings node.
struct String {
  std::string bytes;
  Encoding encoding = Encoding::kUtf8;
  bool na = false;

  static String NA() { return String{{}, Encoding::kUtf8, true}; }
  bool operator==(const String&) const = default;
};

// The C++ type of each dtype's elements (FORMAT.md table 4.1).
template <Dtype D>
struct DtypeTraits;
template <>
struct DtypeTraits<Dtype::kU8> {
  using type = std::uint8_t;
};
template <>
struct DtypeTraits<Dtype::kI8> {
  using type = std::int8_t;
};
template <>
struct DtypeTraits<Dtype::kU16> {
  using type = std::uint16_t;
};
template <>
struct DtypeTraits<Dtype::kI16> {
  using type = std::int16_t;
};
template <>
struct DtypeTraits<Dtype::kU32> {
  using type = std::uint32_t;
};
template <>
struct DtypeTraits<Dtype::kI32> {
  using type = std::int32_t;
};
template <>
struct DtypeTraits<Dtype::kU64> {
  using type = std::uint64_t;
};
template <>
struct DtypeTraits<Dtype::kI64> {
  using type = std::int64_t;
};
template <>
struct DtypeTraits<Dtype::kF32> {
  using type = float;
};
template <>
struct DtypeTraits<Dtype::kF64> {
  using type = double;
};
template <>
struct DtypeTraits<Dtype::kC128> {
  using type = std::complex<double>;
};
template <>
struct DtypeTraits<Dtype::kLgl> {
  using type = std::int32_t;
};

// How an array's elements reach the region when it is built.
enum class Source : std::uint8_t {
  kOwned,     // `data` holds the bytes (one copy into the region)
  kBorrowed,  // `borrowed` points at the caller's bytes (one copy into the region)
  kInPlace,   // nothing yet: the caller fills the block inside the region (no copy)
};

struct Value {
  // Declared here and defaulted below the class: an implicit (or in-class
  // defaulted) constructor makes clang check, while Value is still
  // incomplete, whether the std::pair<std::string, Value> of `attrs` is
  // default-constructible, and reject the header.
  Value() noexcept;

  Kind kind = Kind::kNull;
  Dtype dtype = Dtype::kNone;                // arrays only
  std::uint64_t length = 0;                  // elements, strings, children or bytes
  Source source = Source::kOwned;            // arrays and bytes
  std::vector<std::byte> data;               // array elements or bytes, when kOwned
  const std::byte* borrowed = nullptr;       // when kBorrowed; must outlive the build
  std::vector<String> strings;               // strings nodes
  std::vector<Value> children;               // list nodes
  std::string tag;                           // bytes nodes: format tag, up to 8 printable ASCII characters
  std::optional<std::vector<String>> names;  // one per element, when present
  std::vector<std::pair<std::string, Value>> attrs;  // keys unique, in order

  // --- Factories --------------------------------------------------------
  static Value null() { return Value{}; }
  // An array of `d` copied from `bytes` (whose size must be a multiple of the
  // dtype's width; the builder rejects it otherwise).
  static Value array_bytes(Dtype d, std::span<const std::byte> bytes);
  // An array that the builder copies from the caller's buffer `p` of `length`
  // elements; `p` must stay valid until the region is written.
  static Value array_borrowed(Dtype d, const void* p, std::uint64_t length);
  // An array of `length` elements that the caller fills inside the
  // destination after Writer::write (Writer::array), with no copy at all.
  static Value array_in_place(Dtype d, std::uint64_t length);
  template <Dtype D>
  static Value array(std::span<const typename DtypeTraits<D>::type> xs) {
    return array_bytes(D, std::as_bytes(xs));
  }
  template <Dtype D>
  static Value array(std::initializer_list<typename DtypeTraits<D>::type> xs) {
    return array<D>(std::span<const typename DtypeTraits<D>::type>(xs.begin(), xs.size()));
  }
  static Value f64(std::initializer_list<double> xs) { return array<Dtype::kF64>(xs); }
  static Value i32(std::initializer_list<std::int32_t> xs) { return array<Dtype::kI32>(xs); }
  static Value strings_of(std::vector<String> xs);
  // UTF-8 strings, none NA.
  static Value strings_utf8(std::initializer_list<std::string_view> xs);
  static Value list(std::vector<Value> children);
  // A bytes node tagged `tag` (FORMAT.md 4.4: up to 8 characters 0x21-0x7E,
  // such as "rds3"; Layout::plan rejects any other tag).
  static Value bytes(std::string_view tag, std::span<const std::byte> bytes);
  // A bytes node of `length` bytes that the caller fills inside the
  // destination after Writer::write (Writer::block), with no copy at all.
  static Value bytes_in_place(std::string_view tag, std::uint64_t length);

  // --- Decoration (chainable) -------------------------------------------
  Value& with_names(std::vector<String> n) &;
  Value&& with_names(std::vector<String> n) && { return std::move(with_names(std::move(n))); }
  Value& with_attr(std::string key, Value v) &;
  Value&& with_attr(std::string key, Value v) && {
    return std::move(with_attr(std::move(key), std::move(v)));
  }

  // The element bytes of an array or bytes node (owned or borrowed; empty
  // for kInPlace).
  std::span<const std::byte> payload() const;

  // Structural equality; array and bytes payloads compare bit for bit, and
  // how a payload is held (owned, borrowed) does not matter.
  bool operator==(const Value& other) const;
};

inline Value::Value() noexcept = default;

}  // namespace kura
