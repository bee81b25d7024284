#include "to_r.hpp"

#include <algorithm>
#include <cstring>
#include <span>
#include <utility>

#include "altrep.hpp"
#include "kura/core/name.hpp"
#include "tracking.hpp"

namespace kura::r {

bool use_bit64 = false;

namespace {

// What one node (and the attribute values below it) becomes in R, worked
// out in C++ before R is called, so that a corrupt region fails before any R
// object exists.
struct Plan {
  Kind kind = Kind::kNull;
  std::unique_ptr<Vec> vec;  // arrays, strings, bytes with a tag other than rds3
  bool plain = false;        // an ordinary R copy instead of a shared vector
  bool materialize = false;  // a shared vector with its elements copied into data2 at once
  bool i64 = false;          // an i64 array: fix the integer64 class
  bool i64_bits = false;
  std::span<const std::byte> rds;  // a bytes node tagged rds3
  bool is_rds = false;
  std::string tag;                                       // a bytes node with another tag
  std::vector<Plan> children;                            // a list inside an attribute
  std::vector<std::pair<std::string, Plan>> attributes;  // in the order R gets them
  R_xlen_t row_names = -1;                               // a data frame without row.names: its row count
};

// `core` is null for a value that is not in a region (node_to_r_copy).
[[noreturn]] void corrupt_error(const RegionCore* core, const Status& s) {
  fail(s, core != nullptr ? "region " + core->name : std::string("value"));
}

// R takes dim before names (setting dim drops names), and class last (R
// checks a class against what it is set on).
int attribute_rank(const std::string& key) {
  if (key == "dim") return 0;
  if (key == "names") return 2;
  if (key == "class") return 3;
  return 1;
}

Where step(const Where& w, std::string s) {
  Where out = w;
  out.steps.push_back(std::move(s));
  return out;
}

// True when the strings node held by `p` has an element equal to `s`.
bool has_string(const Plan& p, std::string_view s) {
  if (p.vec == nullptr || p.vec->kind != Kind::kStrings) return false;
  for (R_xlen_t i = 0; i < p.vec->length; ++i) {
    const StringAt a = string_at(*p.vec, static_cast<std::uint64_t>(i));
    if (a.problem == nullptr && !a.na && std::string_view(a.bytes, a.nbytes) == s) return true;
  }
  return false;
}

// --- R only (inside call_r) -------------------------------------------------------

void load_bit64() {
  static bool loaded = false;
  if (loaded) return;
  SEXP pkg = PROTECT(Rf_mkString("bit64"));
  SEXP call = PROTECT(Rf_lang2(Rf_install("loadNamespace"), pkg));
  Rf_eval(call, R_BaseNamespace);
  UNPROTECT(2);
  loaded = true;
}

// integer64 in the class of an i64 read as integer64, and not in the class
// of one read as doubles.
void fix_integer64_class(SEXP x, bool bits) {
  SEXP cls = PROTECT(Rf_getAttrib(x, R_ClassSymbol));
  const R_xlen_t n = cls == R_NilValue ? 0 : XLENGTH(cls);
  R_xlen_t at = -1;
  for (R_xlen_t i = 0; i < n; ++i)
    if (std::strcmp(CHAR(STRING_ELT(cls, i)), "integer64") == 0) at = i;
  if (bits && at < 0) {
    SEXP next = PROTECT(Rf_allocVector(STRSXP, n + 1));
    for (R_xlen_t i = 0; i < n; ++i) SET_STRING_ELT(next, i, STRING_ELT(cls, i));
    SET_STRING_ELT(next, n, Rf_mkChar("integer64"));
    Rf_classgets(x, next);
    UNPROTECT(1);
  } else if (!bits && at >= 0) {
    SEXP next = PROTECT(n > 1 ? Rf_allocVector(STRSXP, n - 1) : R_NilValue);
    for (R_xlen_t i = 0, k = 0; n > 1 && i < n; ++i)
      if (i != at) SET_STRING_ELT(next, k++, STRING_ELT(cls, i));
    Rf_setAttrib(x, R_ClassSymbol, next);
    UNPROTECT(1);
  }
  UNPROTECT(1);
}

SEXP realize(Plan& p);

void apply_attributes(SEXP x, Plan& p) {
  for (auto& [key, value_plan] : p.attributes) {
    SEXP value = PROTECT(realize(value_plan));
    Rf_setAttrib(x, Rf_install(key.c_str()), value);
    UNPROTECT(1);
  }
  if (!p.tag.empty()) {
    SEXP tag = PROTECT(Rf_mkString(p.tag.c_str()));
    Rf_setAttrib(x, Rf_install("kura_tag"), tag);
    UNPROTECT(1);
  }
  if (p.row_names >= 0) {
    SEXP rn = PROTECT(Rf_allocVector(INTSXP, 2));
    INTEGER(rn)[0] = NA_INTEGER;
    INTEGER(rn)[1] = static_cast<int>(-p.row_names);
    Rf_setAttrib(x, R_RowNamesSymbol, rn);
    UNPROTECT(1);
  }
  if (p.i64) {
    if (p.i64_bits) load_bit64();
    fix_integer64_class(x, p.i64_bits);
  }
}

SEXP realize(Plan& p) {
  SEXP x;
  switch (p.kind) {
    case Kind::kNull: return R_NilValue;
    case Kind::kList: {
      const auto n = static_cast<R_xlen_t>(p.children.size());
      x = PROTECT(Rf_allocVector(VECSXP, n));
      for (R_xlen_t i = 0; i < n; ++i) SET_VECTOR_ELT(x, i, realize(p.children[static_cast<std::size_t>(i)]));
      break;
    }
    default:
      if (p.is_rds) return unserialize_bytes(p.rds);
      if (p.plain) {
        x = PROTECT(plain_copy(*p.vec));
      } else if (p.materialize) {
        SEXP copy = PROTECT(plain_copy(*p.vec));
        x = new_vector(p.vec);
        R_set_altrep_data2(x, copy);
        UNPROTECT(1);
        PROTECT(x);
      } else {
        x = PROTECT(new_vector(p.vec));
      }
      break;
  }
  apply_attributes(x, p);
  if (vec_of(x) != nullptr) R_SetExternalPtrProtected(R_altrep_data1(x), snapshot_attributes(x));
  UNPROTECT(1);
  return x;
}

// --- The walk ---------------------------------------------------------------

class Builder {
 public:
  // With no `core`, every vector is an ordinary R copy.
  Builder(std::shared_ptr<RegionCore> core, Keep keep, const NodeView& start)
      : core_(std::move(core)), copy_(core_ == nullptr), keep_(keep), budget_(start) {}

