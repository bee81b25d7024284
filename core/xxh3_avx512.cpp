// XXH3 for AVX-512 (F). core/CMakeLists.txt compiles this file alone with
// -mavx512f; hash.cpp calls it only when the CPU and the OS support AVX-512.
#define KURA_XXH3_BUILD xxh3_avx512
#include "xxh3_variant.hpp"
static_assert(XXH_VECTOR == XXH_AVX512, "xxh3_avx512.cpp must be compiled with -mavx512f");
