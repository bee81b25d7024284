// Fault injection for allocations: a test binary that links failing_new.cpp
// replaces the global operator new (every form) with one that, while armed
// on the calling thread, lets a given number of allocations through and
// then throws std::bad_alloc for every allocation after them, until
// disarmed. Unarmed, it is plain malloc.
//
//   kura::test::exhaust([&] { return kura::to_value(node); }, Code::kOk);
//
// calls the function with 0, 1, 2, ... allocations allowed until one call
// needs no more than allowed, and checks that every call came back with the
// expected code or OutOfMemory: never a crash, an abort or an exception.
//
// Under AddressSanitizer the replacement still takes the place of ASan's
// operator new (the executable's definition wins), and allocates with
// malloc, which ASan does intercept: heap checks and leak checks still work.
#pragma once

#include <catch2/catch.hpp>
#include <cstddef>
#include <exception>
#include <string>

#include "kura/core/status.hpp"

namespace kura::test {

// Lets `allowed` more allocations through on this thread, then fails every
// one until disarm_allocations().
void fail_allocations_after(std::size_t allowed) noexcept;
// Back to plain allocation on this thread. Returns whether an allocation
// was refused since the last fail_allocations_after().
bool disarm_allocations() noexcept;

inline Code code_of(const Status& s) {
  return s.code();
}
template <class T>
Code code_of(const Result<T>& r) {
  return r.is_ok() ? Code::kOk : r.status().code();
}

// Calls `f` with allocations failing after `allowed`, and disarms again
// however `f` ends. An exception from `f` fails the test.
template <class F>
auto call_failing_after(std::size_t allowed, F& f, bool& refused) -> decltype(f()) {
  struct Disarm {
    bool& refused;
    ~Disarm() { refused = disarm_allocations(); }
  } disarm{refused};
  fail_allocations_after(allowed);
  return f();
}

// See the file comment. `expected` is what the call returns when memory is
// plentiful. Returns how many allocations the call needs. `f` itself must
// allocate nothing but through the call under test.
template <class F>
std::size_t exhaust(F&& f, Code expected) {
  for (std::size_t allowed = 0;; ++allowed) {
    bool refused = false;
    auto result = [&] {
      try {
        return call_failing_after(allowed, f, refused);
      } catch (const std::exception& e) {
        FAIL("with " << allowed << " allocations allowed, the call threw " << e.what());
        throw;
      }
    }();
    const Code got = code_of(result);
    if (!refused) {
      INFO("with every allocation it asked for, the call returned " << code_name(got));
      CHECK(got == expected);
      return allowed;
    }
    INFO("with " << allowed << " allocations allowed, the call returned " << code_name(got));
    CHECK((got == expected || got == Code::kOutOfMemory));
    if (got != expected && got != Code::kOutOfMemory) return allowed;
  }
}

}  // namespace kura::test
