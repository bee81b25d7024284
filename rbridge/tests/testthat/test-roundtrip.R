# share() then map_shared(): every R type and attribute kind comes back
# identical, from the object share() returns and from a fresh map by name.

expect_round_trip <- function(x) {
  y <- share(x)
  expect_identical(y, x)
  name <- shared_name(y)
  expect_type(name, "character")
  expect_true(is_shared(y))
  expect_identical(map_shared(name), x)
  invisible(y)
}

test_that("atomic vectors of every type, with NA", {
  expect_round_trip(c(1.5, NA, -Inf, Inf, NaN, 0, -0, 1e308))
  expect_round_trip(c(1L, NA, .Machine$integer.max, -.Machine$integer.max))
  expect_round_trip(c(TRUE, NA, FALSE))
  expect_round_trip(as.raw(c(0, 1, 255)))
  expect_round_trip(complex(real = c(1, NA, 3), imaginary = c(-1, 2, NA)))
  expect_round_trip(c("a", NA, "", "long string with spaces"))
})

test_that("NA_real_ keeps its payload and NaN stays NaN", {
  y <- share(c(NA_real_, NaN))
  expect_true(is.na(y[1]) && !is.nan(y[1]))
  expect_true(is.nan(y[2]))
})

test_that("empty vectors and NULL", {
  for (x in list(double(), integer(), logical(), raw(), complex(), character(), list())) {
    y <- share(x)
    expect_identical(y, x)
  }
  expect_round_trip(double())
  expect_round_trip(character())
  expect_null(share(NULL))
})

test_that("strings keep their encodings", {
  utf8 <- "caf\u00e9 \u65e5\u672c"
  latin1 <- iconv("caf\u00e9", "UTF-8", "latin1")
  Encoding(latin1) <- "latin1"
  bytes <- "\xff\xfe"
  Encoding(bytes) <- "bytes"
  x <- c(utf8, latin1, bytes, NA, "ascii")
  y <- expect_round_trip(x)
  expect_identical(Encoding(y), Encoding(x))
  expect_identical(Encoding(map_shared(shared_name(y))), Encoding(x))
})

test_that("long character vectors are read lazily and completely", {
  x <- paste0("s", seq_len(2e5))
  x[c(7, 1e5)] <- NA
  y <- expect_round_trip(x)
  expect_identical(y[1e5 + 1], "s100001")
  expect_identical(sort(y)[1:3], sort(x)[1:3])
})

test_that("names, dim, dimnames and arbitrary attributes", {
  expect_round_trip(c(a = 1, b = 2, c = NA))
  m <- matrix(1:6, 2, dimnames = list(c("r1", "r2"), c("a", "b", "c")))
  expect_round_trip(m)
  expect_round_trip(array(as.double(1:24), c(2, 3, 4)))
  x <- structure(1:3, units = "cm", note = list(a = 1, b = "x"), class = "myclass")
  expect_round_trip(x)
  expect_round_trip(structure(list(1, "a"), names = c("n1", NA)))
})

test_that("long names are shared vectors too and come back identical", {
  x <- setNames(as.double(1:1000), paste0("n", 1:1000))
  y <- expect_round_trip(x)
  expect_identical(names(y)[1000], "n1000")
})

test_that("factors, dates and times", {
  expect_round_trip(factor(c("lo", "hi", NA, "lo"), levels = c("lo", "hi")))
  expect_round_trip(factor(c("b", "a"), ordered = TRUE))
  expect_round_trip(as.Date(c("2024-02-29", NA, "1970-01-01")))
  expect_round_trip(as.POSIXct(c("2024-01-01 12:00:00", NA), tz = "Pacific/Auckland"))
  expect_round_trip(as.POSIXlt(c("2024-01-01 12:00:00", "1999-12-31 23:59:59"), tz = "UTC"))
  expect_round_trip(as.difftime(c(1, 2.5), units = "hours"))
})

