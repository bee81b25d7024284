# The R face of kura: share(), map_shared() and friends. The work is done in
# C++ (src/), on kura's own core/ and shm/ libraries.

share <- function(x) {
  .Call(C_kura_share, x, isTRUE(l10n_info()[["UTF-8"]]))
}

map_shared <- function(name) {
  .Call(C_kura_map_shared, name)
}

shared_name <- function(x) {
  .Call(C_kura_shared_name, x)
}

is_shared <- function(x) {
  .Call(C_kura_is_shared, x)
}

prune_shared <- function() {
  invisible(.Call(C_kura_prune))
}

serialize_by_name <- function(enabled = NULL) {
  if (!is.null(enabled) && !(is.logical(enabled) && length(enabled) == 1L && !is.na(enabled))) {
    stop("`enabled` must be TRUE, FALSE or NULL")
  }
  before <- .Call(C_kura_serialize_by_name, enabled)
  if (is.null(enabled)) before else invisible(before)
}

# Internal: whether i64 arrays map to bit64's integer64 (TRUE when bit64 is
# installed) or to doubles; returns the previous setting. For tests.
use_bit64 <- function(enabled) {
  invisible(.Call(C_kura_use_bit64, enabled))
}

# Internal: the directory regions live in ($KURA_SHM_DIR or /dev/shm).
region_directory <- function() {
  .Call(C_kura_region_directory)
}

.onLoad <- function(libname, pkgname) {
  .Call(C_kura_session_start, nzchar(system.file(package = "bit64")))
}
