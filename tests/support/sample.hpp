// The sample value of the multi-process tests: a nested list holding every
// dtype, strings with NA and every encoding, names and attributes.
#pragma once

#include <string>

#include "kura/core/value.hpp"
#include "kura/core/view.hpp"

namespace kura::test {

// Built the same way in every process, so a helper can compare what it maps
// with what it would have written.
Value sample_value();

// A path into the sample and the value found there.
inline constexpr const char* kSamplePath = "[14,3,1]";
Value sample_at_path();

// Checks the node `root` of a mapped sample element by element, through the
// zero-copy views (not only through to_value). Returns "" when every value is
// right, else what differs.
std::string check_sample(const NodeView& root);

}  // namespace kura::test
