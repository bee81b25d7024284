# R and C++ read each other's regions: the kura tool (KURA_TOOL) writes with
# `kura put` and reads with `kura get`, `kura verify`.

# Puts typed JSON into a kept region and returns its name; the region is
# removed when the calling test ends.
put_json <- function(json, env = parent.frame()) {
  path <- tempfile(fileext = ".json")
  writeLines(json, path)
  r <- run_tool(c("put", "--keep", path))
  unlink(path)
  expect_identical(r$status, 0L)
  name <- r$out[length(r$out)]
  withr::defer(run_tool(c("rm", name)), envir = env)
  name
}

test_that("every dtype written by C++ maps as FORMAT.md table 4.1 says", {
  name <- put_json('{"type": "list",
    "names": ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64",
              "c128", "lgl", "str", "json", "null"],
    "values": [
      {"type": "u8", "values": [0, 1, 255]},
      {"type": "i8", "values": [-128, 0, 127]},
      {"type": "u16", "values": [0, 65535]},
      {"type": "i16", "values": [-32768, 32767]},
      {"type": "u32", "values": [0, 4294967295]},
      {"type": "i32", "values": [-2147483648, 1, 2147483647]},
      {"type": "u64", "values": [0, 9007199254740992]},
      {"type": "i64", "values": [-9223372036854775808, 9007199254740993, -5]},
      {"type": "f32", "values": [1.5, "NaN", "-Inf"]},
      {"type": "f64", "values": [0.5, null, "Inf"]},
      {"type": "c128", "values": [[1, 2], [null, 3]]},
      {"type": "lgl", "values": [true, false, null]},
      {"type": "strings", "values": ["a", null, {"latin1": "6Q=="}, {"bytes": "/w=="}]},
      {"type": "bytes", "tag": "json", "base64": "eyJhIjoxfQ=="},
      {"type": "null"}]}')
  x <- map_shared(name)
  expect_identical(x$u8, as.raw(c(0, 1, 255)))
  expect_identical(x$i8, c(-128L, 0L, 127L))
  expect_identical(x$u16, c(0L, 65535L))
  expect_identical(x$i16, c(-32768L, 32767L))
  expect_identical(x$u32, c(0, 4294967295))
  expect_identical(x$i32, c(NA, 1L, .Machine$integer.max))
  expect_identical(x$u64, c(0, 9007199254740992))
  expect_identical(x$f32, c(1.5, NaN, -Inf))
  expect_identical(x$f64, c(0.5, NA, Inf))
  expect_identical(x$c128, complex(real = c(1, NA), imaginary = c(2, 3)))
  expect_identical(x$lgl, c(TRUE, FALSE, NA))
  latin1 <- "\xe9"
  Encoding(latin1) <- "latin1"
  bytes <- "\xff"
  Encoding(bytes) <- "bytes"
  expect_identical(x$str, c("a", NA, latin1, bytes))
  expect_identical(Encoding(x$str), c("unknown", "unknown", "latin1", "bytes"))
  expect_identical(x$json, structure(charToRaw('{"a":1}'), kura_tag = "json"))
  expect_null(x$null)
  if (requireNamespace("bit64", quietly = TRUE)) {
    expect_s3_class(x$i64, "integer64")
    expect_identical(as.character(x$i64), c(NA, "9007199254740993", "-5"))
  } else {
    expect_identical(x$i64, c(NA, 9007199254740992, -5))
  }
  # Every element is a shared vector with its own name.
  for (i in c(1:14)) expect_identical(shared_name(x[[i]]), paste0(name, "[", i, "]"))
  expect_identical(shared_name(x), name)
})

test_that("arrays R reads in place are not copied; the others convert lazily", {
  n <- 2e5
  values <- paste(seq_len(n) %% 100, collapse = ",")
  name <- put_json(sprintf('{"type": "list", "values": [
    {"type": "f64", "values": [%s]}, {"type": "i32", "values": [%s]},
    {"type": "u8", "values": [%s]}, {"type": "u16", "values": [%s]}]}', values, values, values, values))
  x <- map_shared(name)
  expect_lt(anon_growth(sum(x[[1]])), 0.5)
  expect_lt(anon_growth(sum(x[[2]])), 0.5)
  expect_lt(anon_growth(sum(as.integer(x[[3]][1:10]))), 0.5)
  expect_lt(anon_growth(x[[4]][n]), 0.5)
  expect_identical(x[[4]][1:3], 1:3)
  expect_identical(sum(x[[4]]), sum(seq_len(n) %% 100L))
})

