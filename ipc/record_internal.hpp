// Internal to kura_ipc: how a message payload is written and read. A payload
// is a kura image whose root is a record: a list whose i-th child is named
// after its i-th field (message_internal.hpp). Shared by message.cpp and
// object_message.cpp.
#pragma once

#include <initializer_list>
#include <memory>
#include <new>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "kura/core/builder.hpp"
#include "kura/core/status.hpp"
#include "kura/core/value.hpp"
#include "kura/core/view.hpp"

namespace kura::ipc::detail {

inline Value u64_of(std::uint64_t x) {
  return Value::array<Dtype::kU64>({x});
}
inline Value i64_of(std::int64_t x) {
  return Value::array<Dtype::kI64>({x});
}
inline Value u32_of(std::uint32_t x) {
  return Value::array<Dtype::kU32>({x});
}
inline Value string_of(std::string_view s) {
  return Value::strings_of({String{std::string(s), Encoding::kUtf8, false}});
}

// A list whose elements are named by `keys`.
inline Value record(std::vector<std::pair<const char*, Value>> fields) {
  std::vector<Value> children;
  std::vector<String> names;
  children.reserve(fields.size());
  names.reserve(fields.size());
  for (auto& [key, value] : fields) {
    children.push_back(std::move(value));
    names.push_back(String{key, Encoding::kUtf8, false});
  }
  return Value::list(std::move(children)).with_names(std::move(names));
}

// Messages are small and read once: no node hashes.
inline Result<Bytes> image_of(const Value& v) noexcept {
  return build(v, Stamp{}, /*hashed=*/false);
}

inline Status bad(const char* message, std::string_view what) {
  return corrupt(std::string(message) + ": " + std::string(what));
}

// The fields of a message image: a list whose i-th child is named keys[i],
// exactly the fields the encoder writes, in its order (reading them by
// position costs one name comparison each, not a search).
class Record {
 public:
  static Result<Record> open(std::span<const std::byte> payload, std::shared_ptr<const void> keep,
                             const char* message, std::initializer_list<std::string_view> keys) {
    auto region = Region::open(payload, std::move(keep));
    if (!region) return bad(message, region.status().message());
    auto root = region->root();
    if (!root) return bad(message, root.status().message());
    if (root->kind() != Kind::kList || root->length() != keys.size())
      return bad(message, "not a record of its fields");
    auto names = root->names();
    if (!names) return bad(message, names.status().message());
    if (!*names) return bad(message, "a record without field names");
    Record r;
    r.message_ = message;
    r.fields_.reserve(keys.size());
    std::size_t i = 0;
    for (std::string_view key : keys) {
      auto name = (*names)->string(i);
      if (!name) return bad(message, name.status().message());
      if (name->na || name->bytes != key)
        return bad(message, "field " + std::to_string(i + 1) + " is not \"" + std::string(key) + "\"");
      auto child = root->child(i);
      if (!child) return bad(message, child.status().message());
      r.fields_.push_back(std::move(child).value());
      ++i;
    }
    return r;
  }
  const NodeView& operator[](std::size_t i) const { return fields_[i]; }
  const char* message() const { return message_; }

 private:
  const char* message_ = "";
  std::vector<NodeView> fields_;
};

template <Dtype D>
Result<typename DtypeTraits<D>::type> scalar(const NodeView& n, const char* message, std::string_view key) {
  auto xs = n.array<D>();
  if (!xs || xs->size() != 1)
    return bad(message, "field \"" + std::string(key) + "\" is " + n.describe() + ", not one " +
                            std::string(dtype_name(D)));
  return (*xs)[0];
}

inline Result<std::string> text(const NodeView& n, const char* message, std::string_view key) {
  if (n.kind() != Kind::kStrings || n.length() != 1)
    return bad(message, "field \"" + std::string(key) + "\" is " + n.describe() + ", not one string");
  auto s = n.string(0);
  if (!s) return bad(message, s.status().message());
  if (s->na || s->encoding != Encoding::kUtf8)
    return bad(message, "field \"" + std::string(key) + "\" is NA or not UTF-8");
  return std::string(s->bytes);
}

inline Result<bool> flag(const NodeView& n, const char* message, std::string_view key) {
  KURA_ASSIGN_OR_RETURN(std::int32_t v, scalar<Dtype::kLgl>(n, message, key));
  if (v != 0 && v != 1) return bad(message, "field \"" + std::string(key) + "\" is not true or false");
  return v == 1;
}

template <class F>
auto guard(F&& f) noexcept -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::exception& e) {
    return Status(Code::kIo, e.what());
  }
}

}  // namespace kura::ipc::detail
