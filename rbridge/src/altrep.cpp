#include "altrep.hpp"

#include <algorithm>
#include <bit>
#include <climits>
#include <complex>
#include <cstring>

#include "r_api.hpp"
#include "r_edge.hpp"
#include "to_r.hpp"
#include "tracking.hpp"

namespace kura::r {

bool serialize_by_name = true;
std::vector<std::string>* collected_names = nullptr;
std::string package_version = "unknown";

namespace {

R_altrep_class_t real_class;
R_altrep_class_t integer_class;
R_altrep_class_t logical_class;
R_altrep_class_t raw_class;
R_altrep_class_t complex_class;
R_altrep_class_t string_class;
SEXP vec_tag = nullptr;  // tag of every data1 external pointer

// Vectors smaller than this are copied whole when R asks to write them.
constexpr std::uint64_t kPrivateMappingMin = 64 * 1024;

// What R gets as the data pointer of an empty vector: not null, never read.
alignas(64) std::byte empty_block[64];

Vec& vec(SEXP x) noexcept {
  return *static_cast<Vec*>(R_ExternalPtrAddr(R_altrep_data1(x)));
}

template <class T>
T load(const std::byte* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// --- Elements read from the region, converted to R's type ---------------------

double real_from_region(const Vec& v, R_xlen_t i) noexcept {
  const std::byte* p = v.data + static_cast<std::size_t>(i) * dtype_width(v.dtype);
  switch (v.dtype) {
    case Dtype::kF64: return load<double>(p);
    case Dtype::kI64: {
      const auto x = load<std::int64_t>(p);
      if (v.i64_bits) return std::bit_cast<double>(x);
      return x == INT64_MIN ? NA_REAL : static_cast<double>(x);  // INT64_MIN is bit64's NA
    }
    case Dtype::kU64: return static_cast<double>(load<std::uint64_t>(p));
    case Dtype::kU32: return static_cast<double>(load<std::uint32_t>(p));
    case Dtype::kF32: return static_cast<double>(load<float>(p));
    default: return NA_REAL;
  }
}

int integer_from_region(const Vec& v, R_xlen_t i) noexcept {
  const std::byte* p = v.data + static_cast<std::size_t>(i) * dtype_width(v.dtype);
  switch (v.dtype) {
    case Dtype::kI32: return load<std::int32_t>(p);
    case Dtype::kI8: return load<std::int8_t>(p);
    case Dtype::kU16: return load<std::uint16_t>(p);
    case Dtype::kI16: return load<std::int16_t>(p);
    default: return NA_INTEGER;
  }
}

int logical_from_region(const Vec& v, R_xlen_t i) noexcept {
  return load<std::int32_t>(v.data + static_cast<std::size_t>(i) * 4);
}

Rbyte raw_from_region(const Vec& v, R_xlen_t i) noexcept {
  return load<Rbyte>(v.data + i);
}

Rcomplex complex_from_region(const Vec& v, R_xlen_t i) noexcept {
  return load<Rcomplex>(v.data + static_cast<std::size_t>(i) * 16);
}

// The memory R reads `x` from now: the private mapping after a writable
// request, else a materialized copy, else the region when R can read it in
// place; nullptr when elements must be converted one by one.
const void* current(SEXP x, const Vec& v) noexcept {
  if (v.priv.data != nullptr) return v.priv.data;
  SEXP d2 = R_altrep_data2(x);
  if (d2 != R_NilValue) return DATAPTR_RO(d2);
  if (!in_place(v)) return nullptr;
  return v.length == 0 ? empty_block : v.data;
}

// The region's memory, for a reader of the whole vector (not an element):
// its pages are mapped in at once the first time (altrep.hpp).
const void* whole_in_place(Vec& v) noexcept {
  if (!v.populated) {
    populate_read(v.data, v.data_size);
    v.populated = true;
  }
  return v.data;
}

// --- Methods of every class -------------------------------------------------------

R_xlen_t length_method(SEXP x) {
  return vec(x).length;
}

Rboolean inspect_method(SEXP x, int, int, int, void (*)(SEXP, int, int, int)) {
  const Vec& v = vec(x);
  Rprintf(" kura %s%s%s\n", v.name.c_str(), v.steps.empty() ? "" : " (attribute)",
          v.modified   ? " (modified)"
          : v.writable ? " (writable)"
                       : "");
  return TRUE;
}

// A shared vector serializes as where it is: c(name, flags, tag, steps...),
// where flags holds "b" when an i64 is read as integer64 and "a" when the
// attributes are still those of the region, and tag is kStateTag and this
// package's version (altrep.hpp). R writes the attributes next to it. A
// modified vector, or any when serialize_by_name is off, serializes as its
// data (NULL here).
SEXP serialized_state_method(SEXP x) {
  Vec& v = vec(x);
  if (!serialize_by_name || data_modified(x)) return nullptr;
  return entry([&]() -> SEXP {
    if (collected_names != nullptr) collected_names->push_back(v.name);
    const bool attrs_same = attributes_unchanged(x);
    const std::string tag = std::string(kStateTag) + package_version;
    return call_r([&]() -> SEXP {
      const R_xlen_t n = 3 + static_cast<R_xlen_t>(v.steps.size());
      SEXP s = PROTECT(Rf_allocVector(STRSXP, n));
      SET_STRING_ELT(s, 0, Rf_mkCharLenCE(v.name.data(), static_cast<int>(v.name.size()), CE_UTF8));
      const char* flags = v.i64_bits ? (attrs_same ? "ab" : "b") : (attrs_same ? "a" : "");
      SET_STRING_ELT(s, 1, Rf_mkChar(flags));
      SET_STRING_ELT(s, 2, Rf_mkCharLenCE(tag.data(), static_cast<int>(tag.size()), CE_UTF8));
      for (R_xlen_t k = 3; k < n; ++k) {
        const std::string& step = v.steps[static_cast<std::size_t>(k - 3)];
        SET_STRING_ELT(s, k, Rf_mkCharLenCE(step.data(), static_cast<int>(step.size()), CE_BYTES));
      }
      UNPROTECT(1);
      return s;
    });
  });
}

template <int Type>
SEXP unserialize_method(SEXP, SEXP state, SEXP attr, int objf, int levs) {
  return unserialize_shared(Type, state, attr, objf, levs);
}

// A copy of an unmodified shared vector is another view of the same node (R
// copies the attributes); a modified one is copied by R (NULL here).
SEXP duplicate_method(SEXP x, Rboolean) {
  if (data_modified(x)) return nullptr;
  const Vec& v = vec(x);
  return entry([&]() -> SEXP {
    auto clone = std::make_unique<Vec>();
    clone->core = v.core;
    clone->data = v.data;
    clone->data_offset = v.data_offset;
    clone->data_size = v.data_size;
    clone->length = v.length;
    clone->kind = v.kind;
    clone->dtype = v.dtype;
    clone->i64_bits = v.i64_bits;
    clone->populated = v.populated;  // the same mapping
    clone->name = v.name;
    clone->steps = v.steps;
    return call_r([&]() -> SEXP {
      SEXP y = PROTECT(new_vector(clone));
      R_SetExternalPtrProtected(R_altrep_data1(y), R_ExternalPtrProtected(R_altrep_data1(x)));
      UNPROTECT(1);
      return y;
    });
  });
}

// --- Numbers --------------------------------------------------------------------

// R asks for the data pointer. Read-only: the region itself when R can read
// it in place, its pages mapped in at once (whole_in_place). Writable: a private copy-on-write mapping of the
// block, so a write copies only its pages. Where neither works (a dtype R cannot read in place, a block under
// 64 KiB, or the region's file was unlinked), an ordinary R copy in data2.
void* dataptr_method(SEXP x, Rboolean writable) {
  Vec& v = vec(x);
  if (v.priv.data != nullptr) return v.priv.data;
  SEXP d2 = R_altrep_data2(x);
  if (d2 != R_NilValue) {
    if (writable) v.writable = true;
    return DATAPTR(d2);
  }
  if (v.length == 0) return empty_block;
  if (in_place(v)) {
    if (!writable) return const_cast<void*>(whole_in_place(v));
    // Below kPrivateMappingMin an ordinary copy is cheaper than a mapping
    // (and many small vectors must not exhaust the process's mappings).
    if (v.data_size >= kPrivateMappingMin &&
        map_private(*v.core, v.data_offset, v.data_size, v.priv).is_ok()) {
      v.writable = true;
      return v.priv.data;
    }
  }
  SEXP copy = PROTECT(plain_copy(v));
  R_set_altrep_data2(x, copy);
  UNPROTECT(1);
  if (writable) v.writable = true;
  return DATAPTR(copy);
}

const void* dataptr_or_null_method(SEXP x) {
  Vec& v = vec(x);
  const void* p = current(x, v);
  return p != nullptr && p == v.data ? whole_in_place(v) : p;
}

template <class T, T (*FromRegion)(const Vec&, R_xlen_t)>
T elt_method(SEXP x, R_xlen_t i) {
  const Vec& v = vec(x);
  if (const void* p = current(x, v)) return static_cast<const T*>(p)[i];
  return FromRegion(v, i);
}

template <class T, T (*FromRegion)(const Vec&, R_xlen_t)>
R_xlen_t get_region_method(SEXP x, R_xlen_t i, R_xlen_t n, T* buf) {
  const Vec& v = vec(x);
  if (i < 0 || i >= v.length || n <= 0) return 0;
  n = std::min(n, v.length - i);
  if (const void* p = current(x, v)) {
    std::memcpy(buf, static_cast<const T*>(p) + i, static_cast<std::size_t>(n) * sizeof(T));
  } else {
    for (R_xlen_t k = 0; k < n; ++k) buf[k] = FromRegion(v, i + k);
  }
  return n;
}

// --- Strings ---------------------------------------------------------------------

SEXP string_from_region(const Vec& v, R_xlen_t i) {
  const StringAt s = string_at(v, static_cast<std::uint64_t>(i));
  if (s.problem != nullptr)
    Rf_error("kura: corrupt %s%s: string %lld: %s", v.core != nullptr ? "region " : "value",
             v.core != nullptr ? v.core->name.c_str() : "", static_cast<long long>(i + 1), s.problem);
  if (s.na) return NA_STRING;
  return Rf_mkCharLenCE(s.bytes, s.nbytes, r_encoding(s.encoding));
}

// The strings as an ordinary STRSXP in data2, made on first need.
SEXP materialized_strings(SEXP x) {
  SEXP d2 = R_altrep_data2(x);
  if (d2 != R_NilValue) return d2;
  SEXP out = PROTECT(plain_copy(vec(x)));
  R_set_altrep_data2(x, out);
  UNPROTECT(1);
  return out;
}

SEXP string_elt_method(SEXP x, R_xlen_t i) {
  SEXP d2 = R_altrep_data2(x);
  if (d2 != R_NilValue) return STRING_ELT(d2, i);
  return string_from_region(vec(x), i);
}

void string_set_elt_method(SEXP x, R_xlen_t i, SEXP value) {
  SEXP d2 = materialized_strings(x);
  vec(x).writable = true;
  SET_STRING_ELT(d2, i, value);
}

void* string_dataptr_method(SEXP x, Rboolean writable) {
  SEXP d2 = materialized_strings(x);
  if (writable) vec(x).writable = true;
  return STRING_PTR(d2);
}

const void* string_dataptr_or_null_method(SEXP x) {
  SEXP d2 = R_altrep_data2(x);
  return d2 == R_NilValue ? nullptr : STRING_PTR_RO(d2);
}

// --- Registration -------------------------------------------------------------

void common_methods(R_altrep_class_t cls) {
  R_set_altrep_Length_method(cls, length_method);
  R_set_altrep_Inspect_method(cls, inspect_method);
  R_set_altrep_Serialized_state_method(cls, serialized_state_method);
  R_set_altrep_Duplicate_method(cls, duplicate_method);
}

void numeric_methods(R_altrep_class_t cls) {
  common_methods(cls);
  R_set_altvec_Dataptr_method(cls, dataptr_method);
  R_set_altvec_Dataptr_or_null_method(cls, dataptr_or_null_method);
}

void vec_finalizer(SEXP ptr) {
  delete static_cast<Vec*>(R_ExternalPtrAddr(ptr));
  R_ClearExternalPtr(ptr);
}

}  // namespace

void register_classes(DllInfo* dll) {
  vec_tag = Rf_install("kura_vec");

  real_class = R_make_altreal_class("kura_real", "kura", dll);
  numeric_methods(real_class);
  R_set_altrep_UnserializeEX_method(real_class, unserialize_method<REALSXP>);
  R_set_altreal_Elt_method(real_class, elt_method<double, real_from_region>);
  R_set_altreal_Get_region_method(real_class, get_region_method<double, real_from_region>);

  integer_class = R_make_altinteger_class("kura_integer", "kura", dll);
  numeric_methods(integer_class);
  R_set_altrep_UnserializeEX_method(integer_class, unserialize_method<INTSXP>);
  R_set_altinteger_Elt_method(integer_class, elt_method<int, integer_from_region>);
  R_set_altinteger_Get_region_method(integer_class, get_region_method<int, integer_from_region>);

  logical_class = R_make_altlogical_class("kura_logical", "kura", dll);
  numeric_methods(logical_class);
  R_set_altrep_UnserializeEX_method(logical_class, unserialize_method<LGLSXP>);
  R_set_altlogical_Elt_method(logical_class, elt_method<int, logical_from_region>);
  R_set_altlogical_Get_region_method(logical_class, get_region_method<int, logical_from_region>);

  raw_class = R_make_altraw_class("kura_raw", "kura", dll);
  numeric_methods(raw_class);
  R_set_altrep_UnserializeEX_method(raw_class, unserialize_method<RAWSXP>);
  R_set_altraw_Elt_method(raw_class, elt_method<Rbyte, raw_from_region>);
  R_set_altraw_Get_region_method(raw_class, get_region_method<Rbyte, raw_from_region>);

  complex_class = R_make_altcomplex_class("kura_complex", "kura", dll);
  numeric_methods(complex_class);
  R_set_altrep_UnserializeEX_method(complex_class, unserialize_method<CPLXSXP>);
  R_set_altcomplex_Elt_method(complex_class, elt_method<Rcomplex, complex_from_region>);
  R_set_altcomplex_Get_region_method(complex_class, get_region_method<Rcomplex, complex_from_region>);

  string_class = R_make_altstring_class("kura_string", "kura", dll);
  common_methods(string_class);
  R_set_altrep_UnserializeEX_method(string_class, unserialize_method<STRSXP>);
  R_set_altvec_Dataptr_method(string_class, string_dataptr_method);
  R_set_altvec_Dataptr_or_null_method(string_class, string_dataptr_or_null_method);
  R_set_altstring_Elt_method(string_class, string_elt_method);
  R_set_altstring_Set_elt_method(string_class, string_set_elt_method);
}

Vec* vec_of(SEXP x) noexcept {
  if (!ALTREP(x)) return nullptr;
  for (R_altrep_class_t cls :
       {real_class, integer_class, logical_class, raw_class, complex_class, string_class})
    if (R_altrep_inherits(x, cls)) return &vec(x);
  return nullptr;
}

int r_type(const Vec& v) noexcept {
  if (v.kind == Kind::kStrings) return STRSXP;
  if (v.kind == Kind::kBytes) return RAWSXP;
  switch (v.dtype) {
    case Dtype::kU8: return RAWSXP;
    case Dtype::kI8:
    case Dtype::kU16:
    case Dtype::kI16:
    case Dtype::kI32: return INTSXP;
    case Dtype::kC128: return CPLXSXP;
    case Dtype::kLgl: return LGLSXP;
    default: return REALSXP;  // u32, u64, i64, f32, f64
  }
}

bool in_place(const Vec& v) noexcept {
  if (v.kind == Kind::kBytes) return true;
  if (v.kind != Kind::kArray) return false;
  switch (v.dtype) {
    case Dtype::kF64:
    case Dtype::kI32:
    case Dtype::kLgl:
    case Dtype::kU8:
    case Dtype::kC128: return true;
    case Dtype::kI64: return v.i64_bits;
    default: return false;
  }
}

SEXP new_vector(std::unique_ptr<Vec>& v) {
  R_altrep_class_t cls;
  switch (r_type(*v)) {
    case REALSXP: cls = real_class; break;
    case INTSXP: cls = integer_class; break;
    case LGLSXP: cls = logical_class; break;
    case RAWSXP: cls = raw_class; break;
    case CPLXSXP: cls = complex_class; break;
    default: cls = string_class; break;
  }
  // The pointer owns the Vec from the moment it exists: made empty, given a
  // finalizer, and only then handed the Vec (nothing below can fail).
  SEXP ptr = PROTECT(R_MakeExternalPtr(nullptr, vec_tag, R_NilValue));
  R_RegisterCFinalizerEx(ptr, vec_finalizer, FALSE);
  R_SetExternalPtrAddr(ptr, v.release());
  SEXP x = R_new_altrep(cls, ptr, R_NilValue);
  UNPROTECT(1);
  return x;
}

SEXP plain_copy(const Vec& v) {
  const int type = r_type(v);
  SEXP out = PROTECT(Rf_allocVector(type, v.length));
  const R_xlen_t n = v.length;
  if (in_place(v)) {
    if (n > 0) std::memcpy(DATAPTR(out), v.data, static_cast<std::size_t>(v.data_size));
  } else if (type == REALSXP) {
    double* p = REAL(out);
    for (R_xlen_t i = 0; i < n; ++i) p[i] = real_from_region(v, i);
  } else if (type == INTSXP) {
    int* p = INTEGER(out);
    for (R_xlen_t i = 0; i < n; ++i) p[i] = integer_from_region(v, i);
  } else if (type == STRSXP) {
    for (R_xlen_t i = 0; i < n; ++i) SET_STRING_ELT(out, i, string_from_region(v, i));
  }
  UNPROTECT(1);
  return out;
}

bool data_modified(SEXP x) noexcept {
  Vec& v = vec(x);
  if (v.modified || !v.writable) return v.modified;
  if (v.priv.data != nullptr) {
    switch (private_pages_written(v.priv)) {
      case PagesWritten::kClean: v.modified = false; break;
      case PagesWritten::kWritten: v.modified = true; break;
      case PagesWritten::kUnknown:  // compare the bytes instead
        v.modified = std::memcmp(v.priv.data, v.data, static_cast<std::size_t>(v.data_size)) != 0;
        break;
    }
  } else if (SEXP d2 = R_altrep_data2(x); d2 != R_NilValue) {
    v.modified = !same_elements(d2, v);
  }
  return v.modified;
}

bool same_elements(SEXP x, const Vec& v) noexcept {
  const int type = r_type(v);
  if (ALTREP(x) || TYPEOF(x) != type || XLENGTH(x) != v.length) return false;
  const R_xlen_t n = v.length;
  switch (type) {
    case REALSXP:
      for (R_xlen_t i = 0; i < n; ++i) {
        const double a = REAL(x)[i], b = real_from_region(v, i);
        if (std::memcmp(&a, &b, sizeof a) != 0) return false;
      }
      return true;
    case INTSXP:
      for (R_xlen_t i = 0; i < n; ++i)
        if (INTEGER(x)[i] != integer_from_region(v, i)) return false;
      return true;
    case LGLSXP:
      for (R_xlen_t i = 0; i < n; ++i)
        if (LOGICAL(x)[i] != logical_from_region(v, i)) return false;
      return true;
    case RAWSXP: return n == 0 || std::memcmp(RAW(x), v.data, static_cast<std::size_t>(n)) == 0;
    case CPLXSXP: return n == 0 || std::memcmp(COMPLEX(x), v.data, static_cast<std::size_t>(n) * 16) == 0;
    case STRSXP:
      for (R_xlen_t i = 0; i < n; ++i) {
        SEXP c = STRING_ELT(x, i);
        const StringAt s = string_at(v, static_cast<std::uint64_t>(i));
        if (s.problem != nullptr) return false;
        if (s.na || c == NA_STRING) {
          if (s.na != (c == NA_STRING)) return false;
          continue;
        }
        const cetype_t ce = Rf_getCharCE(c);
        const bool encoding_ok =
            s.encoding == Encoding::kUtf8 ? (ce == CE_UTF8 || ce == CE_NATIVE) : ce == r_encoding(s.encoding);
        if (!encoding_ok || LENGTH(c) != s.nbytes ||
            std::memcmp(CHAR(c), s.bytes, static_cast<std::size_t>(s.nbytes)) != 0)
          return false;
      }
      return true;
    default: return false;
  }
}

StringAt string_at(const Vec& v, std::uint64_t i) noexcept {
  StringAt s;
  const auto length = static_cast<std::uint64_t>(v.length);
  if (i >= length) {
    s.problem = "index past the end";
    return s;
  }
  const std::uint64_t packed_start = align64(16 * length);
  if (v.data_size < packed_start) {
    s.problem = "data block smaller than its entries";
    return s;
  }
  StringEntry e;
  std::memcpy(&e, v.data + 16 * i, sizeof e);
  if (e.nbytes < -1) {
    s.problem = "entry with a negative length";
    return s;
  }
  if (e.encoding > 2) {
    s.problem = "entry with an unknown encoding";
    return s;
  }
  s.encoding = static_cast<Encoding>(e.encoding);
  if (e.nbytes == -1) {
    s.na = true;
    return s;
  }
  const std::uint64_t packed_size = v.data_size - packed_start;
  const auto nbytes = static_cast<std::uint64_t>(e.nbytes);
  if (e.offset > packed_size || nbytes + 1 > packed_size - e.offset) {
    s.problem = "entry runs past the packed bytes";
    return s;
  }
  const char* p = reinterpret_cast<const char*>(v.data + packed_start + e.offset);
  if (p[nbytes] != '\0') {
    s.problem = "string not zero-terminated";
    return s;
  }
  s.bytes = p;
  s.nbytes = e.nbytes;
  return s;
}

cetype_t r_encoding(Encoding e) noexcept {
  switch (e) {
    case Encoding::kLatin1: return CE_LATIN1;
    case Encoding::kBytes: return CE_BYTES;
    default: return CE_UTF8;
  }
}

}  // namespace kura::r
