#include "typed_json.hpp"

#include <charconv>
#include <cmath>
#include <cstring>
#include <limits>
#include <sstream>
#include <type_traits>

#include "kura/core/builder.hpp"
#include "kura/core/layout.hpp"

namespace kura::tool {

// --- Small pieces ------------------------------------------------------------

bool is_na_real(double x) noexcept {
  std::uint64_t bits;
  std::memcpy(&bits, &x, sizeof bits);
  return std::isnan(x) && (bits & 0xFFFFFFFFu) == 1954;
}

namespace {

std::string nonfinite(double x) {
  if (std::isnan(x)) return "NaN";
  return x > 0 ? "Inf" : "-Inf";
}

// Makes sure JSON reads `s` back as a float, not an integer ("-0" would read
// as the integer 0 and lose its sign).
void mark_float(std::string& s) {
  if (s.find_first_of(".eE") == std::string::npos) s += ".0";
}

}  // namespace

std::string format_f64(double x) {
  if (!std::isfinite(x)) return nonfinite(x);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  std::string s(buf, r.ptr);
  mark_float(s);
  return s;
}

std::string format_f32(float x) {
  if (!std::isfinite(x)) return nonfinite(x);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  std::string s(buf, r.ptr);
  // Readers parse a JSON number as a double and then narrow it to float.
  // The shortest float text almost always survives that double rounding;
  // when it does not, fall back to the exact double's text, which always does.
  double back = 0;
  auto pr = std::from_chars(s.data(), s.data() + s.size(), back);
  float narrowed = static_cast<float>(back);
  if (pr.ec != std::errc() || std::memcmp(&narrowed, &x, sizeof x) != 0)
    return format_f64(static_cast<double>(x));
  mark_float(s);
  return s;
}

namespace {
constexpr char kB64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::span<const std::byte> bytes) {
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 3 <= bytes.size(); i += 3) {
    std::uint32_t v = (std::to_integer<std::uint32_t>(bytes[i]) << 16) |
                      (std::to_integer<std::uint32_t>(bytes[i + 1]) << 8) |
                      std::to_integer<std::uint32_t>(bytes[i + 2]);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += kB64[v & 63];
  }
  std::size_t rest = bytes.size() - i;
  if (rest == 1) {
    std::uint32_t v = std::to_integer<std::uint32_t>(bytes[i]) << 16;
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += "==";
  } else if (rest == 2) {
    std::uint32_t v = (std::to_integer<std::uint32_t>(bytes[i]) << 16) |
                      (std::to_integer<std::uint32_t>(bytes[i + 1]) << 8);
    out += kB64[(v >> 18) & 63];
    out += kB64[(v >> 12) & 63];
    out += kB64[(v >> 6) & 63];
    out += '=';
  }
  return out;
}

Result<std::vector<std::byte>> base64_decode(std::string_view text) {
  if (text.size() % 4 != 0) return invalid_argument("base64 text has a length that is not a multiple of 4");
  auto sextet = [](char c) -> int {
    if (c >= 'A' && c <= 'Z') return c - 'A';
    if (c >= 'a' && c <= 'z') return c - 'a' + 26;
    if (c >= '0' && c <= '9') return c - '0' + 52;
    if (c == '+') return 62;
    if (c == '/') return 63;
    return -1;
  };
  std::vector<std::byte> out;
  out.reserve(text.size() / 4 * 3);
  for (std::size_t i = 0; i < text.size(); i += 4) {
    const bool last = i + 4 == text.size();
    int pad = 0;
    if (last && text[i + 3] == '=') pad = text[i + 2] == '=' ? 2 : 1;
    std::uint32_t v = 0;
    for (int k = 0; k < 4; ++k) {
      char c = text[i + k];
      int s = (k >= 4 - pad) ? 0 : sextet(c);
      if (s < 0)
        return invalid_argument("base64 text has an invalid character at position " +
                                std::to_string(i + k + 1));
      v = (v << 6) | static_cast<std::uint32_t>(s);
    }
    // Non-canonical padding bits are refused so that every byte string has one text.
    if ((pad == 1 && (v & 0xFF)) || (pad == 2 && (v & 0xFFFF)))
      return invalid_argument("base64 text has non-zero padding bits");
    out.push_back(static_cast<std::byte>(v >> 16));
    if (pad < 2) out.push_back(static_cast<std::byte>((v >> 8) & 0xFF));
    if (pad < 1) out.push_back(static_cast<std::byte>(v & 0xFF));
  }
  return out;
}

