#include "kura/core/status.hpp"

#include <cstdio>
#include <exception>

#include "no_throw_internal.hpp"

namespace kura {

std::string_view code_name(Code code) noexcept {
  switch (code) {
    case Code::kOk: return "ok";
    case Code::kInvalidName: return "invalid name";
    case Code::kNotFound: return "not found";
    case Code::kCorrupt: return "corrupt region";
    case Code::kOutOfRange: return "out of range";
    case Code::kNotAList: return "not a list";
    case Code::kInvalidArgument: return "invalid argument";
    case Code::kNoSpace: return "no space";
    case Code::kExists: return "exists";
    case Code::kPermission: return "permission denied";
    case Code::kIo: return "i/o error";
    case Code::kOutOfMemory: return "out of memory";
  }
  return "unknown";
}

std::string Status::to_string() const {
  if (is_ok()) return "ok";
  std::string s(code_name(code_));
  if (message_ == s) return s;  // Status::out_of_memory()
  s += ": ";
  s += message_;
  return s;
}

namespace detail {

Status callback_threw(const char* who) noexcept {
  try {
    throw;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::exception& e) {
    return no_throw([&] { return invalid_argument(std::string(who) + " threw an exception: " + e.what()); });
  } catch (...) {
    return no_throw([&] {
      return invalid_argument(std::string(who) + " threw an exception that is not a std::exception");
    });
  }
}

void check_failed(const char* what, const char* file, int line) noexcept {
  std::fprintf(stderr, "kura: check failed: %s at %s:%d\n", what, file, line);
  std::abort();
}
}  // namespace detail

}  // namespace kura
