# The R package's benchmark: kura beside R's own serialize/unserialize and a
# plain PSOCK cluster, on the operations mori's figures describe.
#
#   tools/run rbench [--out bench/results/r.md]
#   R_LIBS=build/r/lib Rscript bench/r_bench.R [--out FILE]
#
# The whole-vector reads run a second time with the regions on a tmpfs
# mounted huge=always (2 MiB pages), in a private mount namespace, when this
# runs as root (as tools/run does) and KURA_R_BENCH_HUGE is not 0; else the
# table says they were skipped.
#
# Each operation runs KURA_R_BENCH_REPS times (default 7) after one warm-up
# run; the table gives the median and the range (min-max) of the runs. The
# machine is shared, so look at the spread before reading much into a
# median. Regions go to $KURA_SHM_DIR (or /dev/shm) and are removed at the
# end.
suppressPackageStartupMessages({
  library(kura)
  library(parallel)
})

args <- commandArgs(trailingOnly = TRUE)
arg <- function(flag) {
  at <- match(flag, args)
  if (is.na(at) || at == length(args)) NULL else args[[at + 1]]
}
out_file <- arg("--out")
# --reads-only FILE: only the whole-vector reads, their rows saved to FILE
# (how the huge-page run below calls this script again).
reads_only <- arg("--reads-only")
reps <- as.integer(Sys.getenv("KURA_R_BENCH_REPS", "7"))
load_average <- function() paste(strsplit(readLines("/proc/loadavg"), " ")[[1]][1:3], collapse = ", ")
load_before <- load_average()

# Seconds per run of `run()`, `reps` runs after a warm-up; `setup()` before
# and `teardown()` after each run are not timed.
measure <- function(run, setup = function() NULL, teardown = function() NULL) {
  one <- function() {
    setup()
    invisible(gc())
    t0 <- Sys.time()
    run()
    t <- as.numeric(Sys.time() - t0, units = "secs")
    teardown()
    t
  }
  one()
  vapply(seq_len(reps), function(i) one(), 0)
}

rows <- list()
add <- function(what, times, note = "") {
  rows[[length(rows) + 1]] <<- data.frame(what = what, median = median(times), min = min(times),
                                          max = max(times), note = note)
  cat(sprintf("%-58s median %9.3f ms  (%.3f-%.3f)\n", what, 1e3 * median(times), 1e3 * min(times),
              1e3 * max(times)))
}

n <- 1e7
x <- as.double(seq_len(n)) / 7
df <- as.data.frame(lapply(1:5, function(j) as.double(seq_len(5e6)) + j))
names(df) <- paste0("c", 1:5)

# --- Whole-vector reads in other processes --------------------------------
# A second process maps 1e7 doubles and sums them; 2 PSOCK workers take the
# column means of a shared 5 x 5e6 data frame. "First map": a region the
# workers have not mapped before (shared anew before each run, not timed),
# so every page is mapped into them during the run, as in mori's figures;
# "again": the same region once more, the mapping cached in the worker. The
# worker's sum() of a plain vector in its own memory is the floor: what R's
# sum() itself costs.
whole_vector_reads <- function() {
  cl <- makePSOCKcluster(1)
  on.exit(stopCluster(cl))
  invisible(clusterEvalQ(cl, {
    library(kura)
    timed <- function(f) {
      invisible(gc())
      t0 <- Sys.time()
      f()
      as.numeric(Sys.time() - t0, units = "secs")
    }
    plain <- as.double(seq_len(1e7)) / 7
    NULL
  }))
  first_map <- function(share_one, run) {
    vapply(seq_len(reps + 1), function(i) {
      s <- share_one(i)
      t <- run(s)
      rm(s)
      invisible(gc())
      t
    }, 0)[-1]
  }
  map_sum <- function(name) clusterCall(cl, function(name) timed(function() sum(map_shared(name))), name)[[1]]
  add("second process: map_shared() + sum(), first map",
      first_map(function(i) share(x + i), function(s) map_sum(shared_name(s))))
  s <- share(x)
  add("second process: map_shared() + sum() again (mapping cached)",
      vapply(seq_len(reps + 1), function(i) map_sum(shared_name(s)), 0)[-1])
  add("second process: sum() of a plain vector in its own memory",
      vapply(seq_len(reps + 1), function(i) clusterEvalQ(cl, timed(function() sum(plain)))[[1]], 0)[-1])
  rm(s)
  invisible(gc())

  cl2 <- makePSOCKcluster(2)
  on.exit(stopCluster(cl2), add = TRUE)
  invisible(clusterEvalQ(cl2, {
    library(kura)
    NULL
  }))
  col_means <- function(d) unlist(parLapply(cl2, seq_along(d), function(j, d) mean(d[[j]]), d = d))
  timed_means <- function(d) {
    invisible(clusterEvalQ(cl2, invisible(gc())))
    t0 <- Sys.time()
    m <- col_means(d)
    as.numeric(Sys.time() - t0, units = "secs")
  }
  add("2 PSOCK workers: column means of a shared 5 x 5e6 data frame, first map",
      first_map(function(i) share(df + i), timed_means))
  sdf <- share(df)
  stopifnot(isTRUE(all.equal(col_means(sdf), unname(colMeans(df)))))
  add("2 PSOCK workers: the same column means again (mappings cached)",
      vapply(seq_len(reps + 1), function(i) timed_means(sdf), 0)[-1])
}

