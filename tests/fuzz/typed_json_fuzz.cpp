// libFuzzer target for the typed JSON reader (tools/kura/typed_json_reader.cpp):
// any bytes must give a Value or InvalidArgument, never a crash, undefined
// behaviour (UBSan) or a read outside the input (ASan). Reading from a
// stream must give exactly what reading the text gives. A value that is
// read must write back as typed JSON (or be refused by Layout::plan, which
// counts names and attributes as links for depth) and read back equal.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <istream>
#include <streambuf>
#include <string_view>

#include "typed_json.hpp"

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "typed_json_fuzz: %s\n", what);
    std::abort();
  }
}

// A read-only stream over the fuzzer's bytes.
class InputBuffer : public std::streambuf {
 public:
  explicit InputBuffer(std::string_view text) {
    char* p = const_cast<char*>(text.data());
    setg(p, p, p + text.size());
  }
};

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto value = kura::tool::parse_typed_json(text);

  InputBuffer buffer(text);
  std::istream in(&buffer);
  auto streamed = kura::tool::parse_typed_json(in);
  require(value.is_ok() == streamed.is_ok(), "the stream and the text disagree on success");

  if (!value) {
    require(value.status().code() == kura::Code::kInvalidArgument,
            "failed with a code other than InvalidArgument");
    require(value.status().message() == streamed.status().message(),
            "the stream and the text fail differently");
    return 0;
  }
  require(*value == *streamed, "the stream and the text read different values");
  auto written = kura::tool::to_typed_json(*value);
  if (!written) {
    require(written.status().code() == kura::Code::kInvalidArgument,
            "writing failed with an unexpected code");
    return 0;
  }
  auto back = kura::tool::parse_typed_json(*written);
  require(back.is_ok(), "what was written does not read back");
  require(*back == *value, "what was written reads back as another value");
  return 0;
}
