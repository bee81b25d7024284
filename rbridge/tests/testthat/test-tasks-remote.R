# An R worker on "another host": it connects over TCP with the shared secret,
# in a region directory of its own, so the session's names mean nothing
# there and their bytes are pulled once; its large results come back as
# regions of the session's.

test_that("an R worker over TCP pulls the bytes behind a name once and sends results back as names", {
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
  address <- sub("^listening on ", "", grep("tcp://", readLines(log), value = TRUE)[1])
  system2("env", c(paste0("KURA_SHM_DIR=", remote), file.path(R.home("bin"), "Rscript"), "-e", shQuote(sprintf(
    "kura::serve('%s', secret_file = '%s')", address, secret
  ))), stdout = log, stderr = log, wait = FALSE)
  with_workers(function() {
    wait_for(function() nrow(status()$workers) == 1, 60, "the R worker over TCP")
    x <- share(as.numeric(1:1e6))
    expect_identical(value_of(task(function(v) sum(v), x)), sum(as.numeric(1:1e6)))
    s1 <- status()$counters
    expect_identical(s1[["pulls"]], 1)
    expect_gte(s1[["pulled_bytes"]], 8e6)
    # Again: the worker's copy is current, no bytes are sent.
    expect_identical(value_of(task(function(v) length(v), x)), 1e6)
    s2 <- status()$counters
    expect_identical(s2[["pulls"]], 2)
    expect_identical(s2[["pulled_bytes"]], s1[["pulled_bytes"]])
    # A large result travels back and is mapped here, not copied through
    # the socket.
    y <- value_of(task(function(v) v * 2, x))
    expect_identical(y[1e6], 2e6)
    expect_gte(status()$counters[["pushed_bytes"]], 8e6)
    expect_true(is_shared(y))
  }, socket = socket)
  tools::pskill(dispatcher, tools::SIGTERM)
  wait_for(function() length(list.files(remote, pattern = "^kura_.*_")) == 0, 60,
           "the R worker's copies to go")
})
