// The builds of XXH3 (core/hash_internal.hpp): every build this CPU runs
// gives the same values as every other, one-shot and incrementally, on
// every length up to a few blocks and on large inputs; the golden region's
// hashes come out the same under each; the process uses the widest one.
#include "kura/core/hash.hpp"

#include <catch2/catch.hpp>
#include <cstring>
#include <fstream>
#include <iterator>
#include <random>
#include <string>
#include <vector>

#include "hash_internal.hpp"
#include "kura/core/layout.hpp"

using namespace kura;

namespace {

std::vector<unsigned char> random_bytes(std::size_t n, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<unsigned char> out(n);
  for (auto& b : out) b = static_cast<unsigned char>(gen());
  return out;
}

std::uint64_t incremental(const detail::Xxh3& b, const unsigned char* p, std::size_t n, std::size_t step) {
  detail::Xxh3State s;
  b.reset(s);
  for (std::size_t done = 0; done < n; done += step) b.update(s, p + done, std::min(step, n - done));
  return b.digest(s);
}

std::string names() {
  std::string out;
  for (const detail::Xxh3* b : detail::xxh3_builds()) out += std::string(b->name) + " ";
  return out;
}

}  // namespace

TEST_CASE("the XXH3 builds of this CPU are listed, widest first, and the widest is used", "[core]") {
  auto builds = detail::xxh3_builds();
  INFO("builds: " << names());
  REQUIRE(builds.size() >= 2);  // at least libxxhash and the scalar reference
  CHECK(builds[0] == &detail::xxh3());
  CHECK(hash_implementation() == builds[0]->name);
#if defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f"))
    CHECK(hash_implementation() == "avx512");
  else if (__builtin_cpu_supports("avx2"))
    CHECK(hash_implementation() == "avx2");
  else
    CHECK(hash_implementation() == "libxxhash");
#endif
  bool lib = false, scalar = false;
  for (const detail::Xxh3* b : builds) {
    lib = lib || b->name == "libxxhash";
    scalar = scalar || b->name == "scalar";
  }
  CHECK(lib);
  CHECK(scalar);
}

TEST_CASE("every XXH3 build gives the same hashes", "[core]") {
  // XXH3's published value for empty input, seed 0.
  for (const detail::Xxh3* b : detail::xxh3_builds()) {
    INFO("build " << b->name);
    CHECK(b->hash(nullptr, 0) == 0x2D06800538D394C2ULL);
  }
  const detail::Xxh3* ref = nullptr;
  for (const detail::Xxh3* b : detail::xxh3_builds())
    if (b->name == "scalar") ref = b;
  REQUIRE(ref != nullptr);

  // Every length through several 1 KiB blocks (XXH3 has separate paths up to
  // 16, 128 and 240 bytes, then stripes of 64 and blocks of 1 KiB), and
  // large inputs in several steps, on unaligned starts too.
  const auto data = random_bytes((std::size_t{16} << 20) + 7, 42);
  std::vector<std::size_t> lengths;
  for (std::size_t n = 0; n <= 4200; ++n) lengths.push_back(n);
  for (std::size_t n : {65536, 1000003, 16 << 20}) lengths.push_back(n);
  for (std::size_t offset : {0, 1, 7}) {
    for (std::size_t n : lengths) {
      const unsigned char* p = data.data() + offset;
      const std::uint64_t want = ref->hash(p, n);
      for (const detail::Xxh3* b : detail::xxh3_builds()) {
        if (b->hash(p, n) != want) FAIL("build " << b->name << ": one-shot hash differs at length " << n);
        if (n % 97 == 0 || n > 4200) {
          for (std::size_t step : {1, 63, 64, 1000, 1 << 20}) {
            if (n > 4200 && step < 1000) continue;
            if (incremental(*b, p, n, step) != want)
              FAIL("build " << b->name << ": incremental hash (steps of " << step << ") differs at length "
                            << n);
          }
        }
      }
    }
  }
  SUCCEED("builds compared: " << names());
}

TEST_CASE("the golden region's hashes are the same under every XXH3 build", "[core]") {
  std::ifstream in(KURA_TEST_DATA "/example-v1.bin", std::ios::binary);
  REQUIRE(in.good());
  std::vector<unsigned char> g((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  REQUIRE(g.size() == 704);
  std::uint64_t header_hash;
  std::memcpy(&header_hash, g.data() + offsetof(RegionHeader, header_hash), 8);
  for (const detail::Xxh3* b : detail::xxh3_builds()) {
    INFO("build " << b->name);
    CHECK(b->hash(g.data(), 56) == header_hash);
    // The four nodes (docs/format.md section 8): header offset, data offset, data size.
    for (auto [at, data, size] :
         {std::array<std::size_t, 3>{64, 128, 16}, {192, 256, 70}, {384, 448, 16}, {512, 576, 66}}) {
      NodeHeader h;
      std::memcpy(&h, g.data() + at, sizeof h);
      const std::uint64_t stored = h.hash;
      h.hash = 0;
      std::vector<unsigned char> covered(sizeof h + size);
      std::memcpy(covered.data(), &h, sizeof h);
      std::memcpy(covered.data() + sizeof h, g.data() + data, size);
      CHECK(b->hash(covered.data(), covered.size()) == stored);
      CHECK(incremental(*b, covered.data(), covered.size(), 64) == stored);
    }
  }
}
