// From R to a region: the kura::Value of an R object (share()).
//
// Atomic vectors become arrays (double f64, integer i32, logical lgl, raw
// u8, complex c128, bit64's integer64 i64) or strings nodes (with NA and the
// UTF-8, Latin-1 and bytes encodings); lists become lists, to any depth;
// names become names nodes and every other attribute an entry of the
// attribute list. An object with no kura form (a function, an environment,
// a formula, an S4 object) becomes a bytes node tagged rds3: its R
// serialization (version 3), in which shared vectors are written as their
// data, so the region stands on its own. A raw vector with a kura_tag
// attribute becomes a bytes node with that tag.
#pragma once

#include "kura/core/value.hpp"
#include "r_api.hpp"
#include "r_edge.hpp"

namespace kura::r {

// True when `x` has a form of its own in FORMAT.md: NULL, a logical,
// integer, double, complex, character or raw vector, or a list, and not an
// S4 object.
bool has_kura_form(SEXP x) noexcept;

// The Value of `x`. Arrays borrow their bytes from R's memory (or from the
// region a shared vector reads), so `x` and everything pushed on `keep` must
// stay alive and unchanged until the Value has been written. Strings of the
// native encoding are taken as UTF-8 when `utf8_locale`, and translated to
// UTF-8 otherwise. Errors (thrown as Error): values nested deeper than the
// format allows, a corrupt region a shared vector reads from, and what R
// raises while serializing or materializing.
Value to_value(SEXP x, Keep keep, bool utf8_locale);

// serialize(x, NULL, version = 3) (x quoted, never evaluated). R only: call
// inside call_r().
SEXP serialize_r(SEXP x);

}  // namespace kura::r
