// The functions R/kura.R calls through .Call. Each is a boundary between R
// and C++ (r_edge.hpp): nothing is thrown out of them and R errors are raised
// only once every C++ object is gone.
#pragma once

#include "r_api.hpp"

extern "C" {

// share(x): x written into a new region and returned as its shared version
// (utf8_locale: TRUE when native strings are UTF-8). Objects with no kura
// form, NULL and objects already shared are returned as they are.
SEXP kura_share(SEXP x, SEXP utf8_locale);
// map_shared(name): the value at a region or path-form name; NULL when
// `name` is not a valid name; an error naming the problem when it cannot be
// mapped.
SEXP kura_map_shared(SEXP name);
// shared_name(x) and is_shared(x).
SEXP kura_shared_name(SEXP x);
SEXP kura_is_shared(SEXP x);
// prune_shared(): the names of the regions removed.
SEXP kura_prune();
// Sets (TRUE/FALSE) or only reads (anything else) the switch; returns the
// value it had.
SEXP kura_serialize_by_name(SEXP enabled);
// kura_collect_names(TRUE) starts collecting the names shared vectors
// serialize as; kura_collect_names(FALSE) stops and returns them, each once
// (a character vector, empty when none or not collecting).
SEXP kura_collect_names(SEXP start);
SEXP kura_use_bit64(SEXP enabled);
// .onLoad: records whether bit64 is installed and the package's version (a
// string, for the serialized state of shared vectors), and prunes dead
// owners' regions.
SEXP kura_session_start(SEXP bit64_installed, SEXP version);
// The region directory ($KURA_SHM_DIR or /dev/shm).
SEXP kura_region_directory();

}  // extern "C"
