// The R edge (STYLE.md "The R edge"): how rbridge's C++ code and R's
// longjmp-based errors meet.
//
// R reports errors and interrupts with longjmp, which skips C++ destructors.
// rbridge keeps to three rules:
//  1. Every function R calls (.Call entry points, ALTREP methods that do C++
//     work) runs its C++ body through entry(). entry() catches everything,
//     lets every C++ object die, and only then raises the R error or lets R
//     continue the jump it was making.
//  2. Inside that body, R functions that can fail (allocate, evaluate, raise)
//     are called through call_r() only. call_r() runs them under
//     R_UnwindProtect and turns R's jump into a C++ exception (RUnwind), so
//     the C++ frames between the call and entry() unwind properly.
//  3. The function given to call_r() holds no C++ object with a destructor
//     while it calls R: it reads its inputs through references and pointers
//     and hands R objects back. R objects that must outlive one call_r() are
//     pushed on the entry's Keep list inside the same call.
// ALTREP methods that never fail (Length, Elt of numbers) need none of this.
#pragma once

#include <csetjmp>
#include <exception>
#include <string>
#include <string_view>
#include <type_traits>
#include <vector>

#include "kura/core/status.hpp"
#include "r_api.hpp"

namespace kura::r {

// R jumped out of a call_r(): unwinds the C++ frames up to entry(), which
// continues the jump with R_ContinueUnwind(token).
struct RUnwind {
  SEXP token;
};

// An error to raise in R once the C++ frames are gone. The message is the
// whole text R shows after "Error: ".
class Error : public std::exception {
 public:
  explicit Error(std::string message) : message_(std::move(message)) {}
  const char* what() const noexcept override { return message_.c_str(); }

 private:
  std::string message_;
};

// Throws Error("kura: <context>: <status>").
[[noreturn]] void fail(const Status& status, std::string_view context);
[[noreturn]] void fail(std::string message);

namespace detail {
inline constexpr int kMaxCallDepth = 32;
// How many call_r() are running (they nest when R calls back into kura, as
// when unserializing a region's rds3 node meets a shared object).
extern int call_depth;
// The continuation token of each nesting level, made and preserved when the
// package is loaded (so that making one never fails inside C++ code).
extern SEXP unwind_tokens[kMaxCallDepth];
// Makes the continuation tokens and installs the symbols above; called once,
// from R_init_kura.
void init_edge();

template <class F>
SEXP trampoline(void* f) {
  return (*static_cast<F*>(f))();
}
[[noreturn]] void jump_back(void* jmpbuf);
void on_unwind(void* jmpbuf, Rboolean jump);
// Copies `text` into `out` (always terminated, truncated to `size`).
void copy_message(char* out, std::size_t size, const char* text) noexcept;
}  // namespace detail

// Runs `f`, a callable returning SEXP that calls R, so that an R error or
// interrupt inside it unwinds the C++ frames of the caller (as RUnwind)
// instead of skipping them. `f` itself must hold no C++ object with a
// destructor while it calls R (rule 3 above). Returns what `f` returned;
// the result is unprotected.
template <class F>
SEXP call_r(F&& f) {
  using Fn = std::remove_reference_t<F>;
  if (detail::call_depth >= detail::kMaxCallDepth) fail("kura: R and kura call each other too deeply");
  SEXP token = detail::unwind_tokens[detail::call_depth];
  struct Depth {
    Depth() { ++detail::call_depth; }
    ~Depth() { --detail::call_depth; }
    Depth(const Depth&) = delete;
    Depth& operator=(const Depth&) = delete;
  } depth;
  std::jmp_buf jmpbuf;
  if (setjmp(jmpbuf) != 0) throw RUnwind{token};
  SEXP out =
      R_UnwindProtect(&detail::trampoline<Fn>, static_cast<void*>(&f), &detail::on_unwind, &jmpbuf, token);
  // R_UnwindProtect keeps the result in the (preserved) token: let it go, or
  // the last object made at this depth would live until the next call.
  SETCAR(token, R_NilValue);
  return out;
}

// The body of a function R calls: runs `body` (returning SEXP), then, with
// every C++ object of the body gone, either returns its value, raises the
// R error it failed with, or continues the R jump that interrupted it.
// Nothing with a destructor may live in the caller's frame around entry().
template <class F>
SEXP entry(F&& body) noexcept {
  SEXP out = R_NilValue;
  SEXP cont = nullptr;
  char message[2048];
  message[0] = '\0';
  try {
    out = body();
  } catch (const RUnwind& u) {
    cont = u.token;
  } catch (const Error& e) {
    detail::copy_message(message, sizeof message, e.what());
  } catch (const std::bad_alloc&) {
    detail::copy_message(message, sizeof message, "kura: out of memory");
  } catch (const std::exception& e) {
    detail::copy_message(message, sizeof message, "kura: internal error: ");
    detail::copy_message(message + std::char_traits<char>::length(message),
                         sizeof message - std::char_traits<char>::length(message), e.what());
  } catch (...) {
    detail::copy_message(message, sizeof message, "kura: internal error (unknown C++ exception)");
  }
  if (cont != nullptr) R_ContinueUnwind(cont);
  if (message[0] != '\0') Rf_errorcall(R_NilValue, "%s", message);
  return out;
}

// The symbol kura_tag (the tag of a bytes node kept as an attribute of the
// raw vector), installed when the package is loaded.
extern SEXP kura_tag_symbol;

// R objects made during one entry() that must survive from one call_r() to
// the next: a pairlist whose head the entry point protected before any C++
// object existed. push() allocates, so it is called inside call_r() only.
class Keep {
 public:
  explicit Keep(SEXP head) noexcept : head_(head) {}
  // Protects `x` until the entry returns. Only inside call_r().
  SEXP push(SEXP x) const {
    SETCDR(head_, Rf_cons(x, CDR(head_)));
    return x;
  }

 private:
  SEXP head_;
};

// A character vector of `xs`, each marked `encoding`; unprotected. Calls R:
// only inside call_r().
SEXP strings_to_r(const std::vector<std::string>& xs, cetype_t encoding = CE_NATIVE);

}  // namespace kura::r
