# Regions live while some R object made from them does, in the process that
# published them; forked children never unlink them; dead producers' regions
# are removed.

test_that("a region is unlinked when its object is collected", {
  y <- share(as.double(1:100))
  name <- shared_name(y)
  expect_true(region_exists(name))
  rm(y)
  invisible(gc())
  expect_false(region_exists(name))
})

test_that("a data frame's region goes with the data frame", {
  df <- share(data.frame(a = 1:3, b = c("x", "y", "z")))
  name <- shared_name(df)
  rm(df)
  invisible(gc())
  expect_false(region_exists(name))
})

test_that("an extracted element keeps the region alive until it is collected", {
  x <- share(list(a = as.double(1:10), b = "keep"))
  name <- shared_name(x)
  b <- x$b
  rm(x)
  invisible(gc())
  expect_true(region_exists(name))
  expect_identical(b, "keep")
  expect_identical(map_shared(paste0(name, "[1]"))[10], 10)
  rm(b)
  invisible(gc())
  expect_false(region_exists(name))
})

test_that("an object mapped by name does not own the region", {
  y <- share(1:10)
  name <- shared_name(y)
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  parallel::clusterCall(cl, function(n) {
    z <- map_shared(n)
    rm(z)
    invisible(gc())
    NULL
  }, name)
  expect_true(region_exists(name))
})

test_that("a forked child that drops the object leaves the region in place", {
  skip_on_os("windows")
  y <- share(as.double(1:1e5))
  name <- shared_name(y)
  job <- parallel::mcparallel({
    rm(y)
    invisible(gc())
    region_exists(name)
  })
  result <- parallel::mccollect(job)[[1]]
  expect_true(result)
  expect_true(region_exists(name))
  expect_identical(y[1e5], 1e5)
})

test_that("a forked child keeps reading after the parent releases the region", {
  y <- share(as.double(1:1e6))
  name <- shared_name(y)
  job <- parallel::mcparallel({
    # Waits (bounded) for the parent to unlink the region, then reads all of it.
    gone <- wait_until(function() !region_exists(name))
    c(gone, sum(y))
  })
  rm(y)
  invisible(gc())
  expect_false(region_exists(name))
  got <- parallel::mccollect(job)[[1]]
  expect_identical(got, c(1, sum(as.double(1:1e6))))
})

test_that("a forked child reads and writes its own copy", {
  y <- share(as.double(1:1e5))
  name <- shared_name(y)
  y2 <- map_shared(name)
  y2[1] <- -1 # a private mapping exists before the fork
  job <- parallel::mcparallel({
    y2[2] <- -2
    z <- y
    z[3] <- -3
    c(y2[1:2], z[3], y[3], is_shared(y))
  })
  got <- parallel::mccollect(job)[[1]]
  expect_identical(got, c(-1, -2, -3, 3, 1))
  expect_identical(y2[2], 2)
  expect_identical(y[3], 3)
  expect_true(region_exists(name))
})

test_that("a forked child shares under an owner of its own; what it leaves is pruned", {
  y <- share(1:10)
  parent_owner <- sub("^/kura_([0-9a-f]+)_.*$", "\\1", shared_name(y))
  job <- parallel::mcparallel({
    z <- share(c(5, 6))
    # mcparallel children end with _exit: no clean-up of their own runs.
    list(name = shared_name(z), value = map_shared(shared_name(z)))
  })
  got <- parallel::mccollect(job)[[1]]
  expect_identical(got$value, c(5, 6))
  expect_false(startsWith(got$name, paste0("/kura_", parent_owner, "_")))
  expect_true(wait_until(function() {
    prune_shared()
    !region_exists(got$name)
  }))
  expect_identical(y[10], 10L)
})

test_that("a SIGKILLed producer's regions are removed without prune_shared()", {
  cl <- start_worker()
  on.exit(try(parallel::stopCluster(cl), silent = TRUE))
  info <- parallel::clusterEvalQ(cl, {
    kept <- share(as.double(1:1e4))
    list(pid = Sys.getpid(), name = shared_name(kept))
  })[[1]]
  expect_true(region_exists(info$name))
  tools::pskill(info$pid, tools::SIGKILL)
  # The worker's socket reaches end of file when the worker is gone.
  expect_true(socketSelect(list(cl[[1]]$con), timeout = 20))
  # Then the next share() here removes its regions (at most once a second,
  # so allow for that).
  expect_true(wait_until(function() {
    share(1)
    !region_exists(info$name)
  }))
})

test_that("prune_shared() returns the names of the regions it removed", {
  cl <- start_worker()
  on.exit(try(parallel::stopCluster(cl), silent = TRUE))
  info <- parallel::clusterEvalQ(cl, {
    kept <- list(share(1), share(2))
    list(pid = Sys.getpid(), names = vapply(kept, shared_name, ""))
  })[[1]]
  tools::pskill(info$pid, tools::SIGKILL)
  expect_true(socketSelect(list(cl[[1]]$con), timeout = 20))
  removed <- character()
  expect_true(wait_until(function() {
    removed <<- c(removed, prune_shared())
    all(!region_exists(info$names))
  }))
  expect_setequal(intersect(removed, info$names), info$names)
  expect_type(prune_shared(), "character")
})

test_that("a session's regions are removed when it exits", {
  rscript <- file.path(R.home("bin"), "Rscript")
  out <- system2(rscript, c("-e", shQuote("library(kura); x <- share(1:10); cat(shared_name(x))")),
                 stdout = TRUE)
  expect_match(out, "^/kura_")
  expect_false(region_exists(out))
})

test_that("collecting at odd moments is safe (gctorture)", {
  gctorture(TRUE)
  on.exit(gctorture(FALSE))
  x <- share(list(a = c(u = 1.5, v = NA), b = c("x", NA), f = factor("q"), l = list(function(z) z, NULL),
                  d = data.frame(p = 1:2, q = c("r", "s"))))
  n <- shared_name(x)
  y <- map_shared(n)
  s <- unserialize(serialize(x$a, NULL))
  d <- unserialize(serialize(x$d, NULL))
  w <- y$a
  w[2] <- 7 # a private mapping
  v <- y$b
  v[1] <- "changed" # strings materialized
  shared <- c(is_shared(x), is_shared(y$d), is_shared(w), is_shared(v))
  gctorture(FALSE)
  expect_identical(y$a, c(u = 1.5, v = NA))
  expect_identical(s, c(u = 1.5, v = NA))
  expect_identical(d, data.frame(p = 1:2, q = c("r", "s")))
  expect_identical(w, c(u = 1.5, v = 7))
  expect_identical(v, c("changed", NA))
  expect_identical(shared, c(TRUE, TRUE, FALSE, FALSE))
  expect_identical(x$l[[1]](3), 3)
})
