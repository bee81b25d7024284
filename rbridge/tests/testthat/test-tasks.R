# Tasks on real worker processes: workers(), task(), [], race(), cancel(),
# everywhere(), status(). Every test stops its workers and checks that they
# exited and left no region behind (with_workers(), helper-kura.R).

test_that("values of every type make the round trip through a task", {
  with_workers(function() {
    values <- list(
      double = c(1.5, NA, NaN, Inf, -0),
      integer = c(1L, NA, .Machine$integer.max),
      logical = c(TRUE, NA, FALSE),
      character = c("plain", NA, "h\u00e9t\u00e9rog\u00e8ne", "\u65e5\u672c\u8a9e", ""),
      complex = c(1+2i, NA, -3.5-0i),
      raw = as.raw(c(0, 1, 255)),
      nested = list(a = 1, b = list(c = "x", d = list(e = 1:3, f = NULL)), g = TRUE),
      data_frame = data.frame(id = 1:3, label = c("x", NA, "z"), score = c(0.5, NA, 2)),
      factor = factor(c("lo", "hi", NA, "lo"), levels = c("lo", "hi")),
      null = NULL,
      matrix = matrix(as.double(1:6), nrow = 2, dimnames = list(c("r1", "r2"), c("a", "b", "c"))),
      int_array = array(1:24, dim = c(2, 3, 4))
    )
    echoed <- lapply(values, function(v) task(function(x) x, v))
    for (k in names(values)) {
      expect_identical(value_of(echoed[[k]]), values[[k]], label = paste("echoed", k))
    }
    # The same values made on the worker, not only passed through it.
    made <- task(function() {
      list(
        character = c("plain", NA, "h\u00e9t\u00e9rog\u00e8ne", "\u65e5\u672c\u8a9e", ""),
        complex = c(1+2i, NA, -3.5-0i),
        factor = factor(c("lo", "hi", NA, "lo"), levels = c("lo", "hi")),
        matrix = matrix(as.double(1:6), nrow = 2, dimnames = list(c("r1", "r2"), c("a", "b", "c")))
      )
    })
    expect_identical(value_of(made), values[c("character", "complex", "factor", "matrix")])
    expect_null(value_of(task(function() NULL)))
    expect_identical(value_of(task(quote(a + b), a = 2L, b = 3L)), 5L)
    expect_identical(value_of(task(function(x) is.null(x), NULL)), TRUE)
    f <- value_of(task(function(k) function(x) x * k, 3))
    expect_true(is.function(f))
    expect_identical(f(2), 6)
  }, 1)
})

test_that("an R error comes back as an error value with its message and call", {
  with_workers(function() {
    v <- value_of(task(function(x) stop("bad input: ", x), "abc"))
    expect_true(is_error_value(v))
    expect_s3_class(v, "kura_error_value")
    expect_identical(v$outcome, "error")
    expect_identical(v$message, "bad input: abc")
    expect_match(v$call, "^f\\(")
    v <- value_of(task(quote(sqrt(a)), a = "not a number"))
    expect_identical(v$outcome, "error")
    expect_match(v$message, "non-numeric argument")
    expect_identical(v$call, "sqrt(a)")
    v <- value_of(task(function() stop("no call here", call. = FALSE)))
    expect_identical(v$message, "no call here")
    expect_null(v$call)
    expect_output(print(v), "error value: error")
    # A warning is not an error, and the worker goes on serving.
    expect_identical(value_of(task(function() suppressWarnings(as.integer("x")))), NA_integer_)
    expect_identical(value_of(task(function() 1L + 1L)), 2L)
    expect_false(is_error_value(list(message = "m", call = NULL, outcome = "error")))
    expect_identical(status()$counters[["workers_dropped"]], 0)
  }, 1)
})

test_that("a task over its timeout gives a timeout and the worker serves the next", {
  with_workers(function() {
    pid <- worker_pids()
    v <- value_of(task(function() Sys.sleep(60), .timeout = 300), 45)
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "timeout")
    expect_identical(value_of(task(function() Sys.getpid())), as.integer(pid))
    expect_identical(value_of(task(function() Sys.sleep(0), .timeout = 30000)), NULL)
    expect_identical(status()$counters[["workers_dropped"]], 0)
  }, 1)
})

