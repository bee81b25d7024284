#include "from_r.hpp"

#include <cstring>
#include <span>
#include <string>
#include <vector>

#include "altrep.hpp"
#include "kura/core/layout.hpp"
#include "r_api.hpp"

namespace kura::r {
namespace {

std::size_t element_size(int type) {
  switch (type) {
    case REALSXP: return sizeof(double);
    case INTSXP:
    case LGLSXP: return sizeof(int);
    case RAWSXP: return 1;
    case CPLXSXP: return sizeof(Rcomplex);
    default: return 0;
  }
}

bool native_non_ascii(SEXP c) {
  if (c == NA_STRING || Rf_getCharCE(c) != CE_NATIVE) return false;
  const char* p = CHAR(c);
  for (int i = 0, n = LENGTH(c); i < n; ++i)
    if (static_cast<unsigned char>(p[i]) >= 0x80) return true;
  return false;
}

class ValueMaker {
 public:
  ValueMaker(Keep keep, bool utf8_locale) : keep_(keep), utf8_(utf8_locale) {}

  Value make(SEXP x, unsigned depth) {
    if (depth > kMaxDepth)
      fail("kura: share: the value is nested more than " + std::to_string(kMaxDepth) +
           " levels deep (lists and attributes), more than the format allows");
    if (!has_kura_form(x)) return rds(x);
    Value v;
    switch (TYPEOF(x)) {
      case NILSXP: return Value::null();
      case VECSXP: v = list(x, depth); break;
      case STRSXP: v = Value::strings_of(strings(x)); break;
      default: v = array(x); break;
    }
    attributes(x, v, depth);
    return v;
  }

 private:
  Value array(SEXP x) {
    // An unmodified shared vector is copied from its region, in its dtype.
    if (const Vec* kv = vec_of(x); kv != nullptr && !data_modified(x))
      return Value::array_borrowed(kv->kind == Kind::kBytes ? Dtype::kU8 : kv->dtype, kv->data,
                                   static_cast<std::uint64_t>(kv->length));
    const void* p = DATAPTR_OR_NULL(x);
    if (p == nullptr) p = materialized(x);
    Dtype d = Dtype::kF64;
    switch (TYPEOF(x)) {
      case REALSXP: d = is_integer64(x) ? Dtype::kI64 : Dtype::kF64; break;
      case INTSXP: d = Dtype::kI32; break;
      case LGLSXP: d = Dtype::kLgl; break;
      case RAWSXP: d = Dtype::kU8; break;
      case CPLXSXP: d = Dtype::kC128; break;
      default: fail("kura: share: internal error: not an atomic vector");
    }
    return Value::array_borrowed(d, p, static_cast<std::uint64_t>(XLENGTH(x)));
  }

  // The data of an ALTREP vector of another package (a compact sequence,
  // ...), which has no pointer to give until it is expanded.
  const void* materialized(SEXP x) {
    SEXP source = call_r([&]() -> SEXP {
      DATAPTR_RO(x);
      if (DATAPTR_OR_NULL(x) != nullptr) return x;
      SEXP copy = keep_.push(Rf_allocVector(TYPEOF(x), XLENGTH(x)));
      if (XLENGTH(x) > 0)
        std::memcpy(DATAPTR(copy), DATAPTR_RO(x),
                    static_cast<std::size_t>(XLENGTH(x)) * element_size(TYPEOF(x)));
      return copy;
    });
    return DATAPTR_OR_NULL(source);
  }

  bool is_integer64(SEXP x) {
    for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
      if (TAG(a) != R_ClassSymbol || TYPEOF(CAR(a)) != STRSXP) continue;
      for (const String& s : strings(CAR(a)))
        if (!s.na && s.bytes == "integer64") return true;
    }
    return false;
  }

  std::vector<String> strings(SEXP x) {
    const R_xlen_t n = XLENGTH(x);
    std::vector<String> out;
    out.reserve(static_cast<std::size_t>(n));
    if (const Vec* kv = vec_of(x); kv != nullptr && !data_modified(x)) {
      for (R_xlen_t i = 0; i < n; ++i) {
        const StringAt s = string_at(*kv, static_cast<std::uint64_t>(i));
        if (s.problem != nullptr)
          fail("kura: share: corrupt region " + kv->core->name + ": string " + std::to_string(i + 1) + ": " +
               s.problem);
        out.push_back(
            s.na ? String::NA()
                 : String{std::string(s.bytes, static_cast<std::size_t>(s.nbytes)), s.encoding, false});
      }
      return out;
    }
    SEXP source = x;
    if (vec_of(x) != nullptr) {
      source = R_altrep_data2(x);  // a modified shared vector: its strings are in data2
    } else if (ALTREP(x)) {
      source = call_r([&]() -> SEXP {
        SEXP copy = keep_.push(Rf_allocVector(STRSXP, n));
        for (R_xlen_t i = 0; i < n; ++i) SET_STRING_ELT(copy, i, STRING_ELT(x, i));
        return copy;
      });
    }
    if (!utf8_) source = in_utf8(source);
    for (R_xlen_t i = 0; i < n; ++i) {
      SEXP c = STRING_ELT(source, i);
      if (c == NA_STRING) {
        out.push_back(String::NA());
        continue;
      }
      const cetype_t ce = Rf_getCharCE(c);
      const Encoding e = ce == CE_LATIN1  ? Encoding::kLatin1
                         : ce == CE_BYTES ? Encoding::kBytes
                                          : Encoding::kUtf8;
      out.push_back(String{std::string(CHAR(c), static_cast<std::size_t>(LENGTH(c))), e, false});
    }
    return out;
  }

