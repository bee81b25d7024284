// XXH3 for AVX2. core/CMakeLists.txt compiles this file alone with -mavx2;
// hash.cpp calls it only when the CPU has AVX2.
#define KURA_XXH3_BUILD xxh3_avx2
#include "xxh3_variant.hpp"
static_assert(XXH_VECTOR == XXH_AVX2, "xxh3_avx2.cpp must be compiled with -mavx2 (and without -mavx512f)");