test_that("data frames", {
  df <- data.frame(
    id = 1:4, score = c(0.5, NA, 2.25, 1), label = c("a", NA, "c", "d"),
    flag = c(TRUE, FALSE, NA, TRUE), f = factor(c("x", "y", "x", NA)),
    stringsAsFactors = FALSE
  )
  expect_round_trip(df)
  df2 <- df
  rownames(df2) <- c("w", "x", "y", "z")
  expect_round_trip(df2)
  df3 <- data.frame(a = 1:2)
  df3$l <- list(1:3, "x")
  expect_round_trip(df3)
  expect_round_trip(df[0, ])
})

test_that("nested lists to depth, with NULL and empty elements", {
  x <- list(a = 1, b = list(c = "x", d = list(e = NULL, f = list(), g = list(h = 1:3))), i = character())
  expect_round_trip(x)
  deep <- 1
  for (i in 1:30) deep <- list(deep)
  expect_round_trip(deep)
})

test_that("too deep a value is refused with a message", {
  deep <- 1
  for (i in 1:70) deep <- list(deep)
  before <- region_files()
  expect_error(share(deep), "deep")
  expect_identical(setdiff(region_files(), before), character())
})

test_that("objects with no kura form: unchanged alone, rds3 inside a list", {
  f <- function(x) x + 1
  e <- new.env()
  assign("v", 42, envir = e)
  expect_identical(share(f), f)
  expect_identical(share(e), e)
  expect_identical(share(quote(a + b)), quote(a + b))
  expect_identical(share(y ~ x), y ~ x)
  l <- share(list(f = f, e = e, q = quote(a + b), fm = y ~ x, n = 1))
  expect_identical(l$f(1), 2)
  expect_identical(get("v", envir = l$e), 42)
  expect_identical(l$q, quote(a + b))
  expect_equal(l$fm, y ~ x, ignore_formula_env = TRUE)
  expect_match(shared_name(l$n), "\\[5\\]$")
  expect_true(is_shared(l))
  # An rds3 element changed in place: the list is no longer what the region
  # holds.
  assign("v", 43, envir = l$e)
  expect_false(is_shared(l))
  l2 <- share(list(f = f, q = quote(a + b), n = 1))
  expect_true(is_shared(l2))
  expect_identical(shared_name(l2$n), paste0(shared_name(l2), "[3]"))
  # Calling a function compiles it in place; the list is still what the
  # region holds.
  l2$f(2)
  l2$f(3)
  expect_true(is_shared(l2))
})

test_that("sharing a shared object returns it", {
  y <- share(c(1, 2, 3))
  expect_identical(shared_name(share(y)), shared_name(y))
  df <- share(data.frame(a = 1:3, b = letters[1:3]))
  expect_identical(shared_name(share(df)), shared_name(df))
  expect_identical(shared_name(share(df$b)), shared_name(df$b))
})

test_that("compact sequences and other ALTREP vectors are shared by value", {
  expect_round_trip(1:1e5)
  expect_round_trip(seq(1, 2, length.out = 11))
  expect_round_trip(as.character(1:100))
})

test_that("integer64 maps zero-copy with bit64, to doubles without", {
  skip_if_not_installed("bit64")
  x <- bit64::as.integer64(c("9007199254740993", NA, "-5"))
  y <- expect_round_trip(x)
  expect_identical(as.character(y), c("9007199254740993", NA, "-5"))
  old <- kura:::use_bit64(FALSE)
  on.exit(kura:::use_bit64(old))
  z <- map_shared(shared_name(y))
  expect_identical(class(z), "numeric")
  expect_identical(z, c(9007199254740992, NA, -5))
})

test_that("the shared copy is a new object: modifying it leaves the original", {
  x <- c(1, 2, 3)
  y <- share(x)
  y[2] <- 20
  expect_identical(x, c(1, 2, 3))
  expect_identical(y, c(1, 20, 3))
})
