# Helpers shared by the test files.

region_dir <- function() kura:::region_directory()

# The file of the region a (path-form) name lives in.
region_file <- function(name) {
  file.path(region_dir(), sub("^/", "", sub("\\[.*$", "", name)))
}

region_exists <- function(name) file.exists(region_file(name))

# Regions and temporaries in the region directory (leases excluded).
region_files <- function() {
  f <- list.files(region_dir(), pattern = "^kura_")
  f[!grepl("\\.lock", f)]
}

# The owner id of this process, from a region it shares.
my_owner <- function() {
  x <- share(1)
  sub("^/kura_([0-9a-f]+)_.*$", "\\1", shared_name(x))
}

# Anonymous memory of this process in MB (shared-memory pages are not in
# it; private copies are).
anon_mb <- function() {
  l <- grep("^Anonymous:", readLines("/proc/self/smaps_rollup"), value = TRUE)
  as.numeric(sub("^Anonymous: *([0-9]+) kB.*$", "\\1", l)) / 1024
}

# How much the anonymous memory grows over `expr` and stays grown once the
# garbage is collected: a copy kept by (or for) an object counts, a
# temporary result of R's own making (range() calls c(), which copies) does
# not.
anon_growth <- function(expr) {
  invisible(gc())
  before <- anon_mb()
  force(expr)
  invisible(gc())
  anon_mb() - before
}

# A PSOCK worker: a second R process with kura loaded, in the same region
# directory (workers inherit KURA_SHM_DIR and R_LIBS).
start_worker <- function() {
  cl <- parallel::makePSOCKcluster(1)
  parallel::clusterEvalQ(cl, library(kura))
  cl
}

# Bounded wait for `cond()` to become TRUE; FALSE on timeout. Used only to
# wait for another process's death to become visible.
wait_until <- function(cond, seconds = 20) {
  deadline <- Sys.time() + seconds
  while (!cond()) {
    if (Sys.time() > deadline) return(FALSE)
    Sys.sleep(0.02)
  }
  TRUE
}

# The kura command-line tool, when the test run has one.
kura_tool <- function() {
  tool <- Sys.getenv("KURA_TOOL")
  if (!nzchar(tool) || !file.exists(tool)) testthat::skip("KURA_TOOL is not set (tools/run test sets it)")
  tool
}

# Runs the kura tool; returns list(status, out).
run_tool <- function(args, input = NULL) {
  out <- suppressWarnings(system2(kura_tool(), args, stdout = TRUE, stderr = TRUE, input = input))
  list(status = if (is.null(attr(out, "status"))) 0L else attr(out, "status"), out = out)
}
