# Processes that unserialize shared objects: R processes started by a
# session that loaded kura from a library of its own, receivers that cannot
# load kura, and receivers of another version of kura.
#
# tools/run runs these tests with R_LIBS pointing at kura's library, which
# every child would inherit; the children here get R_LIBS and R_LIBS_USER
# pointing at an empty directory instead, so that kura is on a library no
# new R process looks in, as after `library(kura, lib.loc = ...)`.

# The library this kura was loaded from.
kura_library <- function() normalizePath(dirname(find.package("kura")))

# Runs the R code `lines` in a child Rscript whose R_LIBS and R_LIBS_USER
# are an empty directory, where `LIB` is kura's library and `EMPTY` that
# directory; it inherits KURA_SHM_DIR. Skips when kura is on a library a
# new R process looks in anyway (the site libraries). Returns list(status,
# out) with stdout and stderr.
run_child <- function(lines, timeout = 120) {
  empty <- tempfile("kura-nolib-")
  dir.create(empty)
  on.exit(unlink(empty, recursive = TRUE), add = TRUE)
  script <- tempfile(fileext = ".R")
  on.exit(unlink(script), add = TRUE)
  writeLines(c(
    sprintf("LIB <- %s", deparse(kura_library())),
    sprintf("EMPTY <- %s", deparse(empty)),
    "if (nzchar(system.file(package = 'kura'))) {",
    "  cat('kura is on a default library\\n')",
    "  quit(status = 3)",
    "}",
    lines
  ), script)
  out <- suppressWarnings(system2(
    file.path(R.home("bin"), "Rscript"), shQuote(script),
    env = c(paste0("R_LIBS=", shQuote(empty)), paste0("R_LIBS_USER=", shQuote(empty))),
    stdout = TRUE, stderr = TRUE, timeout = timeout
  ))
  status <- if (is.null(attr(out, "status"))) 0L else attr(out, "status")
  if (status == 3L && "kura is on a default library" %in% out) {
    testthat::skip("kura is installed on a library every R process looks in")
  }
  list(status = status, out = trimws(out))
}

# Expects each of `lines` to be a line of the child's output `out`.
expect_lines <- function(out, lines) {
  for (l in lines) {
    expect(l %in% out, sprintf("no line \"%s\" in the child's output:\n%s", l, paste(out, collapse = "\n")))
  }
  invisible(out)
}

test_that("PSOCK workers and callr children of a session that loaded kura with lib.loc get the right values", {
  skip_if_not_installed("callr")
  child <- run_child(c(
    "library(kura, lib.loc = LIB)",
    "cat('R_LIBS first:', strsplit(Sys.getenv('R_LIBS'), ':')[[1]][1] == LIB, '\\n')",
    "cat('.libPaths last:', tail(.libPaths(), 1) == LIB, '\\n')",
    "df <- share(data.frame(a = as.double(1:1000), b = as.double(1001:2000)))",
    "cl <- parallel::makePSOCKcluster(2)",
    "means <- tryCatch({",
    "  cat('check_workers:', check_workers(cl), '\\n')",
    "  unlist(parallel::parLapply(cl, seq_along(df), function(j, d) mean(d[[j]]), d = df))",
    "}, finally = parallel::stopCluster(cl))",
    "cat('psock:', means, '\\n')",
    "cat('callr:', callr::r(function(d) vapply(d, mean, 0), list(d = df), timeout = 60), '\\n')"
  ))
  expect_identical(child$status, 0L, info = paste(child$out, collapse = "\n"))
  expect_lines(child$out, c(
    "R_LIBS first: TRUE", ".libPaths last: TRUE", "check_workers: TRUE",
    "psock: 500.5 1500.5", "callr: 500.5 1500.5"
  ))
})

test_that("loading kura from a library new processes look in changes neither R_LIBS nor .libPaths()", {
  child <- run_child(c(
    "Sys.setenv(R_LIBS = LIB)  # as if started with it",
    ".libPaths(c(LIB, .libPaths()))",
    "before <- .libPaths()",
    "library(kura, lib.loc = LIB)",
    "cat('R_LIBS same:', Sys.getenv('R_LIBS') == LIB, '\\n')",
    "cat('.libPaths same:', identical(.libPaths(), before), '\\n')"
  ))
  expect_identical(child$status, 0L, info = paste(child$out, collapse = "\n"))
  expect_lines(child$out, c("R_LIBS same: TRUE", ".libPaths same: TRUE"))
})

