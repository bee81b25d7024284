# An R worker on "another host": it connects over TCP with the shared secret,
# in a region directory of its own, so the session's names mean nothing
# there and their bytes are pulled once; its large results come back as
# regions of the session's.

# Runs `check(remote)` with a dispatcher listening on loopback TCP and one R
# worker serving `functions` in the region directory `remote` of its own,
# the session connected; stops them and checks the worker's copies go.
with_remote_worker <- function(functions, check) {
  tool <- kura_tool()
  dir <- tempfile("kura-r")
  dir.create(dir, mode = "0700")
  remote <- tempfile("kura-remote", tmpdir = dirname(region_dir()))
  dir.create(remote, mode = "0700")
  on.exit(unlink(c(dir, remote), recursive = TRUE))
  socket <- file.path(dir, "d.sock")
  secret <- file.path(dir, "secret")
  expect_identical(system2(tool, c("secret", secret), stdout = FALSE), 0L)
  log <- file.path(dir, "log")
  system2("sh", c("-c", shQuote(sprintf(
    "echo $$ > %s; exec %s dispatcher --socket %s --workers 0 --listen tcp://127.0.0.1:0 --secret-file %s",
    file.path(dir, "pid"), tool, socket, secret
  ))), stdout = log, stderr = log, wait = FALSE)
  wait_for(function() file.exists(file.path(dir, "pid")) && any(grepl("tcp://", readLines(log))), 60,
           "the dispatcher")
  dispatcher <- as.numeric(readLines(file.path(dir, "pid")))
  on.exit(tools::pskill(dispatcher, tools::SIGKILL), add = TRUE, after = FALSE)
  address <- regmatches(readLines(log), regexpr("tcp://[0-9.]+:[0-9]+", readLines(log)))[1]
  system2("env", c(paste0("KURA_SHM_DIR=", remote), file.path(R.home("bin"), "Rscript"), "-e", shQuote(sprintf(
    "kura::serve('%s', %s, secret_file = '%s')", address, functions, secret
  ))), stdout = log, stderr = log, wait = FALSE)
  with_workers(function() {
    wait_for(function() nrow(status()$workers) == 1, 60, "the R worker over TCP")
    check(remote)
  }, socket = socket)
  tools::pskill(dispatcher, tools::SIGTERM)
  wait_for(function() length(list.files(remote, pattern = "^kura_.*_")) == 0, 60,
           "the R worker's copies to go")
}

test_that("an R worker over TCP pulls the bytes behind a name once and sends results back as names", {
  with_remote_worker("list(total = function(v) sum(v), n = length, twice = function(v) v * 2)", function(remote) {
    x <- share(as.numeric(1:1e6))
    expect_identical(value_of(task("total", x)), sum(as.numeric(1:1e6)))
    s1 <- status()$counters
    expect_identical(s1[["pulls"]], 1)
    expect_gte(s1[["pulled_bytes"]], 8e6)
    # Again: the worker's copy is current, no bytes are sent.
    expect_identical(value_of(task("n", x)), 1000000L)
    s2 <- status()$counters
    expect_identical(s2[["pulls"]], 2)
    expect_identical(s2[["pulled_bytes"]], s1[["pulled_bytes"]])
    # A large result travels back and is mapped here, not copied through
    # the socket.
    y <- value_of(task("twice", x))
    expect_identical(y[1e6], 2e6)
    expect_gte(status()$counters[["pushed_bytes"]], 8e6)
    expect_true(is_shared(y))
  })
})

test_that("a closure task on an R worker over TCP reads the shared objects inside it from pulled copies", {
  with_remote_worker("list()", function(remote) {
    x <- share(as.numeric(1:1e6))
    # A shared argument of a closure.
    expect_identical(value_of(task(function(v) sum(v), x)), sum(as.numeric(1:1e6)))
    s1 <- status()$counters
    expect_identical(s1[["pulls"]], 1)
    expect_gte(s1[["pulled_bytes"]], 8e6)
    # A shared object in the closure's environment, and an expression's
    # variable: the same name, already pulled.
    f <- local({
      captured <- x
      function() captured[[10]] + length(captured)
    })
    expect_identical(value_of(task(f)), 10 + 1e6)
    expect_identical(value_of(task(quote(sum(v[1:3])), v = x)), 6)
    expect_identical(status()$counters[["pulled_bytes"]], s1[["pulled_bytes"]])
    # One element of a shared list: only its sub-tree crosses (the function
    # is global: one defined here would carry this environment, `l` in it).
    l <- share(list(small = 1:3, big = as.numeric(1:5e5)))
    last <- function(b) b[[length(b)]]
    environment(last) <- globalenv()
    expect_identical(value_of(task(last, l$big)), 5e5)
    pulled <- status()$counters[["pulled_bytes"]] - s1[["pulled_bytes"]]
    expect_gte(pulled, 4e6)
    expect_lt(pulled, 4.5e6)
    # map() over closures does the same.
    expect_identical(unlist(task_map(1:3, function(i) x[[i]] * 2)), c(2, 4, 6))
    # The worker held copies (regions, not only its lease file), not the
    # session's names.
    expect_gt(length(list.files(remote, pattern = "^kura_.*_")), 0)
  })
})