test_that("cancelling a running task gives cancelled and the same worker runs the next", {
  with_workers(function() {
    pid <- worker_pids()
    t <- task(function() {
      Sys.sleep(60)
      "not cancelled"
    })
    wait_for(function() status()$counters[["executing"]] == 1, 60, "the task to run")
    cancel(t)
    v <- value_of(t, 30)
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "cancelled")
    expect_identical(value_of(task(function() Sys.getpid())), as.integer(pid))
    expect_identical(worker_pids(), pid)
    expect_identical(status()$counters[["workers_dropped"]], 0)
    # A queued task cancelled before it runs, and a cancel of an ended task.
    blocker <- task(function() Sys.sleep(60))
    queued <- task(function() "ran")
    cancel(queued)
    expect_identical(value_of(queued, 30)$outcome, "cancelled")
    cancel(blocker)
    expect_identical(value_of(blocker, 30)$outcome, "cancelled")
    done <- task(function() "done")
    expect_identical(value_of(done), "done")
    expect_silent(cancel(done))
    expect_identical(done[], "done")
    expect_identical(status()$counters[["workers_dropped"]], 0)
  }, 1)
})

# A task that writes its worker's pid to `path` and then sleeps; the pid.
start_sleeper <- function(path, ...) {
  t <- task(function(path) {
    if (!file.exists(path)) {
      writeLines(as.character(Sys.getpid()), path)
      Sys.sleep(60)
    }
    Sys.getpid()
  }, path, ...)
  wait_for(function() file.exists(path) && length(readLines(path)) == 1, 60, "the task to start")
  list(task = t, pid = as.numeric(readLines(path)))
}

test_that("a SIGKILLed worker's task is worker-lost and the pool comes back to size", {
  with_workers(function() {
    path <- tempfile()
    on.exit(unlink(path))
    before <- worker_pids()
    s <- start_sleeper(path, .retries = 0)
    expect_true(s$pid %in% before)
    tools::pskill(s$pid, tools::SIGKILL)
    v <- value_of(s$task, 60)
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "worker-lost")
    after <- wait_for_pool(2, not = s$pid)
    expect_length(intersect(after, before), 1)
    expect_gte(status()$counters[["workers_started"]], 3)
    expect_identical(value_of(task(function() "alive")), "alive")
  }, 2)
})

test_that("with .retries = 1 the task of a SIGKILLed worker succeeds on another", {
  with_workers(function() {
    path <- tempfile()
    on.exit(unlink(path))
    s <- start_sleeper(path, .retries = 1)
    tools::pskill(s$pid, tools::SIGKILL)
    got <- value_of(s$task, 60)
    expect_false(is_error_value(got))
    expect_true(is.integer(got))
    expect_false(got == s$pid)
    wait_for_pool(2, not = s$pid)
  }, 2)
})

# A task that occupies the one worker of a pool until it is cancelled.
start_blocker <- function() {
  blocker <- task(global(function() Sys.sleep(60)))
  wait_for(function() status()$counters[["executing"]] == 1, 60, "the blocker to run")
  blocker
}

test_that("an R error is not retried; a task's worker counts it done", {
  with_workers(function() {
    path <- tempfile()
    on.exit(unlink(path))
    v <- value_of(task(global(function(path) {
      cat("run\n", file = path, append = TRUE)
      stop("once")
    }), path, .retries = 2))
    expect_identical(v$outcome, "error")
    expect_identical(readLines(path), "run")
    expect_identical(status()$workers$tasks_done, 1)
    expect_identical(value_of(task(function() 1)), 1)
    expect_identical(status()$workers$tasks_done, 2)
  }, 1)
})

test_that("stopping the workers under a running task ends its worker; collecting it is an error", {
  with_workers(function() {
    t <- start_blocker()
    pid <- worker_pids()
    workers(0)
    wait_for(function() !any_alive(pid), 60, "the worker to exit")
    expect_error(t[], "closed|stopped")
    expect_error(unresolved(t), "closed|stopped")
  }, 1)
})

