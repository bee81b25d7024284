// Typed JSON's array and string elements, read into a node's data as the
// parser hands them over (the Reader of typed_json_reader_internal.hpp).
#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>

#include "typed_json_reader_internal.hpp"

namespace kura::tool::typed_json {
namespace {

double na_real() {
  double d;
  std::memcpy(&d, &kNaRealBits, sizeof d);
  return d;
}

}  // namespace

// Reads integer element `s` of an array of T; the path of a message is
// built only when there is one.
template <class T>
Status Reader::integer(Dtype d, const Scalar& s, const Frame& f, std::vector<std::byte>& data) {
  auto does_not_fit = [&](const std::string& x) {
    return bad(element_path(f, f.count), x + " does not fit in " + std::string(dtype_name(d)));
  };
  switch (s.type) {
    case Scalar::kUnsigned:
      if (s.unsigned_integer > static_cast<std::uint64_t>(std::numeric_limits<T>::max()))
        return does_not_fit(std::to_string(s.unsigned_integer));
      append(data, static_cast<T>(s.unsigned_integer));
      return Status::ok();
    case Scalar::kInteger:
      if constexpr (std::is_unsigned_v<T>) {
        return does_not_fit(std::to_string(s.integer));
      } else {
        if (s.integer < static_cast<std::int64_t>(std::numeric_limits<T>::min()) ||
            s.integer > static_cast<std::int64_t>(std::numeric_limits<T>::max()))
          return does_not_fit(std::to_string(s.integer));
        append(data, static_cast<T>(s.integer));
        return Status::ok();
      }
    case Scalar::kNull:
      return bad(element_path(f, f.count),
                 "null (NA) is not allowed in an " + std::string(dtype_name(d)) +
                     " array (integer dtypes have no NA; R's NA_integer_ is -2147483648 in i32)");
    default: return bad(element_path(f, f.count), expected_element(d) + ", found " + type_of(s));
  }
}

Result<double> Reader::floating(Dtype d, const Scalar& s, const Frame& f, bool allow_null) {
  switch (s.type) {
    case Scalar::kFloat: return s.floating;
    case Scalar::kInteger: return static_cast<double>(s.integer);
    case Scalar::kUnsigned: return static_cast<double>(s.unsigned_integer);
    case Scalar::kString: {
      const std::string& t = *s.text;
      if (t == "NaN") return std::numeric_limits<double>::quiet_NaN();
      if (t == "Inf") return std::numeric_limits<double>::infinity();
      if (t == "-Inf") return -std::numeric_limits<double>::infinity();
      return bad(element_path(f, f.count),
                 "the string \"" + t + "\" is not a number; expected a number, \"NaN\", \"Inf\" or \"-Inf\"");
    }
    case Scalar::kNull:
      if (allow_null) return na_real();
      return bad(element_path(f, f.count), "null (NA) is not allowed in an " + std::string(dtype_name(d)) +
                                               " array (only f64 and c128 have NA)");
    case Scalar::kBoolean: break;
  }
  return bad(element_path(f, f.count),
             "expected a number for " + std::string(dtype_name(d)) + ", found " + type_of(s));
}

Status Reader::array_element(Frame& f, const Scalar& s) {
  Frame& n = node_of(f);
  std::vector<std::byte>& data = n.value.data;
  const Dtype d = n.value.dtype;
  switch (d) {
    case Dtype::kU8: return integer<std::uint8_t>(d, s, f, data);
    case Dtype::kI8: return integer<std::int8_t>(d, s, f, data);
    case Dtype::kU16: return integer<std::uint16_t>(d, s, f, data);
    case Dtype::kI16: return integer<std::int16_t>(d, s, f, data);
    case Dtype::kU32: return integer<std::uint32_t>(d, s, f, data);
    case Dtype::kI32: return integer<std::int32_t>(d, s, f, data);
    case Dtype::kU64: return integer<std::uint64_t>(d, s, f, data);
    case Dtype::kI64: return integer<std::int64_t>(d, s, f, data);
    case Dtype::kF32: {
      KURA_ASSIGN_OR_RETURN(double x, floating(d, s, f, false));
      const float narrowed = static_cast<float>(x);
      if (std::isfinite(x) && !std::isfinite(narrowed))
        return bad(element_path(f, f.count), format_f64(x) + " does not fit in f32");
      append(data, narrowed);
      return Status::ok();
    }
    case Dtype::kF64: {
      KURA_ASSIGN_OR_RETURN(double x, floating(d, s, f, true));
      append(data, x);
      return Status::ok();
    }
    case Dtype::kC128:
      return bad(element_path(f, f.count),
                 "expected a [re, im] pair for c128, found " + std::string(type_of(s)));
    case Dtype::kLgl:
      if (s.type == Scalar::kBoolean) {
        append(data, std::int32_t{s.boolean ? 1 : 0});
        return Status::ok();
      }
      if (s.type == Scalar::kNull) {
        append(data, kNaInt);
        return Status::ok();
      }
      return bad(element_path(f, f.count), expected_element(d) + ", found " + type_of(s));
    case Dtype::kNone: break;
  }
  return bad(element_path(f, f.count), "unknown dtype");
}

Status Reader::string_element(Frame& f, const Scalar& s) {
  Frame& n = node_of(f);
  auto& target = f.into_names ? *n.names : n.value.strings;
  if (s.type == Scalar::kNull) {
    target.push_back(String::NA());
    return Status::ok();
  }
  if (s.type == Scalar::kString) {
    target.push_back(String{std::move(*s.text), Encoding::kUtf8, false});
    return Status::ok();
  }
  return bad(element_path(f, f.count),
             std::string("expected a string, null, {\"latin1\": base64} or {\"bytes\": base64}, found ") +
                 type_of(s));
}

}  // namespace kura::tool::typed_json
