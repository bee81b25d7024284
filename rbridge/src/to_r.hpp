// From a region to R: the R value of a node (map_shared, the value share()
// returns, unserializing a shared vector).
//
// FORMAT.md table 4.1 says what each dtype becomes. Arrays, strings and
// bytes nodes become shared vectors (altrep.hpp); lists become ordinary
// lists of them (registered, tracking.hpp); a bytes node tagged rds3 is
// unserialized; a bytes node with another tag becomes a shared raw vector
// with the attribute kura_tag. Attribute values of at most
// kPlainAttributeLength elements (class, levels, dim, compact row.names,
// short names) are ordinary R copies; longer ones are shared vectors too, so
// that a named vector of 1e7 elements maps in O(1).
#pragma once

#include <memory>
#include <span>
#include <string>
#include <utility>
#include <vector>

#include "kura/core/view.hpp"
#include "r_api.hpp"
#include "r_edge.hpp"
#include "regions.hpp"

namespace kura::r {

struct Vec;

inline constexpr std::uint64_t kPlainAttributeLength = 64;

// Whether i64 arrays become bit64's integer64 (zero-copy) or doubles. Set
// when the package is loaded: true when bit64 is installed.
extern bool use_bit64;

// Where a node is (see Vec::name and Vec::steps).
struct Where {
  std::string name;
  std::vector<std::string> steps;
};

// The R value of `node`, a node of `core`'s region at `where`. Walks the
// whole value below it, checking each node (FORMAT.md section 5, with a walk
// budget). Errors (thrown as Error): Corrupt, and what R raises (an rds3 node
// that does not unserialize, attributes R refuses, out of memory).
SEXP node_to_r(const std::shared_ptr<RegionCore>& core, const NodeView& node, const Where& where, Keep keep);

// The R value at the region or path-form name `name` (map_shared), or
// nullptr when `name` is not a name at all. Errors (thrown as Error, the
// message beginning with `context`): as open_region and node_to_r.
SEXP value_of_name(const std::string& name, const std::string& context, Keep keep);

// The R value of `node`, which is not in a region (an inline task argument
// or result): the same as node_to_r gives, with every vector an ordinary R
// copy. Errors: as node_to_r.
SEXP node_to_r_copy(const NodeView& node, Keep keep);

// The Vec of node `n` (an array, strings or bytes node) at `w`; an i64 is
// read as integer64 when `i64_bits`. Errors (thrown): a node longer than R
// vectors can be.
std::unique_ptr<Vec> make_vec(const std::shared_ptr<RegionCore>& core, const NodeView& n, const Where& w,
                              bool i64_bits);

// unserialize() of `bytes`. R only: call inside call_r().
SEXP unserialize_bytes(std::span<const std::byte> bytes);

// While set, a shared vector serialized under a name in `aliases` is read
// from the region named by its value instead: on a worker that pulled the
// bytes behind a closure task's names, its local copies. clear_aliases()
// ends it; both on R's main thread.
void set_aliases(std::vector<std::pair<std::string, std::string>> aliases);
void clear_aliases() noexcept;

// The UnserializeEX method of the six classes: maps the vector that
// Serialized_state described and gives it the attributes R read from the
// stream. `type` is the class's SEXPTYPE. Called by R.
SEXP unserialize_shared(int type, SEXP state, SEXP attr, int objf, int levs);

}  // namespace kura::r
