#include "kura/core/name.hpp"

#include <charconv>

#include "no_throw_internal.hpp"

namespace kura {
namespace {

constexpr std::string_view kPrefix = "/kura_";

bool is_hex(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
}
bool is_digit(char c) {
  return c >= '0' && c <= '9';
}
int hex_value(char c) {
  return c <= '9' ? c - '0' : c - 'a' + 10;
}

// Parses one hex field starting at `pos`; advances `pos` past it.
Status parse_hex(std::string_view s, std::size_t& pos, const char* what, std::uint64_t& out) {
  std::size_t start = pos;
  while (pos < s.size() && is_hex(s[pos])) ++pos;
  std::size_t n = pos - start;
  if (n == 0)
    return invalid_name(std::string("expected lowercase hex ") + what + " at position " +
                        std::to_string(start));
  if (n > 16) return invalid_name(std::string(what) + " has more than 16 hex digits");
  if (n > 1 && s[start] == '0') return invalid_name(std::string(what) + " has a leading zero");
  std::uint64_t v = 0;
  for (std::size_t i = start; i < pos; ++i) v = (v << 4) | static_cast<std::uint64_t>(hex_value(s[i]));
  out = v;
  return Status::ok();
}

// parse_name, which may throw std::bad_alloc.
Result<Name> parse_name_impl(std::string_view s) {
  if (s.empty()) return invalid_name("empty name");
  if (s.size() > kMaxNameLength)
    return invalid_name("name longer than " + std::to_string(kMaxNameLength) + " characters");
  if (s.substr(0, kPrefix.size()) != kPrefix) return invalid_name("name must start with \"/kura_\"");
  Name name;
  std::size_t pos = kPrefix.size();
  KURA_RETURN_IF_ERROR(parse_hex(s, pos, "owner id", name.owner));
  if (pos >= s.size() || s[pos] != '_')
    return invalid_name("expected '_' after the owner id at position " + std::to_string(pos));
  ++pos;
  KURA_RETURN_IF_ERROR(parse_hex(s, pos, "counter", name.counter));
  if (pos == s.size()) return name;
  if (s[pos] != '[')
    return invalid_name("unexpected character at position " + std::to_string(pos) +
                        " (expected '[' or the end)");
  ++pos;
  for (;;) {
    std::size_t start = pos;
    if (pos >= s.size() || !is_digit(s[pos]))
      return invalid_name("expected an index at position " + std::to_string(start));
    if (s[pos] == '0')
      return invalid_name("index at position " + std::to_string(start) +
                          " is 0 or has a leading zero (indices are 1-based)");
    std::uint64_t v = 0;
    while (pos < s.size() && is_digit(s[pos])) {
      std::uint64_t d = static_cast<std::uint64_t>(s[pos] - '0');
      if (v > (kMaxIndex - d) / 10)
        return invalid_name("index at position " + std::to_string(start) + " exceeds 2^63-1");
      v = v * 10 + d;
      ++pos;
    }
    if (name.path.size() == kMaxPathIndices)
      return invalid_name("more than " + std::to_string(kMaxPathIndices) + " indices");
    name.path.push_back(v);
    if (pos >= s.size()) return invalid_name("missing ']' at the end");
    if (s[pos] == ',') {
      ++pos;
      continue;
    }
    if (s[pos] != ']')
      return invalid_name("unexpected character at position " + std::to_string(pos) +
                          " (expected ',' or ']')");
    ++pos;
    break;
  }
  if (pos != s.size())
    return invalid_name("trailing characters after ']' at position " + std::to_string(pos));
  return name;
}

}  // namespace

Result<Name> parse_name(std::string_view s) noexcept {
  return detail::no_throw([&] { return parse_name_impl(s); });
}

std::string format_region_name(std::uint64_t owner, std::uint64_t counter) {
  // std::to_chars, not snprintf: every map() formats the region's name.
  char buf[64] = "/kura_";
  char* const end = buf + sizeof buf;
  char* p = std::to_chars(buf + 6, end, owner, 16).ptr;
  *p++ = '_';
  p = std::to_chars(p, end, counter, 16).ptr;
  return std::string(buf, p);
}

std::string format_name(const Name& name) {
  KURA_CHECK(name.path.size() <= kMaxPathIndices);
  std::string out = format_region_name(name.owner, name.counter);
  if (name.path.empty()) return out;
  out += '[';
  for (std::size_t i = 0; i < name.path.size(); ++i) {
    KURA_CHECK(name.path[i] >= 1 && name.path[i] <= kMaxIndex);
    if (i) out += ',';
    out += std::to_string(name.path[i]);
  }
  out += ']';
  return out;
}

}  // namespace kura
