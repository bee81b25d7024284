// How core's noexcept functions keep exceptions in: allocation failures
// become Status::out_of_memory(), and an exception thrown by a caller's
// callback (a walk visitor, a copy hook) becomes a Status naming it.
// Internal: the public contract is in each function's header comment.
#pragma once

#include <new>
#include <stdexcept>
#include <utility>

#include "kura/core/status.hpp"

namespace kura::detail {

// Runs `f` (which returns a Status or a Result) and returns what it returns;
// std::bad_alloc, and std::length_error (a size no allocation can meet),
// become Status::out_of_memory(). Core's own code throws nothing else.
template <class F>
auto no_throw(F&& f) noexcept -> decltype(f()) {
  try {
    return std::forward<F>(f)();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::length_error&) {
    return Status::out_of_memory();
  }
}

// Inside a catch handler: the exception being handled, thrown by the
// caller's callback `who` ("the walk visitor"), as a Status. std::bad_alloc
// is OutOfMemory; anything else is InvalidArgument with the exception's
// what(). Allocates only for the message, and is OutOfMemory when that fails.
Status callback_threw(const char* who) noexcept;

// Calls a caller's callback `f` that returns a Status, turning what it
// throws into a Status (callback_threw).
template <class F, class... Args>
Status call_callback(const char* who, F& f, Args&&... args) noexcept {
  try {
    return f(std::forward<Args>(args)...);
  } catch (...) {
    return callback_threw(who);
  }
}

}  // namespace kura::detail