// --- Writing typed JSON ----------------------------------------------------------

namespace {

class Emitter {
 public:
  Emitter(std::ostream& out, const NodeView& start) : out_(out), budget_(start) {}
  Status node(const NodeView& n, unsigned indent);

 private:
  void newline(unsigned indent) {
    out_ << '\n';
    for (unsigned i = 0; i < indent; ++i) out_ << "  ";
  }
  Status array_values(const NodeView& n);
  Status string_values(const NodeView& n);
  void string_elem(const String& s);

  std::ostream& out_;
  WalkBudget budget_;
};

template <class T>
void put_int(std::ostream& out, T x) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  out.write(buf, r.ptr - buf);
}

void put_f64(std::ostream& out, double x) {
  if (is_na_real(x))
    out << "null";
  else if (!std::isfinite(x))
    out << '"' << format_f64(x) << '"';
  else
    out << format_f64(x);
}

void put_f32(std::ostream& out, float x) {
  if (!std::isfinite(x))
    out << '"' << format_f32(x) << '"';
  else
    out << format_f32(x);
}

template <Dtype D, class F>
Status each(const NodeView& n, F&& f) {
  auto xs = n.array<D>();
  if (!xs) return xs.status();
  bool first = true;
  for (const auto& x : *xs) {
    Status s = f(x, first);
    if (!s) return s;
    first = false;
  }
  return Status::ok();
}

Status Emitter::array_values(const NodeView& n) {
  auto sep = [&](bool first) {
    if (!first) out_ << ", ";
  };
  auto ints = [&](auto x, bool first) {
    sep(first);
    put_int(out_, x);
    return Status::ok();
  };
  switch (n.dtype()) {
    case Dtype::kU8: return each<Dtype::kU8>(n, ints);
    case Dtype::kI8: return each<Dtype::kI8>(n, ints);
    case Dtype::kU16: return each<Dtype::kU16>(n, ints);
    case Dtype::kI16: return each<Dtype::kI16>(n, ints);
    case Dtype::kU32: return each<Dtype::kU32>(n, ints);
    case Dtype::kI32: return each<Dtype::kI32>(n, ints);
    case Dtype::kU64: return each<Dtype::kU64>(n, ints);
    case Dtype::kI64: return each<Dtype::kI64>(n, ints);
    case Dtype::kF32:
      return each<Dtype::kF32>(n, [&](float x, bool first) {
        sep(first);
        put_f32(out_, x);
        return Status::ok();
      });
    case Dtype::kF64:
      return each<Dtype::kF64>(n, [&](double x, bool first) {
        sep(first);
        put_f64(out_, x);
        return Status::ok();
      });
    case Dtype::kC128:
      return each<Dtype::kC128>(n, [&](const std::complex<double>& x, bool first) {
        sep(first);
        out_ << '[';
        put_f64(out_, x.real());
        out_ << ", ";
        put_f64(out_, x.imag());
        out_ << ']';
        return Status::ok();
      });
    case Dtype::kLgl: {
      std::uint64_t i = 0;
      return each<Dtype::kLgl>(n, [&](std::int32_t x, bool first) {
        ++i;
        if (x != 0 && x != 1 && x != kNaInt)
          return corrupt("lgl element " + std::to_string(i) + " holds " + std::to_string(x) +
                         ", not 0, 1 or NA");
        sep(first);
        out_ << (x == kNaInt ? "null" : x ? "true" : "false");
        return Status::ok();
      });
    }
    case Dtype::kNone: break;
  }
  return corrupt("array of unknown dtype");
}

// `s` is a private copy (read_string): the bytes checked as UTF-8 are the
// bytes written.
void Emitter::string_elem(const String& s) {
  if (s.na) {
    out_ << "null";
  } else if (s.encoding == Encoding::kUtf8 && valid_utf8(s.bytes)) {
    out_ << json_quote(s.bytes);
  } else {
    out_ << (s.encoding == Encoding::kLatin1 ? "{\"latin1\": \"" : "{\"bytes\": \"")
         << base64_encode(std::as_bytes(std::span<const char>(s.bytes.data(), s.bytes.size()))) << "\"}";
  }
}

