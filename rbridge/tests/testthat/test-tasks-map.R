# task_map(), tasks as promises, make_cluster(), and arguments shared once:
# on real worker processes (with_workers(), helper-kura.R).

test_that("task_map() gives results in input order, over elements and data frame rows", {
  with_workers(function() {
    # Later elements finish first: order must come from the input.
    out <- task_map(5:1, global(function(i) {
      Sys.sleep(i / 100)
      i * 10
    }))
    expect_identical(out, as.list(as.double(5:1 * 10)))
    named <- task_map(c(a = 1, b = 2), global(function(x) x + 1))
    expect_identical(named, list(a = 2, b = 3))
    df <- data.frame(a = 1:3, b = c(10, 20, 30))
    expect_identical(unlist(task_map(df, global(function(a, b) a + b), .by = "rows")), c(11, 22, 33))
    expect_identical(task_map(df, sum), list(a = 6L, b = 60))
    expect_identical(task_map(list(), sum), list())
    expect_error(task_map(1:3, sum, .by = "rows"), "needs a data frame")
  }, 2)
})

test_that("a worker window runs task_map() in input order, and a task behind a long one moves", {
  with_workers(function() {
    out <- task_map(1:200, global(function(i) i * 2))
    expect_identical(out, as.list(as.double(1:200 * 2)))
    # One worker holds the long task and the short one sent behind it; once
    # the other worker is idle, the short one is taken back and runs there.
    long <- task(function() Sys.sleep(60))
    wait_for(function() status()$counters[["executing"]] == 1, 60, "the long task to run")
    held <- task(function() Sys.sleep(60))
    wait_for(function() status()$counters[["executing"]] == 2, 60, "the second long task to run")
    short <- task(function() "done")
    wait_for(function() status()$counters[["waiting_on_workers"]] == 1, 60, "a task to wait on a worker")
    cancel(held)
    expect_identical(short[], "done")
    expect_identical(status()$counters[["executing"]], 1)
    cancel(long)
  }, 2, window = 4)
  expect_error(workers(1, window = 0), "`window` must be a whole number")
})

test_that("task_map() stops at the first error, cancelling the tasks in flight", {
  with_workers(function() {
    started <- Sys.time()
    expect_error(
      task_map(1:40, global(function(i) if (i == 1) stop("one") else Sys.sleep(30))),
      "element 1 failed \\(error\\): one"
    )
    # The sleeping tasks were cancelled, not waited for.
    expect_lt(as.numeric(Sys.time() - started, units = "secs"), 30)
    wait_for(function() status()$counters[["executing"]] == 0, 60, "the cancelled tasks to end")
    kept <- task_map(1:4, global(function(i) if (i == 2) stop("two") else i), .stop_early = FALSE)
    expect_true(is_error_value(kept[[2]]))
    expect_identical(kept[c(1, 3, 4)], list(1L, 3L, 4L))
  }, 2)
})

test_that("task_map() shows progress on standard error when asked", {
  with_workers(function() {
    lines <- capture.output(invisible(task_map(1:20, global(function(i) i), .progress = TRUE)), type = "message")
    expect_true(any(grepl("task_map: 20/20 \\(100%\\)", lines)))
    quiet <- capture.output(invisible(task_map(1:5, global(function(i) i), .progress = FALSE)), type = "message")
    expect_identical(quiet, character())
  }, 1)
})

test_that("a large argument used by many tasks is shared once and sent as its name", {
  with_workers(function() {
    x <- as.double(seq_len(2e6))  # 16 MB, not shared
    first <- kura:::client_bytes()
    expect_identical(value_of(task(global(function(v) sum(v)), x)), sum(x))
    mid <- kura:::client_bytes()
    for (i in 1:4) expect_identical(value_of(task(global(function(v) sum(v)), x)), sum(x))
    last <- kura:::client_bytes()
    expect_lt(mid[["sent"]] - first[["sent"]], 64 * 1024)
    expect_lt(last[["sent"]] - mid[["sent"]], 4 * 64 * 1024)
    # The same content is found again, one region for all five tasks.
    expect_identical(length(ls(kura:::.kura$share_cache)), 1L)
    # Other content is another region, and a changed vector is not mistaken
    # for the one shared before.
    y <- x
    y[1] <- -1
    expect_identical(value_of(task(global(function(v) v[1]), y)), -1)
    expect_identical(length(ls(kura:::.kura$share_cache)), 2L)
  }, 1)
})

