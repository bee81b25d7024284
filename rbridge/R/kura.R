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

check_workers <- function(cl) {
  if (!inherits(cl, "cluster")) {
    stop("`cl` must be a cluster of package parallel (parallel::makeCluster() and friends)")
  }
  n <- 1000L
  probe <- share(as.double(seq_len(n)))
  expected <- sum(as.double(seq_len(n)))
  # The probe goes as the bytes of its serialization, unserialized by the
  # node itself: had parallel unserialized it, an error (another version of
  # kura) would end the node's worker loop, and a warning (no kura there)
  # would be lost.
  bytes <- serialize(probe, NULL)
  node_report <- function(bytes) {
    warned <- character()
    got <- tryCatch(
      withCallingHandlers(unserialize(bytes), warning = function(w) {
        warned <<- c(warned, conditionMessage(w))
        invokeRestart("muffleWarning")
      }),
      error = function(e) e
    )
    failed <- inherits(got, "error")
    loaded <- isNamespaceLoaded("kura")
    list(
      error = if (failed) conditionMessage(got) else NA_character_,
      warnings = warned,
      length = if (failed) NA_real_ else length(got),
      sum = if (!failed && is.double(got)) sum(got) else NA_real_,
      version = if (loaded) as.character(getNamespaceVersion("kura")) else NA_character_,
      libpaths = .libPaths()
    )
  }
  # Sent as a function of the global environment, so that sending it needs
  # no kura on the node (a closure of kura's namespace would).
  environment(node_report) <- globalenv()
  problems <- character()
  for (i in seq_along(cl)) {
    r <- tryCatch(parallel::clusterCall(cl[i], node_report, bytes)[[1]], error = function(e) e)
    why <- if (inherits(r, "error")) {
      paste0("the node failed: ", conditionMessage(r))
    } else if (!is.na(r$error)) {
      paste0(r$error, " (kura ", if (is.na(r$version)) "not loaded" else r$version, " there)")
    } else if (is.na(r$version)) {
      paste0(
        "kura cannot be loaded there, so R replaced the shared vector by a zero-length one",
        if (length(r$warnings)) paste0(" (R warned: ", r$warnings[[1]], ")") else "",
        "; its library paths: ", paste(r$libpaths, collapse = ", ")
      )
    } else if (!identical(r$length, n) || !identical(r$sum, expected)) {
      sprintf(
        "the shared vector arrived with length %s and sum %s, not %d and %s (kura %s there)",
        format(r$length), format(r$sum), n, format(expected), r$version
      )
    }
    if (!is.null(why)) problems <- c(problems, sprintf("node %d: %s", i, why))
  }
  if (length(problems)) {
    stop(
      sprintf("%d of %d nodes cannot read shared objects:\n", length(problems), length(cl)),
      paste(problems, collapse = "\n"),
      call. = FALSE
    )
  }
  invisible(TRUE)
}

# The library paths a child R process gets when nothing tells it otherwise:
# those of R_LIBS, R_LIBS_USER and R_LIBS_SITE, the site libraries and R's
# own, normalized; those that do not exist left out.
default_libraries <- function() {
  vars <- Sys.getenv(c("R_LIBS", "R_LIBS_USER", "R_LIBS_SITE"))
  paths <- c(unlist(strsplit(vars, .Platform$path.sep, fixed = TRUE)), .Library.site, .Library)
  paths <- paths[nzchar(paths)]
  paths <- paths[dir.exists(paths)]
  unique(normalizePath(paths))
}

# Makes the library kura was loaded from one that the R processes this
# session starts look in: a shared vector they unserialize loads kura, and
# finds none (or another one) otherwise. R_LIBS is what Rscript and R (PSOCK
# workers, system()) read; callr gives its children this session's
# .libPaths() instead, so the library goes there too, last, where it changes
# neither where packages install nor which of them load first.
expose_library <- function(libname) {
  lib <- normalizePath(libname, mustWork = FALSE)
  if (!dir.exists(lib)) return(invisible())
  if (!(lib %in% default_libraries())) {
    old <- Sys.getenv("R_LIBS")
    Sys.setenv(R_LIBS = if (nzchar(old)) paste(lib, old, sep = .Platform$path.sep) else lib)
  }
  if (!(lib %in% normalizePath(.libPaths(), mustWork = FALSE))) .libPaths(c(.libPaths(), lib))
  invisible()
}

.onLoad <- function(libname, pkgname) {
  expose_library(libname)
  # make_cluster()'s nodes speak parallel's node interface, whose generics
  # parallel does not export.
  parallel_ns <- asNamespace("parallel")
  registerS3method("sendData", "kura_node", sendData.kura_node, envir = parallel_ns)
  registerS3method("recvData", "kura_node", recvData.kura_node, envir = parallel_ns)
  registerS3method("recvOneData", "kura_cluster", recvOneData.kura_cluster, envir = parallel_ns)
  .Call(
    C_kura_session_start, nzchar(system.file(package = "bit64")),
    as.character(getNamespaceVersion(pkgname))
  )
}
