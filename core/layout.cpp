#include "kura/core/layout.hpp"

#include <array>

namespace kura {
namespace {

struct DtypeInfo {
  std::string_view name;
  std::size_t width;
};

constexpr std::array<DtypeInfo, kMaxDtype + 1> kDtypes = {{
    {"none", 0},
    {"u8", 1},
    {"i8", 1},
    {"u16", 2},
    {"i16", 2},
    {"u32", 4},
    {"i32", 4},
    {"u64", 8},
    {"i64", 8},
    {"f32", 4},
    {"f64", 8},
    {"c128", 16},
    {"lgl", 4},
}};

}  // namespace

std::size_t dtype_width(Dtype d) noexcept {
  auto i = static_cast<std::size_t>(d);
  return i < kDtypes.size() ? kDtypes[i].width : 0;
}

std::string_view dtype_name(Dtype d) noexcept {
  auto i = static_cast<std::size_t>(d);
  return i < kDtypes.size() ? kDtypes[i].name : "?";
}

std::optional<Dtype> dtype_from_name(std::string_view name) noexcept {
  for (std::size_t i = 1; i < kDtypes.size(); ++i)
    if (kDtypes[i].name == name) return static_cast<Dtype>(i);
  return std::nullopt;
}

std::string_view kind_name(Kind k) noexcept {
  switch (k) {
    case Kind::kNull: return "null";
    case Kind::kArray: return "array";
    case Kind::kStrings: return "strings";
    case Kind::kList: return "list";
    case Kind::kBytes: return "bytes";
  }
  return "?";
}

}  // namespace kura