Status Emitter::string_values(const NodeView& n) {
  for (std::uint64_t i = 0; i < n.length(); ++i) {
    KURA_ASSIGN_OR_RETURN(String s, read_string(n, i, budget_));
    if (i) out_ << ", ";
    string_elem(s);
  }
  return Status::ok();
}

Status Emitter::node(const NodeView& n, unsigned indent) {
  KURA_RETURN_IF_ERROR(budget_.take(n));
  switch (n.kind()) {
    case Kind::kNull: out_ << "{\"type\": \"null\""; break;
    case Kind::kArray:
      out_ << "{\"type\": \"" << dtype_name(n.dtype()) << "\", \"values\": [";
      KURA_RETURN_IF_ERROR(array_values(n));
      out_ << ']';
      break;
    case Kind::kStrings:
      out_ << "{\"type\": \"strings\", \"values\": [";
      KURA_RETURN_IF_ERROR(string_values(n));
      out_ << ']';
      break;
    case Kind::kBytes: {
      out_ << "{\"type\": \"bytes\", \"tag\": " << json_quote(n.tag()) << ", \"base64\": \""
           << base64_encode(n.data()) << '"';
      break;
    }
    case Kind::kList:
      out_ << "{\"type\": \"list\", \"values\": [";
      for (std::uint64_t i = 0; i < n.length(); ++i) {
        KURA_ASSIGN_OR_RETURN(NodeView c, n.child(i));
        if (i) out_ << ',';
        newline(indent + 1);
        KURA_RETURN_IF_ERROR(node(c, indent + 1));
      }
      if (n.length()) newline(indent);
      out_ << ']';
      break;
  }
  KURA_ASSIGN_OR_RETURN(auto names, n.names());
  if (names) {
    KURA_RETURN_IF_ERROR(budget_.take(*names));
    out_ << ", \"names\": [";
    KURA_RETURN_IF_ERROR(string_values(*names));
    out_ << ']';
  }
  KURA_ASSIGN_OR_RETURN(auto attrs, n.attrs());
  if (attrs) {
    KURA_RETURN_IF_ERROR(budget_.take(*attrs));
    KURA_ASSIGN_OR_RETURN(auto keys, attrs->names());
    if (!keys) return corrupt("an attribute list without names");
    KURA_RETURN_IF_ERROR(budget_.take(*keys));
    out_ << ", \"attrs\": {";
    for (std::uint64_t i = 0; i < attrs->length(); ++i) {
      KURA_ASSIGN_OR_RETURN(String key, read_string(*keys, i, budget_));
      if (key.na || key.encoding != Encoding::kUtf8 || !valid_utf8(key.bytes))
        return invalid_argument("attribute key " + std::to_string(i + 1) +
                                " is NA or not valid UTF-8, which typed JSON cannot hold as a key");
      KURA_ASSIGN_OR_RETURN(NodeView a, attrs->child(i));
      if (i) out_ << ',';
      newline(indent + 1);
      out_ << json_quote(key.bytes) << ": ";
      KURA_RETURN_IF_ERROR(node(a, indent + 1));
    }
    if (attrs->length()) newline(indent);
    out_ << '}';
  }
  out_ << '}';
  return Status::ok();
}

}  // namespace

Status write_typed_json(const NodeView& node, std::ostream& out) noexcept {
  return guard_output("cannot write typed JSON", [&] {
    Emitter e(out, node);
    return e.node(node, 0);
  });
}

Result<std::string> to_typed_json(const Value& value) noexcept {
  KURA_ASSIGN_OR_RETURN(Bytes image, build(value, Stamp{}, /*hashed=*/true));
  KURA_ASSIGN_OR_RETURN(Region region, Region::open(std::span<const std::byte>(image.data(), image.size())));
  KURA_ASSIGN_OR_RETURN(NodeView root, region.root());
  std::string text;
  Status s = guard_output("cannot write typed JSON", [&] {
    std::ostringstream out;
    KURA_RETURN_IF_ERROR(write_typed_json(root, out));
    // A string stream fails only when its buffer cannot grow.
    if (!out) return Status::out_of_memory();
    text = std::move(out).str();
    return Status::ok();
  });
  if (!s) return s;
  return text;
}

}  // namespace kura::tool