test_that("check_workers() names a node that cannot load kura, where R gives it empty vectors", {
  child <- run_child(c(
    "library(kura, lib.loc = LIB)",
    "Sys.setenv(R_LIBS = EMPTY)  # the worker cannot load kura",
    "cl <- parallel::makePSOCKcluster(1)",
    "tryCatch({",
    "  msg <- tryCatch({ check_workers(cl); 'no error' }, error = conditionMessage)",
    "  got <- parallel::clusterCall(cl, function(x) length(x), share(as.double(1:10)))[[1]]",
    "}, finally = parallel::stopCluster(cl))",
    "cat('check_workers:', msg, '\\n')",
    "cat('length there:', got, '\\n')"
  ))
  expect_identical(child$status, 0L, info = paste(child$out, collapse = "\n"))
  msg <- grep("^check_workers:", child$out, value = TRUE)
  expect_match(msg, "1 of 1 nodes cannot read shared objects", fixed = TRUE)
  node <- grep("^node 1:", child$out, value = TRUE)
  expect_length(node, 1)
  expect_match(node, "kura cannot be loaded there", fixed = TRUE)
  expect_match(node, "returning length zero vector", fixed = TRUE)
  expect_lines(child$out, "length there: 0")
})

test_that("an R without kura unserializes shared vectors as ?serialize_by_name says: empty, no attributes, a warning", {
  vec <- tempfile()
  df <- tempfile()
  on.exit(unlink(c(vec, df)))
  writeBin(serialize(share(c(a = 1.5, b = 2.5)), NULL), vec)
  writeBin(serialize(share(data.frame(u = c(1, 2), v = c(3, 4))), NULL), df)
  child <- run_child(c(
    sprintf("vec <- %s; df <- %s", deparse(vec), deparse(df)),
    "bytes <- function(f) readBin(f, 'raw', file.size(f))",
    "x <- withCallingHandlers(unserialize(bytes(vec)), warning = function(w) {",
    "  cat('warning:', conditionMessage(w), '\\n')",
    "  invokeRestart('muffleWarning')",
    "})",
    "cat('vector:', typeof(x), length(x), is.null(attributes(x)), '\\n')",
    "d <- suppressWarnings(unserialize(bytes(df)))",
    "cat('data frame:', class(d), length(d), lengths(d), length(names(d)), is.null(d$u), mean(d[[1]]), '\\n')",
    "cat('kura loaded:', isNamespaceLoaded('kura'), '\\n')"
  ))
  expect_identical(child$status, 0L, info = paste(child$out, collapse = "\n"))
  expect_lines(child$out, c(
    "warning: cannot unserialize ALTVEC object of class 'kura_real' from package 'kura'; returning length zero vector",
    "vector: double 0 TRUE",
    "data frame: list 2 0 0 0 TRUE NaN",
    "kura loaded: FALSE"
  ))
})

test_that("a shared vector's state carries kura's version, and another state version is an error naming it", {
  x <- share(c(a = 1.5, b = 2.5))
  bytes <- serialize(x, NULL)
  at <- grepRaw(paste0("kura-state-1 ", packageVersion("kura")), bytes, fixed = TRUE)
  expect_length(at, 1)
  bytes[at + 11L] <- charToRaw("9") # "kura-state-1" becomes "kura-state-9"
  expect_error(
    unserialize(bytes),
    "another version of kura (its state is \"kura-state-9 ",
    fixed = TRUE
  )
  expect_error(unserialize(bytes), "install the same kura in every process", fixed = TRUE)
})

test_that("check_workers() passes on workers started here, and refuses what is not a cluster", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  expect_true(check_workers(cl))
  expect_invisible(check_workers(cl))
  expect_error(check_workers(list()), "must be a cluster")
})

test_that("check_workers() reports a node whose unserialize fails, and the node survives it", {
  other <- tempfile("kura-other-dir-")
  dir.create(other, mode = "0700")
  on.exit(unlink(other, recursive = TRUE))
  cl <- withr::with_envvar(c(KURA_SHM_DIR = other), parallel::makePSOCKcluster(1))
  on.exit(parallel::stopCluster(cl), add = TRUE, after = FALSE)
  expect_error(check_workers(cl), "node 1: kura: cannot unserialize shared vector .*not found.*\\(kura [0-9.]+ there\\)")
  expect_identical(parallel::clusterEvalQ(cl, 1 + 1)[[1]], 2)
})
