#include "print.hpp"

#include <charconv>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <string>

#include "typed_json.hpp"

namespace kura::tool {

namespace {

template <class T>
std::string int_text(T x) {
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string real_text(double x) {
  if (is_na_real(x)) return "NA";
  if (!std::isfinite(x)) return format_f64(x);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string float_text(float x) {
  if (!std::isfinite(x)) return format_f32(x);
  char buf[64];
  auto r = std::to_chars(buf, buf + sizeof buf, x);
  return std::string(buf, r.ptr);
}

std::string complex_text(std::complex<double> z) {
  if (is_na_real(z.real()) && is_na_real(z.imag())) return "NA";
  std::string im = real_text(z.imag());
  std::string sep = (im[0] == '-') ? "" : "+";
  return real_text(z.real()) + sep + im + "i";
}

std::string hex_bytes(std::string_view b, std::size_t max) {
  static const char* hex = "0123456789abcdef";
  std::string out;
  for (std::size_t i = 0; i < b.size() && i < max; ++i) {
    auto c = static_cast<unsigned char>(b[i]);
    out += hex[c >> 4];
    out += hex[c & 15];
  }
  if (b.size() > max) out += "...";
  return out;
}

// Cuts valid UTF-8 `s` to at most `max` bytes on a character boundary.
std::string_view cut_utf8(std::string_view s, std::size_t max) {
  if (s.size() <= max) return s;
  std::size_t n = max;
  while (n > 0 && (static_cast<unsigned char>(s[n]) & 0xC0) == 0x80) --n;
  return s.substr(0, n);
}

constexpr std::size_t kLongString = 100;

// The text of string `s`, a private copy (read_string), so that the bytes
// checked as UTF-8 are the bytes printed.
std::string string_text(const String& s, bool all) {
  if (s.na) return "NA";
  std::string utf8;
  std::string_view text;
  if (s.encoding == Encoding::kUtf8 && valid_utf8(s.bytes)) {
    text = s.bytes;
  } else if (s.encoding == Encoding::kLatin1) {
    for (char ch : s.bytes) {
      auto c = static_cast<unsigned char>(ch);
      if (c < 0x80) {
        utf8 += ch;
      } else {
        utf8 += static_cast<char>(0xC0 | (c >> 6));
        utf8 += static_cast<char>(0x80 | (c & 0x3F));
      }
    }
    text = utf8;
  } else {
    return "<" + std::to_string(s.bytes.size()) + " bytes " + hex_bytes(s.bytes, all ? s.bytes.size() : 32) +
           ">";
  }
  if (!all && text.size() > kLongString)
    return json_quote(cut_utf8(text, kLongString)) + "...(" + std::to_string(text.size()) + " bytes)";
  return json_quote(text);
}

// The text of element `i` of array `n`.
Result<std::string> element_text(const NodeView& n, std::uint64_t i) {
#define KURA_ELEM(D, F)                           \
  case D: {                                       \
    KURA_ASSIGN_OR_RETURN(auto xs, n.array<D>()); \
    return F(xs[i]);                              \
  }
  switch (n.dtype()) {
    KURA_ELEM(Dtype::kU8, int_text)
    KURA_ELEM(Dtype::kI8, int_text)
    KURA_ELEM(Dtype::kU16, int_text)
    KURA_ELEM(Dtype::kI16, int_text)
    KURA_ELEM(Dtype::kU32, int_text)
    KURA_ELEM(Dtype::kI32, int_text)
    KURA_ELEM(Dtype::kU64, int_text)
    KURA_ELEM(Dtype::kI64, int_text)
    KURA_ELEM(Dtype::kF32, float_text)
    KURA_ELEM(Dtype::kF64, real_text)
    KURA_ELEM(Dtype::kC128, complex_text)
    case Dtype::kLgl: {
      KURA_ASSIGN_OR_RETURN(auto xs, n.array<Dtype::kLgl>());
      std::int32_t x = xs[i];
      if (x == kNaInt) return std::string("NA");
      if (x == 0) return std::string("FALSE");
      if (x == 1) return std::string("TRUE");
      return corrupt("lgl element " + std::to_string(i + 1) + " holds " + std::to_string(x) +
                     ", not 0, 1 or NA");
    }
    case Dtype::kNone: break;
  }
#undef KURA_ELEM
  return corrupt("array of unknown dtype");
}

// Calls `f(i)` for the indices shown of `length` elements, and `gap(hidden)`
// once where a summary leaves elements out.
template <class F, class G>
Status shown(std::uint64_t length, bool all, F&& f, G&& gap) {
  if (all || length <= kSummaryThreshold) {
    for (std::uint64_t i = 0; i < length; ++i) KURA_RETURN_IF_ERROR(f(i));
    return Status::ok();
  }
  for (std::uint64_t i = 0; i < kSummaryEnds; ++i) KURA_RETURN_IF_ERROR(f(i));
  gap(length - 2 * kSummaryEnds);
  for (std::uint64_t i = length - kSummaryEnds; i < length; ++i) KURA_RETURN_IF_ERROR(f(i));
  return Status::ok();
}

// Writes the elements of an array or strings node, each after a space:
// " 1 2 3 ... 9". Strings are read with `budget`.
Status write_elements(const NodeView& n, bool all, WalkBudget& budget, std::ostream& out) {
  return shown(
      n.length(), all,
      [&](std::uint64_t i) -> Status {
        out << ' ';
        if (n.kind() == Kind::kStrings) {
          KURA_ASSIGN_OR_RETURN(String s, read_string(n, i, budget));
          out << string_text(s, all);
        } else {
          KURA_ASSIGN_OR_RETURN(std::string t, element_text(n, i));
          out << t;
        }
        return Status::ok();
      },
      [&](std::uint64_t hidden) { out << " ... (" << hidden << " more) ..."; });
}

std::string indent_text(unsigned indent) {
  return std::string(2 * indent, ' ');
}

// The label of list child `i`: $name when it has a usable name, else [[i]].
Result<std::string> child_label(const std::optional<NodeView>& names, std::uint64_t i, WalkBudget& budget) {
  if (names) {
    KURA_ASSIGN_OR_RETURN(String s, read_string(*names, i, budget));
    if (!s.na && s.encoding == Encoding::kUtf8 && valid_utf8(s.bytes) && !s.bytes.empty()) {
      bool plain = true;
      for (char c : s.bytes)
        plain = plain && (std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.');
      return "$" + (plain ? s.bytes : "`" + s.bytes + "`");
    }
  }
  return "[[" + std::to_string(i + 1) + "]]";
}

class ValuePrinter {
 public:
  ValuePrinter(std::ostream& out, const PrintOptions& o, const NodeView& start)
      : out_(out), o_(o), budget_(start) {}

  Status node(const NodeView& n, unsigned indent, const std::string& label) {
    KURA_RETURN_IF_ERROR(budget_.take(n));
    out_ << indent_text(indent);
    if (!label.empty()) out_ << label << ' ';
    KURA_ASSIGN_OR_RETURN(auto names, n.names());
    switch (n.kind()) {
      case Kind::kNull: out_ << "NULL\n"; break;
      case Kind::kArray:
      case Kind::kStrings: {
        out_ << (n.kind() == Kind::kArray ? dtype_name(n.dtype()) : "strings") << '[' << n.length() << ']';
        KURA_RETURN_IF_ERROR(write_elements(n, o_.all, budget_, out_));
        out_ << '\n';
        break;
      }
      case Kind::kBytes: {
        auto d = n.data();
        std::string_view b(reinterpret_cast<const char*>(d.data()), d.size());
        out_ << "bytes[" << n.length() << "] tag " << json_quote(n.tag()) << ' '
             << hex_bytes(b, o_.all ? b.size() : 32) << '\n';
        break;
      }
      case Kind::kList: {
        out_ << "list[" << n.length() << "]\n";
        if (names) KURA_RETURN_IF_ERROR(budget_.take(*names));
        KURA_RETURN_IF_ERROR(shown(
            n.length(), o_.all,
            [&](std::uint64_t i) -> Status {
              KURA_ASSIGN_OR_RETURN(NodeView c, n.child(i));
              KURA_ASSIGN_OR_RETURN(std::string l, child_label(names, i, budget_));
              return node(c, indent + 1, l);
            },
            [&](std::uint64_t hidden) {
              out_ << indent_text(indent + 1) << "... (" << hidden << " more children) ...\n";
            }));
        break;
      }
    }
    if (names && n.kind() != Kind::kList) {
      KURA_RETURN_IF_ERROR(budget_.take(*names));
      out_ << indent_text(indent + 1) << "names:";
      KURA_RETURN_IF_ERROR(write_elements(*names, o_.all, budget_, out_));
      out_ << '\n';
    }
    return attrs(n, indent + 1);
  }

 private:
  Status attrs(const NodeView& n, unsigned indent) {
    KURA_ASSIGN_OR_RETURN(auto a, n.attrs());
    if (!a) return Status::ok();
    KURA_RETURN_IF_ERROR(budget_.take(*a));
    KURA_ASSIGN_OR_RETURN(auto keys, a->names());
    if (!keys) return corrupt("an attribute list without names");
    KURA_RETURN_IF_ERROR(budget_.take(*keys));
    for (std::uint64_t i = 0; i < a->length(); ++i) {
      KURA_ASSIGN_OR_RETURN(String k, read_string(*keys, i, budget_));
      KURA_ASSIGN_OR_RETURN(NodeView c, a->child(i));
      KURA_RETURN_IF_ERROR(node(c, indent, "attr " + string_text(k, true) + ":"));
    }
    return Status::ok();
  }

  std::ostream& out_;
  const PrintOptions& o_;
  WalkBudget budget_;
};

std::string hex64(std::uint64_t x) {
  char buf[24];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(x));
  return buf;
}

class TreePrinter {
 public:
  TreePrinter(std::ostream& out, const PrintOptions& o, const NodeView& start)
      : out_(out), o_(o), budget_(start) {}

  Status node(const NodeView& n, unsigned indent, const std::string& label) {
    KURA_RETURN_IF_ERROR(budget_.take(n));
    const NodeHeader& h = n.header();
    out_ << indent_text(indent);
    if (!label.empty()) out_ << label << ' ';
    out_ << '@' << n.offset() << ' ' << kind_name(n.kind());
    if (n.kind() == Kind::kArray) out_ << ' ' << dtype_name(n.dtype());
    out_ << " length=" << n.length();
    if (h.data_size) out_ << " data=@" << h.data_offset << "+" << h.data_size;
    if (n.kind() == Kind::kBytes) out_ << " tag=" << json_quote(n.tag());
    if (n.region_hashed()) out_ << " hash=" << hex64(h.hash);
    out_ << '\n';

    KURA_ASSIGN_OR_RETURN(auto names, n.names());
    if (names) {
      KURA_RETURN_IF_ERROR(budget_.take(*names));
      const NodeHeader& nh = names->header();
      out_ << indent_text(indent + 1) << "names @" << names->offset()
           << " strings length=" << names->length();
      if (nh.data_size) out_ << " data=@" << nh.data_offset << "+" << nh.data_size;
      if (names->region_hashed()) out_ << " hash=" << hex64(nh.hash);
      out_ << '\n';
    }
    KURA_ASSIGN_OR_RETURN(auto a, n.attrs());
    if (a) {
      KURA_RETURN_IF_ERROR(budget_.take(*a));
      KURA_ASSIGN_OR_RETURN(auto keys, a->names());
      if (!keys) return corrupt("an attribute list without names");
      KURA_RETURN_IF_ERROR(budget_.take(*keys));
      const NodeHeader& ah = a->header();
      out_ << indent_text(indent + 1) << "attrs @" << a->offset() << " list length=" << a->length();
      if (ah.data_size) out_ << " data=@" << ah.data_offset << "+" << ah.data_size;
      out_ << " keys=@" << keys->offset();
      if (a->region_hashed()) out_ << " hash=" << hex64(ah.hash);
      out_ << '\n';
      for (std::uint64_t i = 0; i < a->length(); ++i) {
        KURA_ASSIGN_OR_RETURN(String k, read_string(*keys, i, budget_));
        KURA_ASSIGN_OR_RETURN(NodeView c, a->child(i));
        KURA_RETURN_IF_ERROR(node(c, indent + 2, "attr " + string_text(k, true)));
      }
    }
    if (n.kind() == Kind::kList) {
      KURA_RETURN_IF_ERROR(shown(
          n.length(), o_.all,
          [&](std::uint64_t i) -> Status {
            KURA_ASSIGN_OR_RETURN(NodeView c, n.child(i));
            std::string l = "[" + std::to_string(i + 1) + "]";
            if (names) {
              KURA_ASSIGN_OR_RETURN(String s, read_string(*names, i, budget_));
              l += " " + string_text(s, false);
            }
            return node(c, indent + 1, l);
          },
          [&](std::uint64_t hidden) {
            out_ << indent_text(indent + 1) << "... (" << hidden << " more children) ...\n";
          }));
    }
    return Status::ok();
  }

 private:
  std::ostream& out_;
  const PrintOptions& o_;
  WalkBudget budget_;
};

}  // namespace

Status print_value(const NodeView& node, std::ostream& out, const PrintOptions& options) noexcept {
  return guard_output("cannot print", [&] {
    ValuePrinter p(out, options, node);
    return p.node(node, 0, "");
  });
}

Status print_tree(const NodeView& node, std::ostream& out, const PrintOptions& options) noexcept {
  return guard_output("cannot print", [&] {
    TreePrinter p(out, options, node);
    return p.node(node, 0, "");
  });
}

void print_region_header(const RegionHeader& h, std::ostream& out) {
  out << "region " << human_bytes(h.region_size) << " (" << h.region_size << " bytes), format v" << h.version
      << ", " << ((h.flags & kRegionSealed) ? "sealed" : "unsealed") << ", "
      << ((h.flags & kRegionHashed) ? "hashed" : "not hashed") << ", " << h.node_count << " nodes, root @"
      << h.root_offset;
  if (h.created_ns) {
    std::time_t t = static_cast<std::time_t>(h.created_ns / 1000000000ull);
    std::tm tm{};
    char buf[64];
    if (gmtime_r(&t, &tm) && std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm))
      out << ", created " << buf;
  }
  if (h.creator_pid) out << " by pid " << h.creator_pid;
  out << '\n';
}

}  // namespace kura::tool
