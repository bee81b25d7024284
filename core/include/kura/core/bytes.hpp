// kura::Bytes: a byte vector whose storage is 64-byte aligned, so that a
// region image held in ordinary memory can be read with typed views exactly
// like a mapped one; and small text helpers shared by the tool and the
// libraries.
#pragma once

#include <cstddef>
#include <cstdint>
#include <new>
#include <string>
#include <string_view>
#include <vector>

namespace kura {

template <class T>
struct Aligned64Allocator {
  using value_type = T;
  Aligned64Allocator() noexcept = default;
  template <class U>
  Aligned64Allocator(const Aligned64Allocator<U>&) noexcept {}  // NOLINT: rebinding
  T* allocate(std::size_t n) { return static_cast<T*>(::operator new (n * sizeof(T), std::align_val_t{64})); }
  void deallocate(T* p, std::size_t) noexcept { ::operator delete (p, std::align_val_t{64}); }
  template <class U>
  bool operator==(const Aligned64Allocator<U>&) const noexcept {
    return true;
  }
};

using Bytes = std::vector<std::byte, Aligned64Allocator<std::byte>>;

// A size for people: "704 B", "1.3 KiB", "2.0 GiB" (binary units).
std::string human_bytes(std::uint64_t n);

// Whether `s` is well-formed UTF-8 (no overlong forms, no surrogates, at
// most U+10FFFF).
bool valid_utf8(std::string_view s) noexcept;
// `s` (valid UTF-8) as a quoted JSON string: quotes, backslashes and
// control characters escaped.
std::string json_quote(std::string_view s);

}  // namespace kura
