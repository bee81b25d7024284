// The functions R/kura.R calls (.Call entry points).
#include "api.hpp"

#include <algorithm>
#include <chrono>
#include <string>
#include <vector>

#include "altrep.hpp"
#include "from_r.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/region.hpp"
#include "r_edge.hpp"
#include "regions.hpp"
#include "to_r.hpp"
#include "tracking.hpp"

using namespace kura;
using namespace kura::r;

namespace {

// Removes the regions of dead owners (a SIGKILLed producer's), at most once
// a second: share() calls it, so a session that shares cleans up after
// crashed ones without anyone calling prune_shared().
void prune_now_and_then() {
  static std::chrono::steady_clock::time_point last{};
  const auto now = std::chrono::steady_clock::now();
  if (last != std::chrono::steady_clock::time_point{} && now - last < std::chrono::seconds(1)) return;
  last = now;
  (void)shm::prune();  // best effort: a failure here must not fail share()
}

bool logical_flag(SEXP x, bool& out) {
  if (TYPEOF(x) != LGLSXP || XLENGTH(x) != 1 || LOGICAL(x)[0] == NA_LOGICAL) return false;
  out = LOGICAL(x)[0] != 0;
  return true;
}

}  // namespace

extern "C" {

SEXP kura_share(SEXP x, SEXP utf8_locale) {
  bool utf8 = true;
  logical_flag(utf8_locale, utf8);
  SEXP head = PROTECT(Rf_cons(R_NilValue, R_NilValue));
  SEXP out = entry([&]() -> SEXP {
    if (x == R_NilValue || !has_kura_form(x)) return x;  // returned as it is
    if (!name_of(x).empty()) return x;                   // shared already
    prune_now_and_then();
    Keep keep(head);
    std::shared_ptr<RegionCore> core;
    {
      Value v = to_value(x, keep, utf8);
      auto shared = shm::share(v);
      if (!shared) fail(shared.status(), "share");
      auto mapped = shared->map();
      if (!mapped) fail(mapped.status(), "share: cannot map the region just written");
      core = adopt_published(std::move(shared).value(), std::move(mapped).value());
    }
    return node_to_r(core, core->mapped.node(), Where{core->name, {}}, keep);
  });
  UNPROTECT(1);
  return out;
}

SEXP kura_map_shared(SEXP name) {
  if (TYPEOF(name) != STRSXP || XLENGTH(name) != 1) return R_NilValue;
  SEXP text = STRING_ELT(name, 0);
  if (text == NA_STRING) return R_NilValue;
  SEXP head = PROTECT(Rf_cons(R_NilValue, R_NilValue));
  SEXP out = entry([&]() -> SEXP {
    const char* s = CHAR(text);
    SEXP x = value_of_name(s, std::string("map_shared(\"") + s + "\")", Keep(head));
    return x == nullptr ? R_NilValue : x;  // nullptr: not a name at all
  });
  UNPROTECT(1);
  return out;
}

SEXP kura_shared_name(SEXP x) {
  return entry([&]() -> SEXP {
    const std::string name = name_of(x);
    if (name.empty()) return R_NilValue;
    return call_r([&]() -> SEXP { return Rf_mkString(name.c_str()); });
  });
}

SEXP kura_is_shared(SEXP x) {
  return entry([&]() -> SEXP {
    const bool shared = !name_of(x).empty();
    return Rf_ScalarLogical(shared ? TRUE : FALSE);
  });
}

SEXP kura_prune() {
  return entry([&]() -> SEXP {
    auto report = shm::prune();
    if (!report) fail(report.status(), "prune_shared");
    std::vector<std::string> regions;
    for (const std::string& removed : report->removed) {
      auto n = parse_name(removed);
      if (n && n->path.empty()) regions.push_back(removed);
    }
    return call_r([&]() -> SEXP { return strings_to_r(regions); });
  });
}

SEXP kura_serialize_by_name(SEXP enabled) {
  const bool before = serialize_by_name;
  bool flag;
  if (logical_flag(enabled, flag)) serialize_by_name = flag;
  return Rf_ScalarLogical(before ? TRUE : FALSE);
}

SEXP kura_collect_names(SEXP start) {
  static std::vector<std::string> names;
  return entry([&]() -> SEXP {
    bool flag = false;
    if (logical_flag(start, flag) && flag) {
      names.clear();
      collected_names = &names;
      return R_NilValue;
    }
    std::vector<std::string> seen;
    if (collected_names != nullptr) seen.swap(*collected_names);
    collected_names = nullptr;
    std::sort(seen.begin(), seen.end());
    seen.erase(std::unique(seen.begin(), seen.end()), seen.end());
    return call_r([&]() -> SEXP { return strings_to_r(seen); });
  });
}

SEXP kura_use_bit64(SEXP enabled) {
  const bool before = use_bit64;
  bool flag;
  if (logical_flag(enabled, flag)) use_bit64 = flag;
  return Rf_ScalarLogical(before ? TRUE : FALSE);
}

SEXP kura_session_start(SEXP bit64_installed, SEXP version) {
  bool flag = false;
  logical_flag(bit64_installed, flag);
  use_bit64 = flag;
  return entry([&]() -> SEXP {
    if (TYPEOF(version) == STRSXP && XLENGTH(version) == 1 && STRING_ELT(version, 0) != NA_STRING)
      package_version = CHAR(STRING_ELT(version, 0));
    prune_now_and_then();
    return R_NilValue;
  });
}

SEXP kura_region_directory() {
  return entry([&]() -> SEXP {
    const std::string& dir = shm::directory();
    return call_r([&]() -> SEXP { return Rf_mkString(dir.c_str()); });
  });
}

}  // extern "C"