test_that("the byte cap bounds queued payload and try_task() says so with NULL", {
  with_workers(function() {
    expect_identical(status()$counters[["queued_cap"]], 20000)
    blocker <- start_blocker()
    count <- global(function(x) length(x))
    admitted <- list()
    refused <- FALSE
    for (i in 1:40) {
      t <- try_task(count, runif(500))
      if (is.null(t)) {
        refused <- TRUE
        break
      }
      admitted[[length(admitted) + 1]] <- t
    }
    expect_true(refused)
    expect_gte(length(admitted), 1)
    counters <- status()$counters
    expect_lte(counters[["queued_bytes"]], 20000)
    expect_lte(counters[["queued_peak"]], 20000)
    expect_gt(counters[["queued_bytes"]], 4000 * length(admitted))
    expect_true(all(vapply(admitted, unresolved, TRUE)))
    cancel(blocker)
    expect_identical(value_of(blocker, 30)$outcome, "cancelled")
    for (t in admitted) expect_identical(value_of(t), 500L)
    wait_for(function() status()$counters[["queued_bytes"]] == 0, 60, "the queue to drain")
    again <- try_task(count, runif(500))
    expect_false(is.null(again))
    expect_identical(value_of(again), 500L)
    # A task that could never fit is an error value, not a wait without end.
    v <- value_of(task(count, runif(3000)), 30)
    expect_true(is_error_value(v))
    expect_match(v$message, "larger than the queue's cap")
  }, 1, memory = 20000)
})

# A field of /proc/PID/smaps_rollup (such as "Pss_Shmem"), in MB.
rollup_mb <- function(pid, field) {
  l <- grep(paste0("^", field, ":"), readLines(file.path("/proc", pid, "smaps_rollup")), value = TRUE)
  as.numeric(sub("^[^:]*: *([0-9]+) kB.*$", "\\1", l)) / 1024
}

test_that("a shared 100 MB argument to 8 tasks travels as its name", {
  with_workers(function() {
    x <- share(as.double(seq_len(12.5e6)))
    pids <- worker_pids()
    anon <- vapply(pids, rollup_mb, 0, "Anonymous")
    sent <- kura:::client_bytes()[["sent"]]
    add_sum <- global(function(v, k) sum(v) + k)
    tasks <- lapply(1:8, function(k) task(add_sum, x, k))
    grew <- kura:::client_bytes()[["sent"]] - sent
    expect_lt(grew, 1e5)
    total <- sum(as.double(seq_len(12.5e6)))
    expect_identical(vapply(tasks, value_of, 0), total + 1:8)
    # Each worker maps the one region and reads it in place: no private copy,
    # and the workers' shares of it add up to at most the data (the session
    # maps it too), not a copy per worker or per task.
    expect_true(all(vapply(pids, rollup_mb, 0, "Anonymous") - anon < 20))
    expect_lt(sum(vapply(pids, rollup_mb, 0, "Pss_Shmem")), 110)
  }, 2)
})

test_that("an unshared argument above kura.share_above is shared once, automatically", {
  with_workers(function() {
    look <- global(function(v) list(sum = sum(v), shared = kura::is_shared(v)))
    x <- runif(1e6)
    sent <- kura:::client_bytes()[["sent"]]
    first <- task(look, x)
    expect_lt(kura:::client_bytes()[["sent"]] - sent, 1e5)
    files <- region_files()
    second <- task(look, x)
    expect_identical(region_files(), files)
    expect_identical(value_of(first), list(sum = sum(x), shared = TRUE))
    expect_identical(value_of(second), list(sum = sum(x), shared = TRUE))
    expect_false(is_shared(x))
    expect_false(value_of(task(look, runif(100)))$shared)
    # Raised, the threshold lets larger arguments travel in the task, up to
    # the dispatcher's frame limit.
    withr::local_options(kura.share_above = 1e9)
    y <- runif(5e4)
    sent <- kura:::client_bytes()[["sent"]]
    inline <- task(look, y)
    expect_gt(kura:::client_bytes()[["sent"]] - sent, 4e5)
    expect_identical(value_of(inline), list(sum = sum(y), shared = FALSE))
    expect_error(task(look, runif(2e5)), "frame limit")
    # A temporary shared automatically lives until its task has run.
    withr::local_options(kura.share_above = 65536)
    blocker <- start_blocker()
    temporary <- task(look, as.double(seq_len(1e5)) + 0)
    invisible(gc())
    cancel(blocker)
    expect_identical(value_of(temporary), list(sum = sum(as.double(seq_len(1e5))), shared = TRUE))
  }, 1)
})

