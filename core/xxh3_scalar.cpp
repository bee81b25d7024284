// XXH3 without vector instructions: the reference the other builds are
// tested against (tests/core/hash_test.cpp); never chosen on x86-64.
#define XXH_VECTOR XXH_SCALAR
#define KURA_XXH3_BUILD xxh3_scalar
#include "xxh3_variant.hpp"
static_assert(XXH_VECTOR == XXH_SCALAR);
