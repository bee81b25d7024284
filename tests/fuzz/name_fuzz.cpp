// libFuzzer target for parse_name (FORMAT.md section 1): never crashes;
// a name that parses formats back to exactly the input, and one that does
// not is InvalidName with a message.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <string_view>

#include "kura/core/name.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  auto parsed = kura::parse_name(text);
  if (!parsed) {
    if (parsed.status().code() != kura::Code::kInvalidName || parsed.status().message().empty()) {
      std::fprintf(stderr, "parse_name failed with %s\n", parsed.status().to_string().c_str());
      std::abort();
    }
    return 0;
  }
  if (text.size() > kura::kMaxNameLength || parsed->path.size() > kura::kMaxPathIndices) std::abort();
  std::string formatted = kura::format_name(*parsed);
  if (formatted != text) {
    std::fprintf(stderr, "round trip: \"%.*s\" formats as \"%s\"\n", static_cast<int>(text.size()),
                 text.data(), formatted.c_str());
    std::abort();
  }
  auto again = kura::parse_name(formatted);
  if (!again || !(*again == *parsed)) std::abort();
  return 0;
}
