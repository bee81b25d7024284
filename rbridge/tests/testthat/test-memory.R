# Reading never copies a shared vector, and a write copies only the pages it
# touches. Anonymous memory (/proc/self/smaps_rollup) counts private copies
# and not the shared-memory pages of a region.

test_that("reading elements and ranges makes no copy of the vector", {
  n <- 1e7
  producer <- share(as.double(seq_len(n)) / 7)
  y <- map_shared(shared_name(producer))
  invisible(gc())
  expect_lt(anon_growth(y[1]), 1)
  expect_lt(anon_growth(y[1:10]), 1)
  expect_lt(anon_growth(head(y)), 1)
  expect_lt(anon_growth(range(y)), 1)
  expect_lt(anon_growth(y[length(y)]), 1)
  expect_lt(anon_growth(sum(y)), 1)
  expect_lt(anon_growth(mean(y)), 1)
  expect_lt(anon_growth(max(y)), 1)
  expect_lt(anon_growth(capture.output(print(y, max = 20))), 1)
  expect_lt(anon_growth(median(y)), 1)
  expect_lt(anon_growth(identical(y, producer)), 1)
  expect_lt(anon_growth(drop(y %*% y)), 1)
  expect_identical(y[length(y)], n / 7)
  expect_equal(sum(y), n * (n + 1) / 2 / 7)
  expect_true(is_shared(y))
})

test_that("the reads themselves touch no private memory", {
  y <- share(as.double(1:1e7))
  # Without a gc between: no temporary either, for these.
  invisible(gc())
  before <- anon_mb()
  a <- y[1]
  b <- y[1:10]
  h <- head(y)
  l <- y[length(y)]
  s <- sum(y)
  expect_lt(anon_mb() - before, 1)
})

test_that("a write copies a page, not the vector, and never reaches the region", {
  n <- 1e7
  producer <- share(as.double(seq_len(n)))
  name <- shared_name(producer)
  y <- map_shared(name)
  invisible(gc())
  before <- anon_mb()
  y[1] <- 0
  expect_lt(anon_mb() - before, 1)
  expect_false(is_shared(y))
  expect_identical(y[1:3], c(0, 2, 3))
  expect_identical(producer[1], 1)
  expect_identical(map_shared(name)[1], 1)
  # Further writes keep copying page by page.
  before <- anon_mb()
  y[n] <- -1
  y[n / 2] <- -2
  expect_lt(anon_mb() - before, 1)
  expect_identical(y[c(n / 2, n)], c(-2, -1))
  expect_identical(producer[c(n / 2, n)], c(n / 2, n))
})

test_that("integer, logical, raw and complex vectors copy on write too", {
  for (x in list(1:1e6, rep(c(TRUE, FALSE, NA), 1e5), as.raw(1:200), complex(real = 1:5, imaginary = 5:1))) {
    y <- share(x)
    name <- shared_name(y)
    y[2] <- y[1]
    expect_identical(y[2], x[1])
    expect_identical(map_shared(name), x)
  }
})

test_that("a write after the region is unlinked falls back to a full copy", {
  y <- share(as.double(1:1e5))
  name <- shared_name(y)
  z <- map_shared(name)
  file.remove(region_file(name)) # as if its owner had released it
  z[1] <- 0
  expect_identical(z[1:3], c(0, 2, 3))
  expect_false(is_shared(z))
  expect_identical(y[1], 1)
})

test_that("small vectors are copied whole on write, however many", {
  x <- share(lapply(1:20000, function(i) as.double(c(i, -i))))
  name <- shared_name(x)
  for (i in seq_along(x)) x[[i]][1] <- 0
  expect_identical(x[[20000]], c(0, -20000))
  expect_identical(map_shared(paste0(name, "[20000]")), c(20000, -20000))
  expect_false(is_shared(x))
})
