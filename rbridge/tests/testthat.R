# Run by R CMD check. tools/run test runs the same files with
# tools/r_tests.R, in a private region directory (KURA_SHM_DIR), with the
# kura tool for the interop tests (KURA_TOOL).
library(testthat)
library(kura)

test_check("kura")
