# shared_name() and is_shared(): names of roots and of everything extracted
# from a shared list, and NULL once an object no longer equals its region.

test_that("roots and leaves have names that map back to them", {
  x <- share(list(a = 1:3, b = list(c = "x", d = c(u = 1.5)), e = NULL))
  root <- shared_name(x)
  expect_match(root, "^/kura_[0-9a-f]+_[0-9a-f]+$")
  expect_identical(shared_name(x$a), paste0(root, "[1]"))
  expect_identical(shared_name(x$b), paste0(root, "[2]"))
  expect_identical(shared_name(x$b$c), paste0(root, "[2,1]"))
  expect_identical(shared_name(x$b$d), paste0(root, "[2,2]"))
  for (el in list(x, x$a, x$b, x$b$c, x$b$d)) {
    expect_identical(map_shared(shared_name(el)), el)
  }
  expect_null(map_shared(paste0(root, "[3]")))
  expect_null(shared_name(x$e))
})

test_that("objects that were never shared have no name", {
  for (x in list(1, "a", list(1), NULL, mean, new.env(), data.frame(a = 1))) {
    expect_null(shared_name(x))
    expect_false(is_shared(x))
  }
})

test_that("a part that is not a node has no name", {
  x <- share(list(a = 1, b = 2, c = 3))
  expect_null(shared_name(x[1:2]))
  expect_null(shared_name(x[c("a", "b", "c")][-1]))
  expect_null(shared_name(names(x)))
})

test_that("a modified vector has no name and is no longer shared", {
  y <- share(c(1, 2, 3))
  name <- shared_name(y)
  y[2] <- 5
  expect_null(shared_name(y))
  expect_false(is_shared(y))
  expect_identical(map_shared(name), c(1, 2, 3))
})

test_that("reading through a writable pointer does not unshare", {
  y <- share(as.double(1:10))
  z <- as.double(1:10)
  expect_true(identical(y, z)) # identical() asks R for writable pointers
  expect_equal(drop(y %*% y), sum(z^2))
  expect_true(is_shared(y))
})

test_that("changed attributes unshare a vector", {
  y <- share(c(a = 1, b = 2))
  names(y)[2] <- "z"
  expect_null(shared_name(y))
  y2 <- share(1:3)
  attr(y2, "note") <- "x"
  expect_false(is_shared(y2))
  y3 <- share(structure(1:3, class = "foo"))
  class(y3) <- NULL
  expect_false(is_shared(y3))
  y4 <- share(c(1, 2))
  names(y4) <- c("a", "b")
  expect_false(is_shared(y4))
})

test_that("a copy of a shared vector is shared until written", {
  y <- share(c(1, 2, 3))
  z <- y
  z[1] <- 0
  expect_true(is_shared(y))
  expect_false(is_shared(z))
  expect_identical(y, c(1, 2, 3))
})

test_that("a modified string vector is no longer shared", {
  s <- share(c("a", "b"))
  s[2] <- "c"
  expect_false(is_shared(s))
  expect_identical(s, c("a", "c"))
  s2 <- share(c("a", "b"))
  s2[2] <- "b" # same value: still what the region holds
  expect_true(is_shared(s2))
})

test_that("a list changed in place is no longer shared", {
  x <- share(list(a = 1, b = "x", c = list(d = 2)))
  x$a <- 2
  expect_null(shared_name(x))
  x2 <- share(list(a = 1, b = "x"))
  names(x2) <- c("p", "q")
  expect_false(is_shared(x2))
  x3 <- share(list(a = 1, b = list(c = 2)))
  x3$b$c[1] <- 3
  expect_false(is_shared(x3))
  expect_false(is_shared(x3$b))
  x4 <- share(list(a = 1, b = 2))
  x4[[3]] <- 3
  expect_false(is_shared(x4))
  x5 <- share(data.frame(a = 1:3))
  x5$b <- 4:6
  expect_false(is_shared(x5))
  x6 <- share(list(1, 2))
  attr(x6, "extra") <- TRUE
  expect_false(is_shared(x6))
})

test_that("a list rebuilt from its own shared elements is shared again", {
  x <- share(list(a = 1, b = "x"))
  y <- list(a = x$a, b = x$b)
  expect_identical(shared_name(y), shared_name(x))
})

test_that("a list with no named element has no name", {
  x <- share(list(NULL, NULL))
  expect_identical(x, list(NULL, NULL))
  expect_null(shared_name(x))
})
