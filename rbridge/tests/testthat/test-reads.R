# Whole-vector reads: R's loops over a whole vector (sum(), mean(), anyNA(),
# ...) ask for its data pointer, and the vector's pages are then mapped in
# at once; element access maps only the pages it reads. Rss counts the
# region's pages this process has mapped in (helper-kura.R).

test_that("element access maps in only the pages it reads", {
  n <- 2^21 # 16 MiB of doubles
  y <- share(as.double(seq_len(n)))
  name <- shared_name(y)
  expect_identical(y[1], 1)
  expect_identical(y[[n]], n)
  expect_identical(y[c(2, n / 2)], c(2, n / 2))
  expect_identical(head(y, 3), c(1, 2, 3))
  expect_identical(tail(y, 1), n)
  expect_identical(length(y), as.integer(n))
  expect_identical(y[1:10], as.double(1:10))
  expect_match(capture.output(str(y)), "num")
  # A few fault-around windows (64 KiB each), not the vector's 16 MiB.
  expect_lt(region_rss_kb(name), 1024)
})

test_that("a whole-vector read maps the vector's pages in at once", {
  n <- 2^21
  # anyNA() asks for the whole vector's data and stops at the first element:
  # the pages it did not read are mapped in all the same.
  y <- share(c(NA, as.double(seq_len(n - 1))))
  name <- shared_name(y)
  expect_lt(region_rss_kb(name), 1024)
  expect_true(anyNA(y))
  expect_gt(region_rss_kb(name), 16 * 1024)
  expect_false(is.na(y[n]))
})

test_that("whole-vector reads give the plain vector's results and ask for no writable pointer", {
  n <- 1e6
  plain <- list(
    real = as.double(seq_len(n)) / 7,
    integer = seq_len(n) %% 1000L,
    logical = seq_len(n) %% 3L == 0L
  )
  for (kind in names(plain)) {
    x <- plain[[kind]]
    y <- map_shared(shared_name(share(x)))
    expect_identical(sum(y), sum(x), info = kind)
    expect_identical(mean(y), mean(x), info = kind)
    expect_identical(anyNA(y), FALSE, info = kind)
    expect_false(asked_writable(y), info = kind)
    # range() goes through c(), which asks for a writable pointer.
    expect_identical(range(y), range(x), info = kind)
    expect_true(is_shared(y), info = kind)
  }
})

test_that("a second process reads the column means of a shared data frame", {
  df <- as.data.frame(lapply(1:3, function(j) as.double(seq_len(1e6)) * j))
  sdf <- share(df)
  cl <- start_worker()
  on.exit(parallel::stopCluster(cl))
  got <- parallel::clusterCall(cl, function(d) {
    means <- vapply(d, mean, 0)
    list(means = means, writable = vapply(d, function(col) {
      any(grepl("(writable)", capture.output(.Internal(inspect(col))), fixed = TRUE))
    }, NA))
  }, sdf)[[1]]
  expect_identical(unname(got$means), unname(colMeans(df)))
  expect_false(any(got$writable))
})