test_that("a task's shared arguments live until it has run, even temporaries", {
  with_workers(function() {
    blocker <- start_blocker()
    by_function <- task(global(function(v) sum(v)), share(c(1, 2, 3)))
    by_name <- task("sum", share(c(1, 2, 3, 4)))
    # Nothing in the session refers to the arguments any more: they must
    # still be there when the worker gets to the tasks.
    invisible(gc())
    cancel(blocker)
    expect_identical(value_of(blocker, 30)$outcome, "cancelled")
    expect_identical(value_of(by_function), 6)
    expect_identical(value_of(by_name), 10)
  }, 1)
})

test_that("an argument the worker cannot map gives an error value that says why", {
  with_workers(function() {
    x <- share(as.double(1:10))
    expect_true(file.remove(region_file(shared_name(x))))
    v <- value_of(task(global(function(v) sum(v)), x))
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "error")
    expect_match(v$message, "not found")
    expect_identical(value_of(task(global(function() "still serving"))), "still serving")
  }, 1)
})

test_that("a large result comes back mapped, without a copy", {
  with_workers(function() {
    t <- task(function(n) as.double(seq_len(n)), 1e7)
    wait_for(function() !unresolved(t), 60, "the task to end")
    received <- kura:::client_bytes()[["received"]]
    growth <- anon_growth(v <- t[])
    expect_lt(growth, 5)
    expect_true(is_shared(v))
    expect_false(is.null(shared_name(v)))
    expect_length(v, 1e7)
    expect_identical(v[c(1, 5e6, 1e7)], c(1, 5e6, 1e7))
    expect_identical(sum(v), sum(as.double(seq_len(1e7))))
    expect_lt(kura:::client_bytes()[["received"]] - received, 1e5)
    expect_true(region_exists(shared_name(v)))
  }, 1)
})

test_that("race() gives the task that ends first", {
  with_workers(function() {
    slow <- task(function() {
      Sys.sleep(60)
      "slow"
    })
    wait_for(function() status()$counters[["executing"]] == 1, 60, "the slow task to run")
    fast <- task(function() "fast")
    first <- within_seconds(race(list(slow, fast)), 60)
    expect_identical(first, fast)
    expect_identical(first[], "fast")
    expect_true(unresolved(slow))
    expect_true(unresolved(list(slow, fast)))
    # An ended task wins at once.
    expect_identical(within_seconds(race(list(slow, fast)), 60), fast)
    cancel(slow)
    expect_identical(value_of(slow, 30)$outcome, "cancelled")
    expect_false(unresolved(list(slow, fast)))
    expect_error(race(list()), "list of tasks")
    expect_error(race(list(fast, 1)), "list of tasks")
  }, 2)
})

# Two tasks that run at the same time, so on both workers of a pool of two:
# each waits (up to 30 s) for the other to start. Their pids and `setting`.
on_both_workers <- function() {
  dir <- tempfile()
  dir.create(dir)
  on.exit(unlink(dir, recursive = TRUE))
  meet <- function(dir, me, other) {
    file.create(file.path(dir, me))
    deadline <- Sys.time() + 30
    while (!file.exists(file.path(dir, other)) && Sys.time() < deadline) Sys.sleep(0.01)
    list(pid = Sys.getpid(), setting = if (exists("setting")) setting else NULL,
         met = file.exists(file.path(dir, other)))
  }
  tasks <- list(task(meet, dir, "a", "b"), task(meet, dir, "b", "a"))
  got <- lapply(tasks, value_of)
  expect_true(all(vapply(got, function(g) g$met, TRUE)))
  list(pids = vapply(got, function(g) as.numeric(g$pid), 0), settings = lapply(got, function(g) g$setting))
}

