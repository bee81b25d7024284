// Which R objects are still what their region holds.
//
// shared_name() and is_shared() answer for an object only while it equals
// the node its name points at, so that map_shared(shared_name(x)) is x.
//   - A shared vector knows when its data changed (data_modified). Its
//     attributes, which R code can change in place, are checked against a
//     snapshot of those it was made with, kept in the protected slot of its
//     data1 pointer.
//   - A list is an ordinary R list (R 4.2 has no ALTLIST), which cannot carry
//     hidden state or a finalizer. Its name is found from its attributes,
//     which are shared vectors of its node (its names say "I am the names of
//     /kura_1_2"), or else from its elements (the shared vector
//     "/kura_1_2[3]" at position 3 says the list is "/kura_1_2"); a list
//     with neither (unnamed, holding only NULL and rds3 values) has no name.
//     It counts as shared while every element is still the node at its place
//     (by where a shared vector reads, by value for the rest) and its
//     attributes equal the node's.
// A snapshot holds attribute values themselves, except values that are
// shared vectors of the region (long names, ...), which it checks by where
// they are in the region instead, so that it never keeps the region alive.
#pragma once

#include <memory>
#include <string>
#include <vector>

#include "r_api.hpp"
#include "r_edge.hpp"
#include "regions.hpp"

namespace kura::r {

// The attribute snapshot of `x` as it is now. R only: call inside call_r().
SEXP snapshot_attributes(SEXP x);

// A snapshot that no attributes match: for a vector unserialized with
// attributes that were not the region's. R only.
SEXP attributes_changed_snapshot();

// True when the attributes of the shared vector `x` are still those of its
// snapshot.
bool attributes_unchanged(SEXP x);

// The path-form name of `x` when it is a shared vector or a list made from a
// region and still equal to what the region holds there; empty otherwise
// (any other object, a modified one, or a vector that is an attribute of
// another node and so has no name of its own).
std::string name_of(SEXP x);

// "/kura_1_2" + 3 -> "/kura_1_2[3]"; "/kura_1_2[3]" + 1 -> "/kura_1_2[3,1]".
std::string child_name(const std::string& parent, std::uint64_t index);

// The step from a node to its attribute `tag`: "names" or "attr:<key>".
std::string attribute_step(SEXP tag);

}  // namespace kura::r
