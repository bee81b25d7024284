#include "tracking.hpp"

#include <algorithm>
#include <cstring>
#include <span>
#include <string_view>

#include "altrep.hpp"
#include "from_r.hpp"
#include "kura/core/layout.hpp"
#include "kura/core/name.hpp"
#include "to_r.hpp"

namespace kura::r {
namespace {

SEXP changed_marker() {
  static SEXP marker = Rf_install("kura_attributes_changed");
  return marker;
}

bool same_content(SEXP now, SEXP then) {
  if (ALTREP(now) || ALTREP(then) || TYPEOF(now) != TYPEOF(then)) return false;
  SEXP same = call_r([&]() -> SEXP { return Rf_ScalarLogical(R_compute_identical(now, then, 0)); });
  return LOGICAL(same)[0] == TRUE;
}

bool vector_unchanged(SEXP x) {
  return !data_modified(x) && attributes_unchanged(x);
}

// True when the attributes of `x` (a node at anchor + steps) are those of
// `snapshot`: the same keys in the same order, each value the very object
// (or an equal one), or for values that were shared vectors, still the
// unmodified shared vector of that attribute.
bool snapshot_matches(SEXP x, SEXP snapshot, const std::string& anchor,
                      const std::vector<std::string>& steps) {
  if (snapshot != R_NilValue && TYPEOF(snapshot) != VECSXP) return false;  // changed_marker()
  const R_xlen_t m = snapshot == R_NilValue ? 0 : XLENGTH(snapshot);
  R_xlen_t k = 0;
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a), k += 2) {
    if (k + 1 >= m || TAG(a) != VECTOR_ELT(snapshot, k)) return false;
    SEXP now = CAR(a);
    SEXP then = VECTOR_ELT(snapshot, k + 1);
    if (then == R_NilValue) {
      const Vec* v = vec_of(now);
      if (v == nullptr || v->name != anchor || v->steps.size() != steps.size() + 1 ||
          !std::equal(steps.begin(), steps.end(), v->steps.begin()) ||
          v->steps.back() != attribute_step(TAG(a)) || !vector_unchanged(now))
        return false;
    } else if (now != then && !same_content(now, then)) {
      return false;
    }
  }
  return k == m;
}

Where step(const Where& w, std::string s) {
  Where out = w;
  out.steps.push_back(std::move(s));
  return out;
}

// The name a list claims through its attributes (its names are the shared
// vector "names" of its node) or else its first element that has a name
// (the list whose element 3 is the shared vector "/kura_1_2[3]" claims
// "/kura_1_2"). Empty when nothing in it has a name, or that element is not
// where its name says.
std::string claimed_name(SEXP x, unsigned depth) {
  if (depth > kMaxDepth) return {};
  // A list's attributes are shared vectors of its node (to_r.cpp).
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
    const Vec* v = vec_of(CAR(a));
    if (v != nullptr && v->steps.size() == 1 && v->steps[0] == attribute_step(TAG(a))) return v->name;
  }
  const R_xlen_t n = XLENGTH(x);
  for (R_xlen_t i = 0; i < n; ++i) {
    SEXP el = VECTOR_ELT(x, i);
    std::string child;
    if (const Vec* v = vec_of(el); v != nullptr && v->steps.empty()) {
      child = v->name;
    } else if (TYPEOF(el) == VECSXP) {
      child = claimed_name(el, depth + 1);
    }
    if (child.empty()) continue;
    auto parsed = parse_name(child);
    if (!parsed || parsed->path.empty() || parsed->path.back() != static_cast<std::uint64_t>(i) + 1)
      return {};
    parsed->path.pop_back();
    return format_name(*parsed);
  }
  return {};
}

// Compares R values with the nodes of one region.
class Comparer {
 public:
  explicit Comparer(std::shared_ptr<RegionCore> core) : core_(std::move(core)) {}

