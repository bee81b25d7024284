#include "sample.hpp"

#include <bit>
#include <cmath>
#include <complex>
#include <cstdint>
#include <limits>

namespace kura::test {

namespace {

double na_real() {
  return std::bit_cast<double>(kNaRealBits);
}

Value deep_list() {
  return Value::list({Value::f64({0.25, -0.0, std::numeric_limits<double>::infinity()}),
                      Value::strings_utf8({"deep"})})
      .with_attr("units", Value::strings_utf8({"m/s"}));
}

}  // namespace

Value sample_at_path() {
  return Value::f64({0.25, -0.0, std::numeric_limits<double>::infinity()});
}

Value sample_value() {
  using L = std::numeric_limits<double>;
  std::vector<Value> xs;
  xs.push_back(Value::array<Dtype::kU8>({0, 1, 255}));                                                // 1
  xs.push_back(Value::array<Dtype::kI8>({-128, 0, 127}));                                             // 2
  xs.push_back(Value::array<Dtype::kU16>({0, 65535}));                                                // 3
  xs.push_back(Value::array<Dtype::kI16>({-32768, 32767}));                                           // 4
  xs.push_back(Value::array<Dtype::kU32>({0, 4294967295u}));                                          // 5
  xs.push_back(Value::i32({kNaInt, -1, 0, 2147483647}));                                              // 6
  xs.push_back(Value::array<Dtype::kU64>({0, std::numeric_limits<std::uint64_t>::max()}));            // 7
  xs.push_back(Value::array<Dtype::kI64>({std::numeric_limits<std::int64_t>::min(), 42}));            // 8
  xs.push_back(Value::array<Dtype::kF32>({1.5f, -std::numeric_limits<float>::infinity()}));           // 9
  xs.push_back(Value::f64({1.5, na_real(), L::quiet_NaN(), L::infinity(), -L::infinity(), 1e-310}));  // 10
  xs.push_back(Value::array<Dtype::kC128>({{1.0, -2.0}, {na_real(), 0.5}}));                          // 11
  xs.push_back(Value::array<Dtype::kLgl>({1, 0, kNaInt}));                                            // 12
  xs.push_back(Value::strings_of({String{"utf8 \xc3\xbc", Encoding::kUtf8, false}, String::NA(),
                                  String{"caf\xe9", Encoding::kLatin1, false},
                                  String{std::string("\x00\xff", 2), Encoding::kBytes, false},
                                  String{"", Encoding::kUtf8, false}}));  // 13
  xs.push_back(Value::list({Value::i32({1, 2, 3}), Value::null(), deep_list(),
                            Value::bytes("json", std::as_bytes(std::span<const char>("{\"a\":1}", 7)))})
                   .with_names({String{"ints", Encoding::kUtf8, false}, String::NA(),
                                String{"deep", Encoding::kUtf8, false},
                                String{"blob", Encoding::kUtf8, false}}));  // 14
  xs.push_back(Value::null());                                              // 15
  std::vector<String> names;
  for (int i = 1; i <= 15; ++i) names.push_back(String{"x" + std::to_string(i), Encoding::kUtf8, false});
  return Value::list(std::move(xs))
      .with_names(std::move(names))
      .with_attr("class", Value::strings_utf8({"kura_sample", "list"}))
      .with_attr("dim", Value::i32({3, 5}));
}

#define SAMPLE_EXPECT(cond)                                           \
  do {                                                                \
    if (!(cond)) return std::string("sample check failed: ") + #cond; \
  } while (0)

std::string check_sample(const NodeView& root) {
  SAMPLE_EXPECT(root.kind() == Kind::kList && root.length() == 15);
  auto child = [&](std::uint64_t i) { return root.child(i - 1); };
  {
    auto c = child(1);
    SAMPLE_EXPECT(c.is_ok());
    auto a = c->array<Dtype::kU8>();
    SAMPLE_EXPECT(a.is_ok() && a->size() == 3 && (*a)[2] == 255);
  }
  {
    auto a = child(6)->array<Dtype::kI32>();
    SAMPLE_EXPECT(a.is_ok() && a->size() == 4 && (*a)[0] == kNaInt && (*a)[3] == 2147483647);
  }
  {
    auto a = child(7)->array<Dtype::kU64>();
    SAMPLE_EXPECT(a.is_ok() && (*a)[1] == std::numeric_limits<std::uint64_t>::max());
  }
  {
    auto a = child(10)->array<Dtype::kF64>();
    SAMPLE_EXPECT(a.is_ok() && a->size() == 6);
    SAMPLE_EXPECT(std::bit_cast<std::uint64_t>((*a)[1]) == kNaRealBits);
    SAMPLE_EXPECT(std::isnan((*a)[2]) && std::isinf((*a)[3]) && (*a)[5] == 1e-310);
  }
  {
    auto a = child(11)->array<Dtype::kC128>();
    SAMPLE_EXPECT(a.is_ok() && (*a)[0] == std::complex<double>(1.0, -2.0));
    SAMPLE_EXPECT(std::bit_cast<std::uint64_t>((*a)[1].real()) == kNaRealBits);
  }
  {
    auto s = child(13);
    SAMPLE_EXPECT(s.is_ok() && s->kind() == Kind::kStrings && s->length() == 5);
    auto s0 = s->string(0), s1 = s->string(1), s2 = s->string(2), s3 = s->string(3);
    SAMPLE_EXPECT(s0.is_ok() && s0->bytes == "utf8 \xc3\xbc" && s0->encoding == Encoding::kUtf8 && !s0->na);
    SAMPLE_EXPECT(s1.is_ok() && s1->na);
    SAMPLE_EXPECT(s2.is_ok() && s2->bytes == "caf\xe9" && s2->encoding == Encoding::kLatin1);
    SAMPLE_EXPECT(s3.is_ok() && s3->bytes == std::string_view("\x00\xff", 2) &&
                  s3->encoding == Encoding::kBytes);
  }
  {
    auto l = root.child(std::string_view("x14"));
    SAMPLE_EXPECT(l.is_ok() && l->kind() == Kind::kList);
    auto blob = l->child(std::string_view("blob"));
    SAMPLE_EXPECT(blob.is_ok() && blob->kind() == Kind::kBytes && blob->tag() == "json");
    auto d = blob->data();
    SAMPLE_EXPECT(std::string_view(reinterpret_cast<const char*>(d.data()), d.size()) == "{\"a\":1}");
  }
  {
    auto cls = root.attr("class");
    SAMPLE_EXPECT(cls.is_ok() && cls->has_value());
    auto c0 = (*cls)->string(0);
    SAMPLE_EXPECT(c0.is_ok() && c0->bytes == "kura_sample");
    auto dim = root.attr("dim");
    SAMPLE_EXPECT(dim.is_ok() && dim->has_value());
    auto d = (**dim).array<Dtype::kI32>();
    SAMPLE_EXPECT(d.is_ok() && d->size() == 2 && (*d)[1] == 5);
  }
  // Everything else, bit for bit.
  auto copy = to_value(root);
  SAMPLE_EXPECT(copy.is_ok());
  SAMPLE_EXPECT(*copy == sample_value());
  return "";
}

}  // namespace kura::test
