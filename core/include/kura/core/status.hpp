// Errors as values: kura::Status and kura::Result<T>.
//
// Every public function of kura reports failure through these types; no
// exception crosses a public boundary. A Status is a code from a closed list,
// a human-readable message, and (for OS failures) the errno that caused it.
#pragma once

#include <cstdlib>
#include <string>
#include <string_view>
#include <utility>
#include <variant>

namespace kura {

enum class Code : int {
  kOk = 0,
  kInvalidName,      // a name that does not match FORMAT.md section 1
  kNotFound,         // a well-formed name whose region does not exist
  kCorrupt,          // a region that breaks FORMAT.md (including version)
  kOutOfRange,       // an index past the end of a list
  kNotAList,         // a path that steps into something that is not a list
  kInvalidArgument,  // a caller's value that cannot be laid out or used
  kNoSpace,          // not enough room in /dev/shm
  kExists,           // an exclusive create hit an existing name
  kPermission,       // refused by the OS or by kura's own checks
  kIo,               // any other OS failure
  kOutOfMemory,      // an allocation failed; nothing was changed
};

// Returns a short stable word for `code`, such as "corrupt".
std::string_view code_name(Code code) noexcept;

class [[nodiscard]] Status {
 public:
  Status() noexcept = default;
  Status(Code code, std::string message, int sys_errno = 0)
      : code_(code), message_(std::move(message)), errno_(sys_errno) {}

  static Status ok() noexcept { return Status(); }
  // Out of memory. Allocates nothing (the message fits the string's own
  // buffer), so it can be made while memory is exhausted.
  static Status out_of_memory() noexcept { return Status(Code::kOutOfMemory, "out of memory"); }

  bool is_ok() const noexcept { return code_ == Code::kOk; }
  explicit operator bool() const noexcept { return is_ok(); }
  Code code() const noexcept { return code_; }
  const std::string& message() const noexcept { return message_; }
  // The OS errno behind the failure, or 0.
  int sys_errno() const noexcept { return errno_; }
  // "corrupt: <message>", or "ok".
  std::string to_string() const;

 private:
  Code code_ = Code::kOk;
  std::string message_;
  int errno_ = 0;
};

// Shorthands for the common codes.
inline Status invalid_name(std::string m) {
  return {Code::kInvalidName, std::move(m)};
}
inline Status corrupt(std::string m) {
  return {Code::kCorrupt, std::move(m)};
}
inline Status invalid_argument(std::string m) {
  return {Code::kInvalidArgument, std::move(m)};
}

// Aborts with a message when a programming error is detected (a broken
// invariant of kura's own, never bad input from another process).
#define KURA_CHECK(cond)                                                  \
  do {                                                                    \
    if (!(cond)) ::kura::detail::check_failed(#cond, __FILE__, __LINE__); \
  } while (0)

namespace detail {
[[noreturn]] void check_failed(const char* what, const char* file, int line) noexcept;
}

// Either a T or a non-ok Status.
template <class T>
class [[nodiscard]] Result {
 public:
  Result(T value) : v_(std::move(value)) {}        // NOLINT: implicit by design
  Result(Status status) : v_(std::move(status)) {  // NOLINT: implicit by design
    KURA_CHECK(!std::get<Status>(v_).is_ok());
  }

  bool is_ok() const noexcept { return v_.index() == 0; }
  explicit operator bool() const noexcept { return is_ok(); }

  // The error; only valid when !is_ok().
  const Status& status() const& {
    KURA_CHECK(!is_ok());
    return std::get<Status>(v_);
  }
  Status status() && {
    KURA_CHECK(!is_ok());
    return std::move(std::get<Status>(v_));
  }
  // The value; aborts when !is_ok().
  T& value() & {
    KURA_CHECK(is_ok());
    return std::get<T>(v_);
  }
  const T& value() const& {
    KURA_CHECK(is_ok());
    return std::get<T>(v_);
  }
  // On an rvalue the value is moved out and returned by value, so that a
  // reference into a temporary Result never outlives it.
  T value() && {
    KURA_CHECK(is_ok());
    return std::get<T>(std::move(v_));
  }
  T* operator->() { return &value(); }
  const T* operator->() const { return &value(); }
  T& operator*() & { return value(); }
  const T& operator*() const& { return value(); }
  T operator*() && { return std::move(*this).value(); }

 private:
  std::variant<T, Status> v_;
};

}  // namespace kura

// Returns the Status of `expr` from the enclosing function when it fails.
#define KURA_RETURN_IF_ERROR(expr)        \
  do {                                    \
    ::kura::Status kura_s_ = (expr);      \
    if (!kura_s_.is_ok()) return kura_s_; \
  } while (0)

#define KURA_CONCAT_INNER(a, b) a##b
#define KURA_CONCAT(a, b) KURA_CONCAT_INNER(a, b)
// `KURA_ASSIGN_OR_RETURN(auto x, f());` binds the value of a Result or
// returns its Status from the enclosing function.
#define KURA_ASSIGN_OR_RETURN(lhs, expr) KURA_ASSIGN_OR_RETURN_IMPL(KURA_CONCAT(kura_r_, __LINE__), lhs, expr)
#define KURA_ASSIGN_OR_RETURN_IMPL(tmp, lhs, expr)  \
  auto tmp = (expr);                                \
  if (!tmp.is_ok()) return std::move(tmp).status(); \
  lhs = std::move(tmp).value()