  SEXP value(const NodeView& n, const Where& w) {
    if (n.kind() == Kind::kList) return list_value(n, w);
    Plan p = plan(n, w, false);
    return call_r([&]() -> SEXP { return realize(p); });
  }

 private:
  template <class T>
  T checked(Result<T> r) {
    if (!r) corrupt_error(core_.get(), r.status());
    return std::move(r).value();
  }

  void take(const NodeView& n) {
    if (Status s = budget_.take(n); !s) corrupt_error(core_.get(), s);
  }

  // `in_attribute`: the node is (inside) an attribute value; `of_list`: of a
  // list. Short attribute values are ordinary R vectors, except those of
  // lists: a list is an ordinary R list, and its attributes, kept as shared
  // vectors (their few elements copied into data2 at once, so R reads them
  // at full speed), are what tells which node it is when it has no shared
  // vector among its elements (tracking.hpp) and keep its region alive.
  Plan plan(const NodeView& n, const Where& w, bool in_attribute, bool of_list = false) {
    take(n);
    Plan p;
    p.kind = n.kind();
    switch (n.kind()) {
      case Kind::kNull: return p;
      case Kind::kBytes:
        if (n.tag() == "rds3") {
          p.is_rds = true;
          p.rds = n.data();
          return p;
        }
        p.tag = std::string(n.tag());
        [[fallthrough]];
      case Kind::kArray:
      case Kind::kStrings:
        p.vec = make_vec(core_, n, w, use_bit64);
        p.plain = copy_ || (in_attribute && !of_list && n.length() <= kPlainAttributeLength);
        p.materialize = !copy_ && in_attribute && of_list && n.length() <= kPlainAttributeLength;
        p.i64 = n.kind() == Kind::kArray && n.dtype() == Dtype::kI64;
        p.i64_bits = p.vec->i64_bits;
        break;
      case Kind::kList:
        for (std::uint64_t i = 0; i < n.length(); ++i)
          p.children.push_back(plan(checked(n.child(i)), step(w, std::to_string(i + 1)), true));
        break;
    }
    plan_attributes(n, w, p);
    return p;
  }

