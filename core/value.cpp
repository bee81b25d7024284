#include "kura/core/value.hpp"

#include <algorithm>

namespace kura {

Value Value::array_bytes(Dtype d, std::span<const std::byte> bytes) {
  Value v;
  v.kind = Kind::kArray;
  v.dtype = d;
  std::size_t w = dtype_width(d);
  v.length = w ? bytes.size() / w : 0;
  v.data.assign(bytes.begin(), bytes.end());
  return v;
}

Value Value::array_borrowed(Dtype d, const void* p, std::uint64_t length) {
  Value v;
  v.kind = Kind::kArray;
  v.dtype = d;
  v.length = length;
  v.source = Source::kBorrowed;
  v.borrowed = static_cast<const std::byte*>(p);
  return v;
}

Value Value::array_in_place(Dtype d, std::uint64_t length) {
  Value v;
  v.kind = Kind::kArray;
  v.dtype = d;
  v.length = length;
  v.source = Source::kInPlace;
  return v;
}

Value Value::strings_of(std::vector<String> xs) {
  Value v;
  v.kind = Kind::kStrings;
  v.length = xs.size();
  v.strings = std::move(xs);
  return v;
}

Value Value::strings_utf8(std::initializer_list<std::string_view> xs) {
  std::vector<String> s;
  s.reserve(xs.size());
  for (auto x : xs) s.push_back(String{std::string(x), Encoding::kUtf8, false});
  return strings_of(std::move(s));
}

Value Value::list(std::vector<Value> children) {
  Value v;
  v.kind = Kind::kList;
  v.length = children.size();
  v.children = std::move(children);
  return v;
}

Value Value::bytes(std::string_view tag, std::span<const std::byte> bytes) {
  Value v;
  v.kind = Kind::kBytes;
  v.length = bytes.size();
  v.data.assign(bytes.begin(), bytes.end());
  v.tag = std::string(tag);
  return v;
}

Value Value::bytes_in_place(std::string_view tag, std::uint64_t length) {
  Value v;
  v.kind = Kind::kBytes;
  v.length = length;
  v.source = Source::kInPlace;
  v.tag = std::string(tag);
  return v;
}

Value& Value::with_names(std::vector<String> n) & {
  names = std::move(n);
  return *this;
}

Value& Value::with_attr(std::string key, Value v) & {
  attrs.emplace_back(std::move(key), std::move(v));
  return *this;
}

std::span<const std::byte> Value::payload() const {
  if (kind != Kind::kArray && kind != Kind::kBytes) return {};
  switch (source) {
    case Source::kOwned: return data;
    case Source::kBorrowed:
      return {borrowed,
              static_cast<std::size_t>(length * dtype_width(kind == Kind::kArray ? dtype : Dtype::kU8))};
    case Source::kInPlace: return {};
  }
  return {};
}

bool Value::operator==(const Value& o) const {
  if (kind != o.kind || dtype != o.dtype || length != o.length || tag != o.tag || names != o.names ||
      attrs != o.attrs)
    return false;
  switch (kind) {
    case Kind::kNull: return true;
    case Kind::kArray:
    case Kind::kBytes: {
      auto a = payload(), b = o.payload();
      return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size()) == 0);
    }
    case Kind::kStrings: return strings == o.strings;
    case Kind::kList: return children == o.children;
  }
  return false;
}

}  // namespace kura
