#include "r_edge.hpp"

#include <cstring>

namespace kura::r {

SEXP kura_tag_symbol = nullptr;

void fail(const Status& status, std::string_view context) {
  std::string m = "kura: ";
  m += context;
  m += ": ";
  m += status.to_string();
  throw Error(std::move(m));
}

void fail(std::string message) {
  throw Error(std::move(message));
}

namespace detail {

int call_depth = 0;
SEXP unwind_tokens[kMaxCallDepth] = {};

void init_edge() {
  kura_tag_symbol = Rf_install("kura_tag");
  for (SEXP& token : unwind_tokens) {
    if (token != nullptr) continue;
    token = R_MakeUnwindCont();
    R_PreserveObject(token);
  }
}

void jump_back(void* jmpbuf) {
  std::longjmp(*static_cast<std::jmp_buf*>(jmpbuf), 1);
}

void on_unwind(void* jmpbuf, Rboolean jump) {
  if (jump) jump_back(jmpbuf);
}

void copy_message(char* out, std::size_t size, const char* text) noexcept {
  if (size == 0) return;
  std::size_t n = std::strlen(text);
  if (n >= size) n = size - 1;
  std::memcpy(out, text, n);
  out[n] = '\0';
}

}  // namespace detail

SEXP strings_to_r(const std::vector<std::string>& xs, cetype_t encoding) {
  SEXP out = PROTECT(Rf_allocVector(STRSXP, static_cast<R_xlen_t>(xs.size())));
  for (std::size_t i = 0; i < xs.size(); ++i)
    SET_STRING_ELT(out, static_cast<R_xlen_t>(i), Rf_mkCharCE(xs[i].c_str(), encoding));
  UNPROTECT(1);
  return out;
}

}  // namespace kura::r
