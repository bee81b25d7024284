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

# Kilobytes of the region behind `name` that this process has mapped in
# (the Rss of its mappings in /proc/self/smaps): the pages it has read, or
# had mapped in at once.
region_rss_kb <- function(name) {
  file <- region_file(name)
  s <- readLines("/proc/self/smaps")
  heads <- grep("^[0-9a-f]+-[0-9a-f]+ ", s)
  ends <- c(heads[-1] - 1L, length(s))
  total <- 0
  for (k in which(endsWith(s[heads], file))) {
    rss <- grep("^Rss:", s[heads[k]:ends[k]], value = TRUE)
    total <- total + as.numeric(sub("^Rss: *([0-9]+) kB.*$", "\\1", rss))
  }
  total
}

# Whether R has asked for a writable pointer to the shared vector `x` (its
# .Internal(inspect()) line says so).
asked_writable <- function(x) any(grepl("(writable)", capture.output(.Internal(inspect(x))), fixed = TRUE))

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

# --- Tasks ---------------------------------------------------------------------

# Bounded wait for `cond()` that fails the test, saying what it waited for
# (and what the session's dispatcher logged last).
wait_for <- function(cond, seconds = 60, what = "the condition") {
  if (!wait_until(cond, seconds)) {
    log <- utils::tail(kura:::dispatcher_log(), 10)
    stop("gave up after ", seconds, " s waiting for ", what,
      if (length(log)) paste0("; the dispatcher logged:\n", paste(log, collapse = "\n")),
      call. = FALSE
    )
  }
  invisible(TRUE)
}

# Whether any of the processes `pids` is alive (or a zombie).
any_alive <- function(pids) any(file.exists(file.path("/proc", pids)))

# `f` with the global environment as its own, so that it travels without
# the test's environments (a closure carries its enclosures).
global <- function(f) {
  environment(f) <- globalenv()
  f
}

# A task's value, failing the test if the task has not ended within
# `seconds` (t[] itself waits without end).
value_of <- function(t, seconds = 60) {
  wait_for(function() !unresolved(t), seconds, paste("task", format(t$id), "to end"))
  t[]
}

# `expr` (a blocking call such as race()) stopped by R after `seconds`.
within_seconds <- function(expr, seconds = 60) {
  setTimeLimit(elapsed = seconds, transient = TRUE)
  on.exit(setTimeLimit(elapsed = Inf))
  expr
}

# The pids of every worker seen by the current with_workers() call.
.seen <- new.env(parent = emptyenv())

# The pool's worker pids now (and remembered, so that with_workers() checks
# that each of them has exited).
worker_pids <- function() {
  pids <- status()$workers$pid
  .seen$pids <- union(.seen$pids, pids)
  pids
}

# Waits until the pool has `n` workers, none of them one of `not`; their pids.
wait_for_pool <- function(n, not = numeric(), seconds = 60) {
  wait_for(function() {
    w <- status()$workers
    nrow(w) == n && !any(w$pid %in% not) && all(file.exists(file.path("/proc", w$pid)))
  }, seconds, paste("a pool of", n, "workers"))
  worker_pids()
}

# Runs `code` (a function of no arguments, so that what it makes is garbage
# once it returns) with workers(...) set up, then stops them and checks that
# every worker process has exited and the region directory holds nothing
# new.
with_workers <- function(code, ...) {
  before <- region_files()
  .seen$pids <- numeric()
  workers(...)
  on.exit(workers(0))
  if (isTRUE(workers() > 0)) wait_for_pool(workers())
  code()
  if (isTRUE(workers() > 0)) worker_pids()
  workers(0)
  wait_for(function() !any_alive(.seen$pids), 60, "the workers to exit")
  wait_for(function() {
    invisible(gc())
    length(setdiff(region_files(), before)) == 0
  }, 60, "the regions to be removed")
  testthat::expect_identical(setdiff(region_files(), before), character())
}

# The socket of the session's dispatcher (workers(n) set up).
session_socket <- function() file.path(kura:::.kura$dir, "dispatcher.sock")