  void plan_attributes(const NodeView& n, const Where& w, Plan& p) {
    const bool of_list = n.kind() == Kind::kList;
    if (auto names = checked(n.names())) {
      p.attributes.emplace_back("names", plan(*names, step(w, "names"), true, of_list));
    }
    if (auto attrs = checked(n.attrs())) {
      take(*attrs);
      auto keys = checked(attrs->names());
      if (!keys) corrupt_error(core_.get(), corrupt("attribute list without keys"));
      take(*keys);
      for (std::uint64_t i = 0; i < attrs->length(); ++i) {
        StringRef key = checked(keys->string(i));
        if (key.na) corrupt_error(core_.get(), corrupt("attribute key " + std::to_string(i + 1) + " is NA"));
        std::string k(key.bytes);
        p.attributes.emplace_back(k, plan(checked(attrs->child(i)), step(w, "attr:" + k), true, of_list));
      }
    }
    std::stable_sort(p.attributes.begin(), p.attributes.end(), [](const auto& a, const auto& b) {
      return attribute_rank(a.first) < attribute_rank(b.first);
    });
  }

  // A list: made empty with its attributes, then filled one element at a
  // time, each element's R value going straight into it.
  SEXP list_value(const NodeView& n, const Where& w) {
    take(n);
    if (n.length() > static_cast<std::uint64_t>(R_XLEN_T_MAX))
      corrupt_error(core_.get(), corrupt(n.describe() + " is longer than R lists can be"));
    const auto length = static_cast<R_xlen_t>(n.length());
    Plan attrs;
    attrs.kind = Kind::kList;
    plan_attributes(n, w, attrs);
    // A data frame written without row.names (by C++) gets R's compact ones.
    bool data_frame = false, row_names = false;
    for (const auto& [key, value] : attrs.attributes) {
      if (key == "class" && has_string(value, "data.frame")) data_frame = true;
      if (key == "row.names") row_names = true;
    }
    if (data_frame && !row_names) {
      attrs.row_names = 0;
      if (length > 0) {
        NodeView first = checked(n.child(0));
        if (first.length() <= static_cast<std::uint64_t>(INT32_MAX))
          attrs.row_names = static_cast<R_xlen_t>(first.length());
      }
    }
    SEXP list = call_r([&]() -> SEXP {
      SEXP l = keep_.push(Rf_allocVector(VECSXP, length));
      apply_attributes(l, attrs);
      return l;
    });
    for (R_xlen_t i = 0; i < length; ++i) {
      NodeView child = checked(n.child(static_cast<std::uint64_t>(i)));
      Where cw;
      if (w.steps.empty()) {
        cw.name = child_name(w.name, static_cast<std::uint64_t>(i) + 1);
      } else {
        cw = step(w, std::to_string(i + 1));
      }
      SEXP element = value(child, cw);
      SET_VECTOR_ELT(list, i, element);  // no allocation since `element` was made
    }
    return list;
  }