if (!is.null(reads_only)) {
  whole_vector_reads()
  saveRDS(do.call(rbind, rows), reads_only)
  quit(save = "no")
}

# --- share() against a plain copy ---------------------------------------------
y <- NULL
add("share() of 1e7 doubles (80 MB)", measure(
  function() y <<- share(x),
  teardown = function() {
    y <<- NULL
    invisible(gc())
  }
))
copy <- NULL
add("plain R copy of the same vector (duplicate)", measure(
  function() {
    copy <<- x
    copy[1] <<- copy[1] # forces the duplicate
  },
  teardown = function() copy <<- NULL
))

# --- A second process: map + sum against unserialize + sum --------------------
shared <- share(x)
name <- shared_name(shared)
cl <- makePSOCKcluster(1)
invisible(clusterEvalQ(cl, {
  library(kura)
  NULL
}))
in_worker <- function(f, ...) {
  vapply(seq_len(reps + 1), function(i) clusterCall(cl, f, ...)[[1]], 0)[-1]
}
bytes <- serialize(x, NULL)
invisible(clusterCall(cl, function(b) {
  assign("bytes", b, envir = globalenv())
  NULL
}, bytes))
add("second process: unserialize() + sum()", in_worker(function() {
  invisible(gc())
  t0 <- Sys.time()
  s <- sum(unserialize(bytes))
  t <- as.numeric(Sys.time() - t0, units = "secs")
  rm(s)
  invisible(gc())
  t
}))
invisible(clusterEvalQ(cl, {
  rm(bytes)
  invisible(gc())
}))
add("serialize() of the plain vector", measure(function() serialize(x, NULL)))
add("serialize() of the shared vector (by name)", measure(function() serialize(shared, NULL)),
    note = sprintf("%d bytes", length(serialize(shared, NULL))))
add("PSOCK: send the plain vector to a worker, sum there", measure(function() clusterCall(cl, sum, x)))
add("PSOCK: send the shared vector to a worker, sum there", measure(function() clusterCall(cl, sum, shared)))
stopCluster(cl)

# --- Element access and copy-on-write on a mapped vector -------------------
mapped <- map_shared(name)
add("y[1] on a mapped 1e7-double vector", measure(function() mapped[1]))
w <- NULL
add("y[1] <- 0 on a mapped 1e7-double vector", measure(
  function() w[1] <<- 0,
  setup = function() w <<- map_shared(name),
  teardown = function() w <<- NULL
))
plain2 <- NULL
add("y[1] <- 0 on a plain vector another binding holds (R copies)", measure(
  function() plain2[1] <<- 0,
  setup = function() plain2 <<- x,
  teardown = function() plain2 <<- NULL
))
rm(mapped, shared)
invisible(gc())

# --- Whole-vector reads; 2 PSOCK workers, column means of the plain data frame --
whole_vector_reads()
cl2 <- makePSOCKcluster(2)
col_means <- function(d) unlist(parLapply(cl2, seq_along(d), function(j, d) mean(d[[j]]), d = d))
add("2 PSOCK workers: column means of the plain data frame", measure(
  function() col_means(df),
  teardown = function() clusterEvalQ(cl2, invisible(gc()))
))
add("2 PSOCK workers: clusterExport() of the plain data frame", measure(
  function() {
    assign("df", df, envir = globalenv())
    clusterExport(cl2, "df")
  },
  teardown = function() clusterEvalQ(cl2, {
    rm(df)
    invisible(gc())
  })
))
stopCluster(cl2)
invisible(gc())