test_that("a data frame written by C++ without row.names gets R's compact ones", {
  name <- put_json('{"type": "list", "names": ["id", "score", "label"],
    "attrs": {"class": {"type": "strings", "values": ["data.frame"]}},
    "values": [
      {"type": "i32", "values": [1, 2, 3]},
      {"type": "f64", "values": [0.5, null, 2.25]},
      {"type": "strings", "values": ["alpha", null, "gamma"]}]}')
  df <- map_shared(name)
  expect_identical(df, data.frame(id = 1:3, score = c(0.5, NA, 2.25), label = c("alpha", NA, "gamma")))
  expect_identical(shared_name(df), name)
})

test_that("a region shared from R reads in C++", {
  x <- share(list(
    num = c(1.5, NA, -Inf), int = c(1L, NA), lgl = c(TRUE, NA), txt = c("a", NA),
    raw = as.raw(c(1, 255)), cpx = complex(real = 1, imaginary = -1), nul = NULL,
    f = factor(c("u", "v", "u"))
  ))
  name <- shared_name(x)
  r <- run_tool(c("get", "--json", name))
  expect_identical(r$status, 0L)
  json <- paste(r$out, collapse = "\n")
  expect_match(json, '{"type": "f64", "values": [1.5, null, "-Inf"]}', fixed = TRUE)
  expect_match(json, '{"type": "i32", "values": [1, -2147483648]}', fixed = TRUE)
  expect_match(json, '{"type": "lgl", "values": [true, null]}', fixed = TRUE)
  expect_match(json, '{"type": "strings", "values": ["a", null]}', fixed = TRUE)
  expect_match(json, '{"type": "u8", "values": [1, 255]}', fixed = TRUE)
  expect_match(json, '{"type": "c128", "values": [[1.0, -1.0]]}', fixed = TRUE)
  expect_match(json, '{"type": "null"}', fixed = TRUE)
  expect_match(json, '"names": ["num", "int", "lgl", "txt", "raw", "cpx", "nul", "f"]', fixed = TRUE)
  expect_match(json, '"levels": {"type": "strings", "values": ["u", "v"]}', fixed = TRUE)
  leaf <- run_tool(c("get", "--json", paste0(name, "[4]")))
  expect_identical(leaf$out, '{"type": "strings", "values": ["a", null]}')
  expect_identical(run_tool(c("verify", name))$status, 0L)
  listed <- run_tool(c("ls"))
  expect_true(any(grepl(name, listed$out, fixed = TRUE)))
})

test_that("a data frame shared from R is a list with names, class and row.names in C++", {
  df <- share(data.frame(a = 1:2, b = c("x", "y")))
  r <- run_tool(c("get", "--json", shared_name(df)))
  json <- paste(r$out, collapse = "\n")
  expect_match(json, '"class": {"type": "strings", "values": ["data.frame"]}', fixed = TRUE)
  expect_match(json, '"row.names": {"type": "i32", "values": [-2147483648, -2]}', fixed = TRUE)
  expect_match(json, '"names": ["a", "b"]', fixed = TRUE)
})

test_that("R objects with no kura form are rds3 bytes in C++", {
  x <- share(list(f = function(x) x))
  r <- run_tool(c("inspect", shared_name(x)))
  expect_true(any(grepl("bytes", r$out) & grepl("rds3", r$out)))
})

test_that("a raw vector with kura_tag is a bytes node with that tag", {
  x <- share(list(structure(charToRaw("{}"), kura_tag = "json")))
  r <- run_tool(c("get", "--json", paste0(shared_name(x), "[1]")))
  expect_identical(r$out, '{"type": "bytes", "tag": "json", "base64": "e30="}')
  expect_identical(x[[1]], structure(charToRaw("{}"), kura_tag = "json"))
})

test_that("attributes R refuses are an error from map_shared, not a broken object", {
  name <- put_json('{"type": "i32", "values": [1, 2, 3],
    "attrs": {"dim": {"type": "i32", "values": [2, 3]}}}')
  expect_error(map_shared(name), "dims")
})