test_that("everywhere() sets up every worker, and a worker that replaces a killed one", {
  with_workers(function() {
    everywhere(setting <- base * 2, .args = list(base = 21))
    got <- on_both_workers()
    expect_setequal(got$pids, worker_pids())
    expect_identical(got$settings, list(42, 42))
    killed <- got$pids[[1]]
    tools::pskill(killed, tools::SIGKILL)
    pids <- wait_for_pool(2, not = killed)
    got <- on_both_workers()
    expect_setequal(got$pids, pids)
    expect_identical(got$settings, list(42, 42))
    expect_error(everywhere(stop("set-up failed")), "set-up failed")
    expect_error(everywhere(x, .args = list(1)), "named list")
  }, 2)
})

test_that("everywhere()'s large arguments reach a worker that starts later", {
  with_workers(function() {
    everywhere(total <- sum(big), .args = list(big = as.double(seq_len(1e5)) + 0))
    invisible(gc())
    killed <- worker_pids()
    tools::pskill(killed, tools::SIGKILL)
    wait_for_pool(1, not = killed)
    expect_identical(value_of(task(global(function() total))), sum(as.double(seq_len(1e5))))
  }, 1)
})

test_that("a seed gives the same random numbers over 1 and 2 workers", {
  draw <- function(n) {
    out <- NULL
    with_workers(function() {
      tasks <- lapply(1:6, function(i) task(function() runif(3)))
      out <<- lapply(tasks, value_of)
    }, n, seed = 42)
    out
  }
  one <- draw(1)
  two <- draw(2)
  expect_identical(one, two)
  expect_length(unique(one), 6)
  expect_true(all(vapply(one, function(u) length(u) == 3 && all(u > 0 & u < 1), TRUE)))
})

test_that("R calls a C++ worker's built-in function by name", {
  tool <- kura_tool()
  with_workers(function() {
    log <- tempfile()
    on.exit(unlink(log))
    system2(tool, c("worker", "--connect", session_socket()), stdout = log, stderr = log, wait = FALSE)
    wait_for(function() any(grepl("(^|,)sum(,|$)", status()$workers$functions)), 60, "the C++ worker")
    cpp <- status()$workers
    cpp_pid <- cpp$pid[grepl("(^|,)sum(,|$)", cpp$functions)]
    .seen$pids <- union(.seen$pids, cpp_pid)
    expect_identical(value_of(task("sum", share(c(1, 2, 3)))), 6)
    expect_identical(value_of(task("sum", c(1, 2, 3, 4))), 10)
    expect_identical(value_of(task("echo", "h\u00e9")), "h\u00e9")
    v <- value_of(task("fail", "on purpose"))
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "error")
    expect_identical(value_of(task(function() "an R task")), "an R task")
  }, 1)
})

test_that("a C++ client calls an R function the workers registered", {
  with_workers(function() {
    w <- status()$workers
    expect_match(w$functions, "twice")
    r <- run_tool(c("submit", "--socket", session_socket(), "twice", "21"))
    expect_identical(r$status, 0L, info = paste(r$out, collapse = "\n"))
    expect_identical(trimws(r$out[length(r$out)]), "f64[1] 42")
    expect_identical(value_of(task("twice", 4)), 8)
    expect_identical(value_of(task("twice", share(c(1, 2)))), c(2, 4))
    v <- value_of(task("twice", "a"))
    expect_identical(v$outcome, "error")
    expect_match(v$message, "non-numeric argument")
  }, 1, functions = list(twice = function(x) x * 2))
})