# --- The whole-vector reads again, on 2 MiB pages -----------------------------
# This script again (--reads-only), in a private mount namespace with its
# regions on a tmpfs mounted huge=always there, gone with the namespace.
huge_rows <- NULL
if (Sys.getenv("KURA_R_BENCH_HUGE", "1") != "0" && Sys.info()[["effective_user"]] == "root" &&
    nzchar(Sys.which("unshare"))) {
  rows_file <- tempfile(fileext = ".rds")
  self <- normalizePath(sub("^--file=", "", grep("^--file=", commandArgs(), value = TRUE)[[1]]))
  script <- paste(
    "d=$(mktemp -d /tmp/kura-rbench-huge.XXXXXX) &&",
    "mount -t tmpfs -o huge=always,size=2g,mode=0700 tmpfs \"$d\" &&",
    "KURA_SHM_DIR=\"$d\" \"$0\" \"$1\" --reads-only \"$2\"; s=$?; umount \"$d\"; rmdir \"$d\"; exit $s"
  )
  status <- system2("unshare", c("-m", "sh", "-c", shQuote(script), file.path(R.home("bin"), "Rscript"),
                                 shQuote(self), shQuote(rows_file)))
  if (status == 0 && file.exists(rows_file)) {
    huge_rows <- readRDS(rows_file)
    huge_rows$what <- paste(huge_rows$what, "(huge-page tmpfs)")
    rows[[length(rows) + 1]] <- huge_rows
    unlink(rows_file)
  }
}
huge_note <- if (is.null(huge_rows)) {
  "The whole-vector reads on a huge-page tmpfs were skipped (they need root and unshare; KURA_R_BENCH_HUGE=0 skips them)."
}

# --- Tasks on 2 kura workers (and mirai's, when it is installed) --------------
# mirai is not a Debian package: without it the rows are kura's alone.
have_mirai <- requireNamespace("mirai", quietly = TRUE)
workers(2)
stopifnot(identical(task(function() 1)[], 1))
rtts <- 200L
add(sprintf("kura tasks: empty task round trip (per task, %d in a row)", rtts), measure(function() {
  for (i in seq_len(rtts)) task(function() NULL)[]
}) / rtts)
add("kura tasks: task_map() of 10,000 trivial tasks over 2 workers", measure(function() {
  task_map(seq_len(10000), function(i) i)
}))
fresh <- NULL
add("kura tasks: column means of a 5 x 5e6 data frame sent from the session", measure(
  function() task_map(fresh, mean),
  setup = function() fresh <<- as.data.frame(lapply(df, function(col) col + stats::runif(1))),
  teardown = function() {
    fresh <<- NULL
    invisible(gc())
  }
), note = "new data each run: shared (200 MB written), then names")
add("kura tasks: the same column means, the data frame sent again", measure(function() task_map(df, mean)),
    note = "shared once before: hashed, then names")
workers(2, window = 16)
add("kura tasks: the same task_map(), each worker holding up to 16 tasks (workers(window = 16))",
    measure(function() task_map(seq_len(10000), function(i) i)))
workers(0)
if (have_mirai) {
  mirai::daemons(2)
  add(sprintf("mirai: empty task round trip (per task, %d in a row)", rtts), measure(function() {
    for (i in seq_len(rtts)) mirai::mirai(NULL)[]
  }) / rtts)
  add("mirai: mirai_map() of 10,000 trivial tasks over 2 daemons", measure(function() {
    mirai::mirai_map(seq_len(10000), function(i) i)[]
  }))
  add("mirai: column means of a 5 x 5e6 data frame sent from the session", measure(function() {
    mirai::mirai_map(df, mean)[]
  }), note = "serialized to each task")
  mirai::daemons(0)
} else {
  cat("mirai is not installed: the task rows are kura's figures alone\n")
}

table <- do.call(rbind, rows)
md <- c(
  sprintf("R %s, %d runs after a warm-up; median and range (min-max), milliseconds. Load average %s before, %s after.",
          paste(R.version$major, R.version$minor, sep = "."), reps, load_before, load_average()),
  "",
  "| operation | median | range | |",
  "|---|---:|---:|---|",
  sprintf("| %s | %s | %s-%s | %s |", table$what, format(round(1e3 * table$median, 3), nsmall = 3, trim = TRUE),
          format(round(1e3 * table$min, 3), nsmall = 3, trim = TRUE),
          format(round(1e3 * table$max, 3), nsmall = 3, trim = TRUE), table$note),
  if (!is.null(huge_note)) c("", huge_note)
)
cat("", md, sep = "\n")
if (!is.null(out_file)) writeLines(md, out_file)