  // `s` with its native non-ASCII strings translated to UTF-8 (in a locale
  // that is not UTF-8).
  SEXP in_utf8(SEXP s) {
    const R_xlen_t n = XLENGTH(s);
    bool any = false;
    for (R_xlen_t i = 0; i < n && !any; ++i) any = native_non_ascii(STRING_ELT(s, i));
    if (!any) return s;
    return call_r([&]() -> SEXP {
      SEXP copy = keep_.push(Rf_allocVector(STRSXP, n));
      for (R_xlen_t i = 0; i < n; ++i) {
        SEXP c = STRING_ELT(s, i);
        if (native_non_ascii(c)) {
          const void* vmax = vmaxget();
          c = Rf_mkCharCE(Rf_translateCharUTF8(c), CE_UTF8);
          vmaxset(vmax);
        }
        SET_STRING_ELT(copy, i, c);
      }
      return copy;
    });
  }

  Value list(SEXP x, unsigned depth) {
    const R_xlen_t n = XLENGTH(x);
    std::vector<Value> children;
    children.reserve(static_cast<std::size_t>(n));
    for (R_xlen_t i = 0; i < n; ++i) children.push_back(make(VECTOR_ELT(x, i), depth + 1));
    return Value::list(std::move(children));
  }

  // A kura_tag attribute that FORMAT.md 4.4 accepts as a tag.
  static bool valid_tag(SEXP value, std::string& out) {
    if (TYPEOF(value) != STRSXP || XLENGTH(value) != 1 || ALTREP(value)) return false;
    SEXP c = STRING_ELT(value, 0);
    if (c == NA_STRING || LENGTH(c) < 1 || LENGTH(c) > 8) return false;
    for (const char* p = CHAR(c); *p != '\0'; ++p)
      if (*p < 0x21 || *p > 0x7E) return false;
    out = CHAR(c);
    return out != "rds3";
  }

  void attributes(SEXP x, Value& v, unsigned depth) {
    if (v.kind == Kind::kNull) return;
    const bool i64 = v.kind == Kind::kArray && v.dtype == Dtype::kI64;
    std::string tag;
    for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
      SEXP key = TAG(a);
      SEXP value = CAR(a);
      if (key == R_NamesSymbol && TYPEOF(value) == STRSXP && XLENGTH(value) == XLENGTH(x)) {
        v.names = strings(value);
        continue;
      }
      // The dtype says integer64; readers put the class back.
      if (key == R_ClassSymbol && i64 && TYPEOF(value) == STRSXP && XLENGTH(value) == 1 && !ALTREP(value) &&
          std::strcmp(CHAR(STRING_ELT(value, 0)), "integer64") == 0)
        continue;
      if (key == kura_tag_symbol && TYPEOF(x) == RAWSXP && valid_tag(value, tag)) continue;
      v.attrs.emplace_back(CHAR(PRINTNAME(key)), make(value, depth + 2));
    }
    if (!tag.empty()) {
      Value b = Value::bytes(tag, v.payload());
      b.names = std::move(v.names);
      b.attrs = std::move(v.attrs);
      v = std::move(b);
    }
  }

  Value rds(SEXP x) {
    // Shared vectors inside go in as their data: the region stands alone.
    struct ByData {
      bool before = serialize_by_name;
      ByData() { serialize_by_name = false; }
      ~ByData() { serialize_by_name = before; }
    } by_data;
    SEXP raw = call_r([&]() -> SEXP { return keep_.push(serialize_r(x)); });
    return Value::bytes("rds3", std::span(reinterpret_cast<const std::byte*>(RAW(raw)),
                                          static_cast<std::size_t>(XLENGTH(raw))));
  }

  Keep keep_;
  bool utf8_;
};

}  // namespace

SEXP serialize_r(SEXP x) {
  SEXP quoted = PROTECT(Rf_lang2(Rf_install("quote"), x));
  SEXP version = PROTECT(Rf_ScalarInteger(3));
  SEXP call = PROTECT(Rf_lang6(Rf_install("serialize"), quoted, R_NilValue, Rf_ScalarLogical(FALSE),
                               Rf_ScalarLogical(TRUE), version));
  SEXP out = Rf_eval(call, R_BaseNamespace);
  UNPROTECT(3);
  return out;
}

bool has_kura_form(SEXP x) noexcept {
  if (IS_S4_OBJECT(x)) return false;
  switch (TYPEOF(x)) {
    case NILSXP:
    case LGLSXP:
    case INTSXP:
    case REALSXP:
    case CPLXSXP:
    case STRSXP:
    case VECSXP:
    case RAWSXP: return true;
    default: return false;
  }
}

Value to_value(SEXP x, Keep keep, bool utf8_locale) {
  ValueMaker maker(keep, utf8_locale);
  return maker.make(x, 0);
}

}  // namespace kura::r