  // A list element by element: shared vectors by where they read, lists in
  // turn, NULL, and unserialized rds3 nodes by their serialization.
  bool list_matches(SEXP x, const NodeView& n, const std::string& name, unsigned depth) {
    if (depth > kMaxDepth || n.kind() != Kind::kList || static_cast<std::uint64_t>(XLENGTH(x)) != n.length())
      return false;
    for (R_xlen_t i = 0; i < XLENGTH(x); ++i) {
      auto c = n.child(static_cast<std::uint64_t>(i));
      if (!c) return false;
      SEXP el = VECTOR_ELT(x, i);
      const std::string cn = child_name(name, static_cast<std::uint64_t>(i) + 1);
      switch (c->kind()) {
        case Kind::kNull:
          if (el != R_NilValue) return false;
          break;
        case Kind::kList:
          if (TYPEOF(el) != VECSXP || !list_matches(el, *c, cn, depth + 1)) return false;
          break;
        case Kind::kBytes:
          if (c->tag() == "rds3") {
            if (vec_of(el) != nullptr || !same_rds(el, c->data())) return false;
            break;
          }
          [[fallthrough]];
        default: {
          const Vec* v = vec_of(el);
          if (v == nullptr || !v->steps.empty() || v->name != cn || !vector_unchanged(el)) return false;
        }
      }
    }
    return attributes_match(x, n, Where{name, {}}, depth);
  }

 private:
  // The attributes of `x` against those of node `n` (at `w`), as to_r.cpp
  // makes them: names and each attribute, plus the compact row.names it
  // gives a data frame that has none, and the kura_tag of a bytes node.
  bool attributes_match(SEXP x, const NodeView& n, const Where& w, unsigned depth) {
    std::vector<std::pair<std::string, NodeView>> expected;
    auto names = n.names();
    if (!names) return false;
    if (*names) expected.emplace_back("names", **names);
    auto attrs = n.attrs();
    if (!attrs) return false;
    bool data_frame = false;
    bool row_names = false;
    if (*attrs) {
      auto keys = (*attrs)->names();
      if (!keys || !*keys) return false;
      for (std::uint64_t i = 0; i < (*attrs)->length(); ++i) {
        auto key = (*keys)->string(i);
        auto value = (*attrs)->child(i);
        if (!key || key->na || !value) return false;
        std::string k(key->bytes);
        if (k == "class" && has_string(*value, "data.frame")) data_frame = true;
        if (k == "row.names") row_names = true;
        expected.emplace_back(std::move(k), std::move(value).value());
      }
    }
    const bool added_row_names = n.kind() == Kind::kList && data_frame && !row_names;
    const std::string tag = n.kind() == Kind::kBytes ? std::string(n.tag()) : std::string();
    std::vector<bool> used(expected.size(), false);
    for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
      const std::string key = TAG(a) == R_NamesSymbol ? "names" : CHAR(PRINTNAME(TAG(a)));
      std::size_t j = 0;
      while (j < expected.size() && (used[j] || expected[j].first != key)) ++j;
      if (j < expected.size()) {
        used[j] = true;
        if (!value_matches(CAR(a), expected[j].second, step(w, attribute_step(TAG(a))), depth + 1))
          return false;
      } else if (key == "row.names" && added_row_names) {
        SEXP rn = CAR(a);
        if (TYPEOF(rn) != INTSXP || XLENGTH(rn) != 2 || ALTREP(rn) || INTEGER(rn)[0] != NA_INTEGER)
          return false;
      } else if (key == "kura_tag" && !tag.empty()) {
        SEXP t = CAR(a);
        if (TYPEOF(t) != STRSXP || XLENGTH(t) != 1 || ALTREP(t) || tag != CHAR(STRING_ELT(t, 0)))
          return false;
      } else {
        return false;
      }
    }
    return std::all_of(used.begin(), used.end(), [](bool u) { return u; });
  }

  // An attribute value (or an element of a list inside one).
  bool value_matches(SEXP val, const NodeView& n, const Where& w, unsigned depth) {
    if (depth > kMaxDepth) return false;
    if (const Vec* v = vec_of(val)) return v->name == w.name && v->steps == w.steps && vector_unchanged(val);
    switch (n.kind()) {
      case Kind::kNull: return val == R_NilValue;
      case Kind::kList: {
        if (TYPEOF(val) != VECSXP || static_cast<std::uint64_t>(XLENGTH(val)) != n.length()) return false;
        for (R_xlen_t i = 0; i < XLENGTH(val); ++i) {
          auto c = n.child(static_cast<std::uint64_t>(i));
          if (!c || !value_matches(VECTOR_ELT(val, i), *c, step(w, std::to_string(i + 1)), depth + 1))
            return false;
        }
        return attributes_match(val, n, w, depth);
      }
      case Kind::kBytes:
        if (n.tag() == "rds3") return same_rds(val, n.data());
        [[fallthrough]];
      default: {
        if (ALTREP(val)) return false;
        auto v = make_vec(core_, n, w, use_bit64);
        return same_elements(val, *v) && attributes_match(val, n, w, depth);
      }
    }
  }

  // True when `x` is what the rds3 node `bytes` unserializes to: it
  // serializes (shared vectors as their data) to the same bytes, or it is
  // identical() to the unserialized value but for environments, byte code
  // and srcrefs (R compiles a closure in place when it is called).
  bool same_rds(SEXP x, std::span<const std::byte> bytes) {
    struct ByData {
      bool before = serialize_by_name;
      ByData() { serialize_by_name = false; }
      ~ByData() { serialize_by_name = before; }
    } by_data;
    SEXP raw = call_r([&]() -> SEXP { return serialize_r(x); });
    if (static_cast<std::size_t>(XLENGTH(raw)) == bytes.size() &&
        (bytes.empty() || std::memcmp(RAW(raw), bytes.data(), bytes.size()) == 0))
      return true;
    SEXP same = call_r([&]() -> SEXP {
      SEXP y = PROTECT(unserialize_bytes(bytes));
      // Flags 0: closures' environments, byte code and srcrefs ignored.
      SEXP out = Rf_ScalarLogical(R_compute_identical(x, y, 0));
      UNPROTECT(1);
      return out;
    });
    return LOGICAL(same)[0] == TRUE;
  }

  static bool has_string(const NodeView& n, std::string_view s) {
    if (n.kind() != Kind::kStrings) return false;
    for (std::uint64_t i = 0; i < n.length(); ++i) {
      auto e = n.string(i);
      if (e && !e->na && e->bytes == s) return true;
    }
    return false;
  }

  std::shared_ptr<RegionCore> core_;
};

}  // namespace

