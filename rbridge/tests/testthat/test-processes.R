# Two R processes: this one and a PSOCK worker sharing one region directory.

test_that("a value shared in another process maps here, by root and by path", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  names <- parallel::clusterEvalQ(cl, {
    shared <- share(list(
      df = data.frame(a = 1:3, b = c("x", NA, "z")),
      v = c(p = 1.5, q = NA),
      s = list(deep = list(f = factor(c("u", "v"))))
    ))
    c(root = shared_name(shared), deep = shared_name(shared$s$deep$f))
  })[[1]]
  x <- map_shared(names[["root"]])
  expect_identical(x$df, data.frame(a = 1:3, b = c("x", NA, "z")))
  expect_identical(x$v, c(p = 1.5, q = NA))
  expect_identical(map_shared(names[["deep"]]), factor(c("u", "v")))
  expect_identical(map_shared(paste0(names[["root"]], "[1,2]")), c("x", NA, "z"))
  expect_identical(shared_name(x$s$deep$f), names[["deep"]])
})

test_that("a value shared here maps in another process", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  x <- share(list(a = as.double(1:1e6), b = letters))
  got <- parallel::clusterCall(cl, function(root, leaf) {
    y <- map_shared(root)
    list(sum = sum(y$a), b = y$b, leaf = map_shared(leaf)[3])
  }, shared_name(x), shared_name(x$b))[[1]]
  expect_identical(got$sum, sum(as.double(1:1e6)))
  expect_identical(got$b, letters)
  expect_identical(got$leaf, "c")
})

test_that("a shared 1e7-double vector serializes in under 1 KB and unserializes elsewhere", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  y <- share(as.double(seq_len(1e7)) / 3)
  bytes <- serialize(y, NULL)
  expect_lt(length(bytes), 1024)
  same <- parallel::clusterCall(cl, function(b) {
    z <- unserialize(b)
    c(identical = identical(z, as.double(seq_len(1e7)) / 3), shared = is_shared(z))
  }, bytes)[[1]]
  expect_true(same[["identical"]])
  expect_true(same[["shared"]])
})

test_that("shared objects cross parallel as names, and come back shared", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  df <- share(data.frame(a = as.double(1:1e6), b = rep(c("x", "y"), 5e5)))
  out <- parallel::clusterCall(cl, function(d) {
    list(name = shared_name(d), mean = mean(d$a), back = d)
  }, df)[[1]]
  expect_identical(out$name, shared_name(df))
  expect_identical(out$mean, mean(as.double(1:1e6)))
  expect_identical(shared_name(out$back), shared_name(df))
})

test_that("a write in the consumer leaves the producer and the region unchanged", {
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  name <- parallel::clusterEvalQ(cl, {
    produced <- share(as.double(seq_len(1e7)))
    shared_name(produced)
  })[[1]]
  y <- map_shared(name)
  invisible(gc())
  before <- anon_mb()
  y[1] <- 0
  expect_lt(anon_mb() - before, 1)
  expect_false(is_shared(y))
  producer <- parallel::clusterEvalQ(cl, c(produced[1], is_shared(produced)))[[1]]
  expect_identical(producer, c(1, 1))
  expect_identical(map_shared(name)[1], 1)
})

test_that("a modified object serializes as its data", {
  y <- share(as.double(1:1e5))
  y[1] <- 0
  bytes <- serialize(y, NULL)
  expect_gt(length(bytes), 8e5)
  expect_identical(unserialize(bytes)[1:2], c(0, 2))
})

test_that("serialize_by_name(FALSE) writes data, for files that outlive the region", {
  y <- share(c(a = 1.5, b = 2.5))
  old <- serialize_by_name(FALSE)
  on.exit(serialize_by_name(old))
  expect_true(old)
  expect_false(serialize_by_name())
  path <- tempfile(fileext = ".rds")
  saveRDS(y, path)
  serialize_by_name(TRUE)
  name <- shared_name(y)
  rm(y)
  invisible(gc())
  expect_false(region_exists(name))
  expect_identical(readRDS(path), c(a = 1.5, b = 2.5))
  unlink(path)
})

test_that("unserializing the name of a region that is gone is an error that says so", {
  y <- share(as.double(1:10))
  bytes <- serialize(y, NULL)
  rm(y)
  invisible(gc())
  expect_error(unserialize(bytes), "not found")
})

test_that("attributes of a shared vector travel with its name", {
  y <- share(setNames(as.double(1:1000), paste0("n", 1:1000)))
  bytes <- serialize(y, NULL)
  expect_lt(length(bytes), 2048) # the long names go by reference too
  z <- unserialize(bytes)
  expect_identical(z, y)
  expect_true(is_shared(z))
  f <- share(factor(c("a", "b", "a")))
  expect_identical(unserialize(serialize(f, NULL)), factor(c("a", "b", "a")))
})
