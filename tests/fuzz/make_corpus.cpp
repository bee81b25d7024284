// Writes the seed corpora of the fuzz targets:
//   DIR/region/*.bin  valid regions (the golden example, every dtype, nested
//                     lists, strings, attributes, empty values, deep nesting)
//   DIR/name/*.txt    valid names
//   DIR/typed_json/*.json  typed JSON documents (every type, names,
//                     attributes, keys in another order, a few mistakes)
// Usage: kura_make_corpus DIR
#include <bit>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "kura/core/builder.hpp"

using namespace kura;

namespace {

std::span<const std::byte> as_bytes_of(std::string_view s) {
  return {reinterpret_cast<const std::byte*>(s.data()), s.size()};
}

bool write_file(const std::filesystem::path& p, const void* data, std::size_t size) {
  std::ofstream out(p, std::ios::binary);
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(size));
  return out.good();
}

std::vector<std::pair<std::string, Value>> regions() {
  std::vector<std::pair<std::string, Value>> out;
  out.emplace_back("golden", Value::list({Value::f64({1.5, 2.5}), Value::strings_utf8({"a"})})
                                 .with_names({String{"x"}, String{"tag"}}));
  std::vector<Value> dtypes = {
      Value::array<Dtype::kU8>({0, 1, 255}),    Value::array<Dtype::kI8>({-1, 2}),
      Value::array<Dtype::kU16>({65535}),       Value::array<Dtype::kI16>({-32768, 5}),
      Value::array<Dtype::kU32>({7, 8}),        Value::i32({1, INT32_MIN, 3}),
      Value::array<Dtype::kU64>({UINT64_MAX}),  Value::array<Dtype::kI64>({INT64_MIN, 0}),
      Value::array<Dtype::kF32>({1.5f}),        Value::f64({std::bit_cast<double>(kNaRealBits), -0.0}),
      Value::array<Dtype::kC128>({{1.0, 2.0}}), Value::array<Dtype::kLgl>({0, 1, kNaInt}),
  };
  out.emplace_back("dtypes", Value::list(dtypes));
  for (std::size_t i = 0; i < dtypes.size(); ++i) out.emplace_back("dtype" + std::to_string(i), dtypes[i]);
  out.emplace_back("strings", Value::strings_of({String{"x"}, String::NA(), String{""},
                                                 String{"caf\xe9", Encoding::kLatin1},
                                                 String{"\x01\x00z", Encoding::kBytes}}));
  Value arr = Value::f64({1, 2, 3, 4, 5, 6});
  arr.with_attr("dim", Value::i32({2, 3}))
      .with_attr("class", Value::strings_utf8({"matrix"}).with_attr("note", Value::null()));
  out.emplace_back("attrs", arr);
  out.emplace_back(
      "nested",
      Value::list({Value::list({Value::i32({1}), Value::list({Value::null(), Value::strings_utf8({"deep"})})})
                       .with_names({String{"a"}, String{"b"}}),
                   Value::bytes("json", as_bytes_of("{\"k\":1}")), Value::null()})
          .with_names({String{"x"}, String::NA(), String{"n"}})
          .with_attr("class", Value::strings_utf8({"data.frame"})));
  out.emplace_back("empty", Value::list({Value::list({}), Value::strings_of({}), Value::f64({}),
                                         Value::bytes("", {}), Value::null()}));
  out.emplace_back("null", Value::null());
  Value deep = Value::i32({64});
  for (int i = 0; i < 64; ++i) deep = Value::list({std::move(deep)});
  out.emplace_back("deep64", deep);
  return out;
}

const char* const kNames[] = {
    "/kura_0_0",
    "/kura_1f_2a",
    "/kura_1f_2a[2,3]",
    "/kura_ffffffffffffffff_1[9223372036854775807]",
    "/kura_a_b[1,1,1,1,1,1,1,1]",
    "/kura_1_2[",
    "/kura_1_2[1,]",
};

const char* const kTypedJson[] = {
    R"({"type": "list", "values": [
  {"type": "u8", "values": [0, 255]}, {"type": "i8", "values": [-128, 127]},
  {"type": "u16", "values": [65535]}, {"type": "i16", "values": [-32768]},
  {"type": "u32", "values": [4294967295]}, {"type": "i32", "values": [-2147483648, 7]},
  {"type": "u64", "values": [18446744073709551615]}, {"type": "i64", "values": [-9223372036854775808]},
  {"type": "f32", "values": [0.1, "NaN", "Inf", "-Inf", -0.0]},
  {"type": "f64", "values": [1.5, null, "NaN", 5e-324]},
  {"type": "c128", "values": [[1.0, -1.0], [null, 2.0]]},
  {"type": "lgl", "values": [true, false, null]}
], "names": ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "c128", "lgl"]})",
    R"({"type": "strings", "values": ["a", null, "", "café", {"latin1": "6Q=="}, {"bytes": "AP8="}]})",
    R"({"type": "bytes", "tag": "json", "base64": "eyJrIjogMX0="})",
    R"({"type": "null", "attrs": {"class": {"type": "strings", "values": ["x"]}, "dim": {"type": "i32", "values": [1, 1]}}})",
    R"({"attrs": {"k": {"type": "null"}}, "names": ["a"], "type": "list", "values": [{"type": "list", "values": []}]})",
    R"({"base64": "", "tag": "rds3", "type": "bytes"})",
    R"({"type": "list", "values": [{"type": "list", "values": [{"type": "list", "values": [{"type": "null"}]}]}]})",
    R"({"type": "f64", "values": [1, 2], "names": ["a"]})",
    R"({"values": [1], "type": "f64"})",
};

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s DIR\n", argv[0]);
    return 2;
  }
  std::filesystem::path dir(argv[1]);
  std::error_code ec;
  std::filesystem::create_directories(dir / "region", ec);
  std::filesystem::create_directories(dir / "name", ec);
  std::filesystem::create_directories(dir / "typed_json", ec);
  if (ec) {
    std::fprintf(stderr, "cannot create %s: %s\n", argv[1], ec.message().c_str());
    return 1;
  }
  int written = 0;
  for (const auto& [name, value] : regions()) {
    for (bool hashed : {false, true}) {
      auto image = build(value, Stamp{1700000000000000000ull, 42}, hashed);
      if (!image) {
        std::fprintf(stderr, "cannot build %s: %s\n", name.c_str(), image.status().to_string().c_str());
        return 1;
      }
      auto path = dir / "region" / (name + (hashed ? "-hashed" : "") + ".bin");
      if (!write_file(path, image->data(), image->size())) {
        std::fprintf(stderr, "cannot write %s\n", path.c_str());
        return 1;
      }
      ++written;
    }
  }
  int i = 0;
  for (const char* n : kNames) {
    auto path = dir / "name" / ("name" + std::to_string(i++) + ".txt");
    if (!write_file(path, n, std::char_traits<char>::length(n))) return 1;
    ++written;
  }
  i = 0;
  for (const char* doc : kTypedJson) {
    auto path = dir / "typed_json" / ("doc" + std::to_string(i++) + ".json");
    if (!write_file(path, doc, std::char_traits<char>::length(doc))) return 1;
    ++written;
  }
  std::printf("wrote %d seeds to %s\n", written, argv[1]);
  return 0;
}