SEXP snapshot_attributes(SEXP x) {
  R_xlen_t m = 0;
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) m += 2;
  if (m == 0) return R_NilValue;
  SEXP s = PROTECT(Rf_allocVector(VECSXP, m));
  R_xlen_t k = 0;
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a), k += 2) {
    SET_VECTOR_ELT(s, k, TAG(a));
    // A shared vector is checked by where it is, not held.
    SET_VECTOR_ELT(s, k + 1, vec_of(CAR(a)) != nullptr ? R_NilValue : CAR(a));
  }
  UNPROTECT(1);
  return s;
}

SEXP attributes_changed_snapshot() {
  return changed_marker();
}

bool attributes_unchanged(SEXP x) {
  const Vec* v = vec_of(x);
  if (v == nullptr) return false;
  return snapshot_matches(x, R_ExternalPtrProtected(R_altrep_data1(x)), v->name, v->steps);
}

std::string name_of(SEXP x) {
  if (const Vec* v = vec_of(x)) {
    if (!v->steps.empty() || !vector_unchanged(x)) return {};
    return v->name;
  }
  if (TYPEOF(x) != VECSXP) return {};
  std::string name = claimed_name(x, 0);
  if (name.empty()) return {};
  auto parsed = parse_name(name);
  if (!parsed) return {};
  auto core = open_region(parsed->owner, parsed->counter);
  if (!core) return {};
  auto node = (*core)->mapped.region().at(parsed->path);
  if (!node) return {};
  Comparer compare(*core);
  return compare.list_matches(x, *node, name, 0) ? name : std::string();
}

std::string child_name(const std::string& parent, std::uint64_t index) {
  std::string out = parent;
  if (!out.empty() && out.back() == ']') {
    out.back() = ',';
  } else {
    out += '[';
  }
  out += std::to_string(index);
  out += ']';
  return out;
}

std::string attribute_step(SEXP tag) {
  if (tag == R_NamesSymbol) return "names";
  return std::string("attr:") + CHAR(PRINTNAME(tag));
}

}  // namespace kura::r