test_that("workers(socket =) uses a running dispatcher with C++ and serve() workers; losing it gives disconnected", {
  tool <- kura_tool()
  dir <- tempfile("kura-d")
  dir.create(dir, mode = "0700")
  on.exit(unlink(dir, recursive = TRUE))
  socket <- file.path(dir, "d.sock")
  log <- file.path(dir, "log")
  system2("sh", c("-c", shQuote(sprintf(
    "echo $$ > %s; exec %s dispatcher --socket %s --workers 1",
    file.path(dir, "pid"), tool, socket
  ))), stdout = log, stderr = log, wait = FALSE)
  wait_for(function() file.exists(socket) && file.exists(file.path(dir, "pid")), 60, "the dispatcher")
  dispatcher <- as.numeric(readLines(file.path(dir, "pid")))
  on.exit(tools::pskill(dispatcher, tools::SIGKILL), add = TRUE, after = FALSE)
  system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(sprintf(
    "kura::serve('%s', list(triple = function(x) x * 3))", socket
  ))), stdout = log, stderr = log, wait = FALSE)
  with_workers(function() {
    wait_for(function() {
      w <- status()$workers
      nrow(w) == 2 && any(grepl("triple", w$functions))
    }, 60, "a C++ worker and an R worker")
    .seen$pids <- c(worker_pids(), dispatcher)
    expect_identical(value_of(task("sum", share(c(1, 2, 3)))), 6)
    expect_identical(value_of(task("triple", 2)), 6)
    # Only the R worker has R tasks' function.
    expect_identical(value_of(task(function() 40 + 2)), 42)
    t <- task(global(function() Sys.sleep(60)))
    wait_for(function() status()$counters[["executing"]] == 1, 60, "the task to run")
    tools::pskill(dispatcher, tools::SIGKILL)
    v <- value_of(t, 60)
    expect_true(is_error_value(v))
    expect_identical(v$outcome, "disconnected")
  }, socket = socket)
})

test_that("sync mode runs tasks in the session, in order, with error values", {
  with_workers(function() {
    ran <- character()
    tasks <- lapply(1:3, function(i) task(function(i) {
      ran <<- c(ran, as.character(i))
      Sys.getpid()
    }, i))
    expect_identical(ran, c("1", "2", "3"))
    expect_false(unresolved(tasks))
    expect_identical(tasks[[1]][], Sys.getpid())
    v <- task(function() stop("boom"))[]
    expect_true(is_error_value(v))
    expect_identical(v$message, "boom")
    expect_identical(v$outcome, "error")
    expect_identical(task(quote(a * 2), a = 5)[], 10)
    expect_identical(task("twice", 3)[], 6)
    expect_true(is_error_value(task("missing", 3)[]))
    expect_identical(race(tasks), tasks[[1]])
  }, sync = TRUE, functions = list(twice = function(x) x * 2))
})

test_that("bad arguments are errors that say what is wrong", {
  expect_error(workers(-1), "whole number")
  expect_error(workers(1.5), "whole number")
  expect_error(workers(NA), "whole number")
  expect_error(workers(1, memory = -1), "number of bytes")
  expect_error(workers(1, functions = list(function(x) x)), "named list of functions")
  expect_error(workers(1, functions = list(kura.r = function(x) x)), "kura's own")
  expect_identical(workers(), 0L)
  expect_error(task(function() 1), "no workers")
  expect_error(status(), "no workers")
  expect_error(serve(file.path(tempdir(), "no-such.sock")), "cannot connect")
  expect_error(serve(1), "socket must be a string")
  expect_error(serve("x", list(function(x) x)), "named list of functions")
  with_workers(function() {
    expect_error(task(1), "must be a function")
    expect_error(task(c("a", "b")), "one function name")
    expect_error(task(quote(x + 1), 2), "must be named")
    expect_error(task(function() 1, .timeout = -1), "milliseconds")
    expect_error(task(function() 1, .args = 3), "must be a list")
    expect_error(task(function() 1, .retries = 1e6), "retries")
    expect_error(cancel(1), "task or a list of tasks")
    t <- task(function() 1)
    expect_identical(value_of(t), 1)
    expect_output(print(t), "ended")
  }, 1)
})
