# map_shared(): a malformed name is NULL; a well-formed name that cannot be
# mapped is an error that says why. Corrupt regions never crash R.

test_that("malformed names give NULL", {
  bad <- list(
    NULL, NA_character_, 1, TRUE, c("/kura_1_2", "/kura_1_3"), character(), list("/kura_1_2"),
    "", "kura_1_2", "/kura_1", "/kura_1_2 ", "/KURA_1_2", "/kura_1F_2", "/kura_01_2", "/kura_1_2[]",
    "/kura_1_2[0]", "/kura_1_2[01]", "/kura_1_2[1,]", "/kura_1_2[1]x", "/kura_1_2/..", "//kura_1_2",
    "/kura_1_2[9223372036854775808]", "/kura_11111111111111111_2", "/kura_1_2[-1]", "/kura_1_2[1 ,2]",
    paste0("/kura_1_2[", paste(rep(1, 65), collapse = ","), "]"),
    paste0("/kura_1_2", strrep("x", 1e6)), "/kura_1_2\u00e9"
  )
  for (name in bad) expect_null(map_shared(name), label = deparse(name)[1])
})

test_that("a missing region is an error that says not found", {
  expect_error(map_shared("/kura_1_2"), "not found")
  expect_error(map_shared("/kura_1_2[3,4]"), "not found")
})

test_that("out of range and not a list are errors that say so", {
  x <- share(list(a = 1:3, b = list(c = "x")))
  root <- shared_name(x)
  expect_error(map_shared(paste0(root, "[3]")), "out of range")
  expect_error(map_shared(paste0(root, "[2,2]")), "out of range")
  expect_error(map_shared(paste0(root, "[9223372036854775807]")), "out of range")
  expect_error(map_shared(paste0(root, "[1,1]")), "not a list")
  expect_error(map_shared(paste0(root, "[2,1,1]")), "not a list")
})

# A copy of the region of `value` under a new name of this process's owner
# (alive, so nothing prunes it), with `edit(path)` applied before it is made
# read-only. Removed when the calling test ends.
corrupt_copy <- function(value, edit, env = parent.frame()) {
  x <- share(value)
  from <- region_file(shared_name(x))
  name <- sprintf("/kura_%s_%s", my_owner(), paste(sample(c(0:9, letters[1:6]), 12, TRUE), collapse = ""))
  name <- sub("_0+([0-9a-f])", "_\\1", name)
  to <- region_file(name)
  stopifnot(file.copy(from, to))
  Sys.chmod(to, "0600")
  edit(to)
  Sys.chmod(to, "0400")
  withr::defer(unlink(to, force = TRUE), envir = env)
  name
}

poke <- function(path, offset, value, size = 4L) {
  con <- file(path, "r+b")
  on.exit(close(con))
  seek(con, offset, rw = "write")
  writeBin(as.integer(value), con, size = size, endian = "little")
}

test_that("a corrupt region is an error that says corrupt", {
  golden <- list(x = c(1.5, 2.5), tag = "a") # FORMAT.md's example: known offsets
  # The region header.
  name <- corrupt_copy(golden, function(p) poke(p, 0, 0L))
  expect_error(map_shared(name), "corrupt")
  name <- corrupt_copy(golden, function(p) poke(p, 16, 99L))
  expect_error(map_shared(name), "corrupt")
  # Truncated: shorter than its header says, and shorter than a header.
  name <- corrupt_copy(golden, function(p) {
    con <- file(p, "r+b")
    truncate(con)
    close(con)
    writeBin(as.raw(rep(0, 100)), p)
  })
  expect_error(map_shared(name), "corrupt")
  name <- corrupt_copy(golden, function(p) writeBin(as.raw(1:10), p))
  expect_error(map_shared(name), "corrupt")
  # A node header (the f64 array at 384): bad magic, then a data block past
  # the end of the region.
  name <- corrupt_copy(golden, function(p) poke(p, 384, 0L))
  expect_error(map_shared(name), "corrupt")
  expect_error(map_shared(paste0(name, "[1]")), "corrupt")
  name <- corrupt_copy(golden, function(p) poke(p, 384 + 16, 1e6))
  expect_error(map_shared(paste0(name, "[1]")), "corrupt")
  # A list child offset (the first, at 128) pointing at the root.
  name <- corrupt_copy(golden, function(p) poke(p, 128, 64L))
  expect_error(map_shared(name), "corrupt")
})

test_that("a corrupt string entry is an error when it is read, not a crash", {
  golden <- list(x = c(1.5, 2.5), tag = "a")
  # The entry of "a" is at 576: its nbytes (at 584) made to run past the block.
  name <- corrupt_copy(golden, function(p) poke(p, 584, 1000L))
  s <- map_shared(paste0(name, "[2]"))
  expect_error(s[1], "corrupt")
  expect_error(paste(s), "corrupt")
  # An unknown encoding.
  name <- corrupt_copy(golden, function(p) poke(p, 588, 7L, size = 1L))
  expect_error(map_shared(name)$tag[1], "corrupt")
  before <- region_files()
  expect_error(share(list(map_shared(paste0(name, "[2]")))), "corrupt")
  expect_identical(setdiff(region_files(), before), character())
})

test_that("a region that is not this user's private file is refused", {
  name <- corrupt_copy(list(1), function(p) NULL)
  Sys.chmod(region_file(name), "0444")
  expect_error(map_shared(name), "permission")
})

test_that("errors leave no region behind", {
  before <- region_files()
  deep <- 1
  for (i in 1:70) deep <- list(deep)
  expect_error(share(list(a = 1:10, b = deep)), "deep")
  invisible(gc())
  expect_identical(setdiff(region_files(), before), character())
})