test_that("the cache of shared arguments stays within kura.share_cache bytes", {
  withr::local_options(kura.share_cache = 20e6)
  with_workers(function() {
    for (k in 1:3) {
      v <- as.double(seq_len(1e6)) + k  # 8 MB each
      expect_identical(value_of(task(global(function(v) v[1]), v)), 1 + k)
    }
    sizes <- vapply(ls(kura:::.kura$share_cache), function(k) kura:::.kura$share_cache[[k]]$size, 0)
    expect_lte(sum(sizes), 20e6)
    expect_identical(length(sizes), 2L)
  }, 1)
})

test_that("a task is a promise that resolves or rejects under later", {
  skip_if_not_installed("promises")
  skip_if_not_installed("later")
  with_workers(function() {
    got <- NULL
    failed <- NULL
    promises::then(promises::as.promise(task(global(function() 99))), function(v) got <<- v)
    promises::then(
      promises::as.promise(task(global(function() stop("nope")))),
      onRejected = function(e) failed <<- conditionMessage(e)
    )
    deadline <- Sys.time() + 60
    while ((is.null(got) || is.null(failed)) && Sys.time() < deadline) later::run_now(0.05)
    expect_identical(got, 99)
    expect_match(failed, "nope")
  }, 1)
})

test_that("make_cluster() is a parallel cluster whose nodes keep their state", {
  before <- region_files()
  cl <- make_cluster(2)
  on.exit(parallel::stopCluster(cl))
  pids <- unlist(parallel::clusterEvalQ(cl, Sys.getpid()))
  expect_identical(length(unique(pids)), 2L)
  # Each node is one process: what it was given stays there.
  parallel::clusterApply(cl, 1:2, function(k) assign("node_k", k, envir = globalenv()))
  expect_identical(unlist(parallel::clusterEvalQ(cl, node_k)), 1:2)
  expect_identical(unlist(parallel::clusterEvalQ(cl, Sys.getpid())), pids)
  x <- share(as.double(1:1e6))
  expect_identical(unlist(parallel::parLapply(cl, 1:4, function(i, x) sum(x) + i, x)), sum(x) + 1:4)
  expect_identical(unlist(parallel::clusterApplyLB(cl, 1:5, function(i) i * 10)), (1:5) * 10)
  failed <- try(parallel::clusterEvalQ(cl, stop("on a node")), silent = TRUE)
  expect_s3_class(failed, "try-error")
  expect_match(as.character(failed), "on a node")
  parallel::stopCluster(cl)
  on.exit()
  wait_for(function() !any_alive(pids), 60, "the cluster's workers to exit")
  rm(x)
  wait_for(function() {
    invisible(gc())
    length(setdiff(region_files(), before)) == 0
  }, 60, "the regions to be removed")
})

test_that("workers read a shared 100 MB argument in place, without a copy of their own", {
  with_workers(function() {
    x <- share(as.double(seq_len(12.5e6)))  # 100 MB
    probe <- global(function(v) {
      anon <- function() {
        l <- grep("^Anonymous:", readLines("/proc/self/smaps_rollup"), value = TRUE)
        as.numeric(sub("^Anonymous: *([0-9]+) kB.*$", "\\1", l)) / 1024
      }
      before <- anon()
      s <- sum(v)
      c(sum = s, grown_mb = anon() - before, pid = Sys.getpid())
    })
    sent <- kura:::client_bytes()[["sent"]]
    out <- lapply(lapply(1:8, function(i) task(probe, x)), value_of)
    expect_lt(kura:::client_bytes()[["sent"]] - sent, 8 * 4096)
    for (o in out) {
      expect_identical(o[["sum"]], sum(x))
      expect_lt(o[["grown_mb"]], 10)
    }
  }, 2)
})

test_that("the client's entry points refuse what is not a task id", {
  with_workers(function() {
    c <- kura:::.kura$client
    for (bad in list(NaN, -1, 0, 1.5, 2^60)) {
      expect_error(.Call(kura:::C_kura_task_wait, c, bad, 0), "not a task id")
      expect_error(.Call(kura:::C_kura_task_cancel, c, bad), "not a task id|must not be NA")
    }
    expect_identical(value_of(task(global(function() 7))), 7)
  }, 1)
})