  std::shared_ptr<RegionCore> core_;
  bool copy_;
  Keep keep_;
  WalkBudget budget_;
};

}  // namespace

SEXP unserialize_bytes(std::span<const std::byte> bytes) {
  SEXP raw = PROTECT(Rf_allocVector(RAWSXP, static_cast<R_xlen_t>(bytes.size())));
  if (!bytes.empty()) std::memcpy(RAW(raw), bytes.data(), bytes.size());
  SEXP call = PROTECT(Rf_lang2(Rf_install("unserialize"), raw));
  SEXP out = Rf_eval(call, R_BaseNamespace);
  UNPROTECT(2);
  return out;
}

std::unique_ptr<Vec> make_vec(const std::shared_ptr<RegionCore>& core, const NodeView& n, const Where& w,
                              bool i64_bits) {
  if (n.length() > static_cast<std::uint64_t>(R_XLEN_T_MAX))
    corrupt_error(core.get(), corrupt(n.describe() + " is longer than R vectors can be"));
  auto v = std::make_unique<Vec>();
  v->core = core;
  v->kind = n.kind();
  v->dtype = n.dtype();
  v->length = static_cast<R_xlen_t>(n.length());
  const auto block = n.data();
  v->data = block.data();
  v->data_size = block.size();
  v->data_offset = n.header().data_offset;
  v->i64_bits = n.kind() == Kind::kArray && n.dtype() == Dtype::kI64 && i64_bits;
  v->name = w.name;
  v->steps = w.steps;
  return v;
}

SEXP node_to_r(const std::shared_ptr<RegionCore>& core, const NodeView& node, const Where& where, Keep keep) {
  Builder b(core, keep, node);
  return b.value(node, where);
}

SEXP value_of_name(const std::string& name, const std::string& context, Keep keep) {
  auto parsed = parse_name(name);
  if (!parsed) return nullptr;
  auto core = open_region(parsed->owner, parsed->counter);
  if (!core) fail(core.status(), context);
  auto node = (*core)->mapped.region().at(parsed->path);
  if (!node) fail(node.status(), context);
  return node_to_r(*core, *node, Where{name, {}}, keep);
}

SEXP node_to_r_copy(const NodeView& node, Keep keep) {
  Builder b(nullptr, keep, node);
  return b.value(node, Where{});
}

namespace {
std::vector<std::pair<std::string, std::string>> g_aliases;
}  // namespace

void set_aliases(std::vector<std::pair<std::string, std::string>> aliases) {
  g_aliases = std::move(aliases);
}

void clear_aliases() noexcept {
  g_aliases.clear();
}

SEXP unserialize_shared(int type, SEXP state, SEXP attr, int objf, int levs) {
  return entry([&]() -> SEXP {
    if (TYPEOF(state) != STRSXP || XLENGTH(state) < 2 || STRING_ELT(state, 0) == NA_STRING)
      fail("kura: cannot unserialize a shared vector: its serialized state is malformed");
    const std::string name = CHAR(STRING_ELT(state, 0));
    const std::string flags = CHAR(STRING_ELT(state, 1));
    const std::string context = "cannot unserialize shared vector " + name;
    // A state without kStateTag in third place is another kura's (0.1.0 had
    // no tag): refused, rather than misread.
    const bool tagged = XLENGTH(state) >= 3 && STRING_ELT(state, 2) != NA_STRING;
    const std::string tag = tagged ? CHAR(STRING_ELT(state, 2)) : "";
    if (tag.rfind(kStateTag, 0) != 0) {
      const std::string found = tag.rfind("kura-state-", 0) == 0
                                    ? "its state is \"" + tag + "\""
                                    : std::string("its state has no version tag, as kura 0.1.0 wrote it");
      fail("kura: " + context + ": it was serialized by another version of kura (" + found +
           "; this is kura " + package_version + ", which reads \"" + std::string(kStateTag) +
           "<version>\"): install the same kura in every process that exchanges shared objects");
    }
    std::string here = name;
    for (const auto& [from, to] : g_aliases)
      if (from == name) here = to;
    auto parsed = parse_name(here);
    if (!parsed) fail(parsed.status(), context);
    auto core = open_region(parsed->owner, parsed->counter);
    if (!core) fail(core.status(), context);
    auto at = (*core)->mapped.region().at(parsed->path);
    if (!at) fail(at.status(), context);
    NodeView n = std::move(at).value();
    Where w{here, {}};
    for (R_xlen_t k = 3; k < XLENGTH(state); ++k) {
      std::string s = CHAR(STRING_ELT(state, k));
      Result<std::optional<NodeView>> next = std::optional<NodeView>();
      if (s == "names") {
        next = n.names();
      } else if (s.rfind("attr:", 0) == 0) {
        next = n.attr(std::string_view(s).substr(5));
      } else {
        auto parsed_index = parse_name("/kura_0_0[" + s + "]");
        if (!parsed_index || parsed_index->path.size() != 1) fail(context + ": malformed step \"" + s + "\"");
        auto c = n.child(parsed_index->path[0] - 1);
        if (!c) fail(c.status(), context);
        next = std::optional<NodeView>(std::move(c).value());
      }
      if (!next) fail(next.status(), context);
      if (!next->has_value()) fail("kura: " + context + ": the region has no " + s + " there");
      n = std::move(next).value().value();
      w.steps.push_back(std::move(s));
    }
    if (n.kind() != Kind::kArray && n.kind() != Kind::kStrings && n.kind() != Kind::kBytes)
      fail("kura: " + context + ": the region holds " + n.describe() + " there");
    auto vec = make_vec(*core, n, w, flags.find('b') != std::string::npos);
    if (r_type(*vec) != type)
      fail("kura: " + context + ": the region holds " + n.describe() + ", which is not this vector's type");
    const bool same_attributes = flags.find('a') != std::string::npos;
    return call_r([&]() -> SEXP {
      SEXP x = PROTECT(new_vector(vec));
      SET_ATTRIB(x, attr);
      SET_OBJECT(x, objf);
      SETLEVELS(x, levs);
      R_SetExternalPtrProtected(R_altrep_data1(x),
                                same_attributes ? snapshot_attributes(x) : attributes_changed_snapshot());
      UNPROTECT(1);
      return x;
    });
  });
}

}  // namespace kura::r
