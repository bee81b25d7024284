// R's C API, in the order its headers need (Rinternals.h before the R_ext
// headers that use its types), which include sorting must not change.
#pragma once

// clang-format off
#include <Rinternals.h>
#include <R_ext/Altrep.h>
#include <R_ext/Memory.h>
#include <R_ext/Print.h>
#include <R_ext/Rdynload.h>
#include <R_ext/Visibility.h>
// clang-format on
