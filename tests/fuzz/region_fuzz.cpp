// libFuzzer target for the reader (FORMAT.md section 5): any bytes, opened
// as a region and read every way there is, must give a status, never a
// crash or a read outside the image (ASan) or undefined behaviour (UBSan).
// A value that reads back cleanly must also build again and read back equal.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

#include "kura/core/builder.hpp"
#include "kura/core/bytes.hpp"
#include "kura/core/verify.hpp"
#include "kura/core/view.hpp"

namespace {

using kura::Code;
using kura::Status;

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "region_fuzz: %s\n", what);
    std::abort();
  }
}

bool path_code_ok(Code c) {
  return c == Code::kCorrupt || c == Code::kOutOfRange || c == Code::kNotAList;
}

// Every lookup a user can make on one node; results only need to be sane.
Status poke(const kura::NodeView& n) {
  (void)n.describe();
  (void)n.tag();
  auto d = n.data();
  if (!d.empty()) {
    volatile std::byte first = d.front();
    volatile std::byte last = d.back();
    (void)first;
    (void)last;
  }
  if (n.kind() == kura::Kind::kStrings) {
    for (std::uint64_t i = 0; i < n.length(); ++i) {
      auto s = n.string(i);
      if (!s) {
        require(s.status().code() == Code::kCorrupt, "string(i) failed with a code other than Corrupt");
        return s.status();
      }
      if (!s->na) require(s->bytes.data()[s->bytes.size()] == '\0', "string without its terminator");
    }
  }
  if (n.kind() == kura::Kind::kArray) {
    auto xs = n.array<kura::Dtype::kF64>();
    if (n.dtype() == kura::Dtype::kF64) require(xs.is_ok() && xs->size() == n.length(), "f64 span");
  }
  for (const char* key : {"dim", "names", "class"}) {
    auto a = n.attr(key);
    if (!a) require(a.status().code() == Code::kCorrupt, "attr() failed with a code other than Corrupt");
  }
  auto c = n.child("x");
  if (!c) require(path_code_ok(c.status().code()), "child(name) failed with an unexpected code");
  if (n.kind() == kura::Kind::kList && n.length() > 0) {
    auto last = n.child(n.length() - 1);
    if (!last)
      require(last.status().code() == Code::kCorrupt, "child(i) failed with a code other than Corrupt");
  }
  return Status::ok();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  kura::Bytes image(size);
  if (size) std::memcpy(image.data(), data, size);

  auto region = kura::Region::open(image);
  if (!region) {
    require(region.status().code() == Code::kCorrupt, "open failed with a code other than Corrupt");
    return 0;
  }
  static const std::vector<std::vector<std::uint64_t>> paths = {
      {}, {1}, {2}, {3}, {1, 1}, {1, 2}, {2, 1}, {1, 1, 1}, {0}, {9223372036854775807ull}, {1, 1, 1, 1, 1}};
  for (const auto& p : paths) {
    auto n = region->at(p);
    if (n) {
      require(n->depth() == p.size(), "at() depth differs from the path length");
      (void)poke(*n);
    } else {
      require(path_code_ok(n.status().code()), "at() failed with an unexpected code");
    }
  }
  auto root = region->root();
  if (!root) {
    require(root.status().code() == Code::kCorrupt, "root() failed with a code other than Corrupt");
    return 0;
  }

  std::uint64_t visited = 0;
  Status walked = kura::walk(*root, [&](const kura::NodeView& n) {
    ++visited;
    return poke(n);
  });
  require(visited <= region->header().node_count, "walk visited more than node_count nodes");
  if (!walked) require(walked.code() == Code::kCorrupt, "walk failed with a code other than Corrupt");

  auto report = kura::verify(*root);
  if (!report)
    require(report.status().code() == Code::kCorrupt, "verify failed with a code other than Corrupt");

  auto value = kura::to_value(*root);
  if (!value) {
    require(value.status().code() == Code::kCorrupt, "to_value failed with a code other than Corrupt");
    return 0;
  }
  // A value that came out of a region is one the builder can lay out again
  // (unless it breaks a rule only the builder checks, like duplicate
  // attribute keys), and it reads back the same.
  auto rebuilt = kura::build(*value, kura::Stamp{}, /*hashed=*/true);
  if (!rebuilt) {
    require(rebuilt.status().code() == Code::kInvalidArgument,
            "build failed with a code other than InvalidArgument");
    return 0;
  }
  auto region2 = kura::Region::open(*rebuilt);
  require(region2.is_ok(), "a rebuilt region does not open");
  auto root2 = region2->root();
  require(root2.is_ok(), "a rebuilt region has no root");
  auto value2 = kura::to_value(*root2);
  require(value2.is_ok() && *value2 == *value, "a rebuilt region does not read back equal");
  require(kura::verify(*root2).is_ok(), "a rebuilt region does not verify");
  return 0;
}
