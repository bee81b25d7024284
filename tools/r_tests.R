# Runs the R package's tests (rbridge/tests/testthat) against the installed
# package kura and prints "N passed, N failed". Used by tools/run test, which
# gives it a private region directory (KURA_SHM_DIR), the kura tool
# (KURA_TOOL) and the library the package was installed into (R_LIBS).
#
#   Rscript tools/r_tests.R rbridge/tests/testthat [FILTER]
args <- commandArgs(trailingOnly = TRUE)
if (length(args) < 1) stop("usage: Rscript tools/r_tests.R TEST_DIR [FILTER]")
filter <- if (length(args) >= 2) args[[2]] else NULL

suppressPackageStartupMessages(library(testthat))
results <- testthat::test_dir(
  args[[1]],
  filter = filter,
  package = "kura",
  load_package = "installed",
  reporter = testthat::SummaryReporter$new(show_praise = FALSE),
  stop_on_failure = FALSE
)
df <- as.data.frame(results)
broken <- df$failed > 0 | df$error
skipped <- df$skipped & !broken
cat(sprintf(
  "R tests: %d passed, %d failed, %d skipped (%d expectations)\n",
  sum(!broken & !skipped), sum(broken), sum(skipped), sum(df$nb)
))
quit(status = if (any(broken)) 1L else 0L)
