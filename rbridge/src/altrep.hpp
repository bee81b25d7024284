// Shared vectors: ALTREP vectors whose elements live in a region.
//
// A shared vector is an ALTREP object of one of six classes (kura_real,
// kura_integer, kura_logical, kura_raw, kura_complex, kura_string). Its data1
// is an external pointer to a Vec (below), whose protected slot holds the
// snapshot of the attributes the vector was made with (tracking.hpp); data2
// is R_NilValue until R needs the elements as an ordinary R vector (strings,
// or a dtype R cannot read in place), and then holds that vector.
//
// Reads never copy the vector: Elt and Get_region read the region (and
// convert the dtypes R cannot read in place, FORMAT.md table 4.1), and a
// read-only data pointer is the region's memory. The first request for the
// whole vector's data (Dataptr read-only, or Dataptr_or_null, which sum(),
// mean() and every other whole-vector loop of R ask for) maps all of the
// block's pages into the process at once (regions.hpp: populate_read);
// element access never does, so it stays O(1) in the vector's size. When R asks for a writable
// pointer, the data block is mapped a second time, privately
// (regions.hpp: map_private), so a write copies only the pages it touches
// and never reaches the region; from then on the vector reads through that
// mapping. Once a page of it has been written the vector is "modified": no
// longer shared, serialized as its data.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/layout.hpp"
#include "r_api.hpp"
#include "regions.hpp"

namespace kura::r {

struct Vec {
  Vec() = default;
  Vec(const Vec&) = delete;
  Vec& operator=(const Vec&) = delete;
  ~Vec() { unmap_private(priv); }

  std::shared_ptr<RegionCore> core;  // keeps the region mapped (and owned)
  const std::byte* data = nullptr;   // the node's data block, read-only; null when empty
  std::uint64_t data_offset = 0;     // of the block in the region
  std::uint64_t data_size = 0;
  R_xlen_t length = 0;
  Kind kind = Kind::kArray;  // kArray, kStrings, or kBytes (read as raw)
  Dtype dtype = Dtype::kNone;
  bool i64_bits = false;  // an i64 array read as bit64's integer64 (its bits are the doubles)
  // R got a writable pointer (or set a string): the elements may differ from
  // the region's. Whether they do is found out when it matters
  // (data_modified), since R asks for writable pointers to read, too
  // (identical(), %*%, ...).
  bool writable = false;
  bool modified = false;   // found to differ from the region: for good
  bool populated = false;  // the block's pages were mapped in at once (populate_read)
  // Where the node is: `name` is the path-form name of the node, or of the
  // addressable node it hangs from through `steps` ("names", "attr:<key>",
  // or "<i>" for the i-th element of a list inside an attribute). Only a
  // node with no steps has a name of its own (FORMAT.md names step into
  // lists only).
  std::string name;
  std::vector<std::string> steps;
  // The private copy-on-write mapping, once R asked for a writable pointer.
  PrivateMapping priv;
};

// True when the elements of the shared vector `x` differ from its region's:
// some page of its private mapping was written (/proc/self/pagemap says it
// is no longer the file's page; where pagemap cannot be read, the bytes are
// compared), or its materialized copy differs. Calls nothing in R that can
// fail. Once true, stays true.
bool data_modified(SEXP x) noexcept;

// Registers the six classes. Called once, from R_init_kura.
void register_classes(DllInfo* dll);

// The Vec of a shared vector, or nullptr when `x` is anything else.
Vec* vec_of(SEXP x) noexcept;

// The R type a node becomes (REALSXP, INTSXP, LGLSXP, RAWSXP, CPLXSXP,
// STRSXP), per FORMAT.md table 4.1.
int r_type(const Vec& v) noexcept;
// True when R reads the vector in place (zero-copy): f64, i32, lgl, u8,
// c128, bytes, and i64 read as integer64.
bool in_place(const Vec& v) noexcept;

// A new shared vector over `vec`, which it takes (vec is null afterwards).
// Its attribute snapshot is empty. R only: call inside call_r().
SEXP new_vector(std::unique_ptr<Vec>& vec);
// An ordinary R vector holding a copy of the elements. R only.
SEXP plain_copy(const Vec& v);

// True when the ordinary (not ALTREP) R vector `x` holds the elements R
// reads from `v`: same type and length, numbers bit for bit, strings byte
// for byte in a compatible encoding. Calls nothing in R that can fail.
bool same_elements(SEXP x, const Vec& v) noexcept;

// One string of a strings node, checked as FORMAT.md 5.2 says: an entry in
// the block, its bytes inside the packed bytes and zero-terminated.
struct StringAt {
  const char* bytes = nullptr;
  int nbytes = 0;
  Encoding encoding = Encoding::kUtf8;
  bool na = false;
  const char* problem = nullptr;  // set when the entry is corrupt
};
StringAt string_at(const Vec& v, std::uint64_t i) noexcept;
cetype_t r_encoding(Encoding e) noexcept;

// Whether shared vectors serialize as their names (the default) or as their
// data (serialize_by_name(FALSE) in R).
extern bool serialize_by_name;
// While not null, each name a shared vector serializes as is added here
// (kura_collect_names).
extern std::vector<std::string>* collected_names;

// A shared vector serialized by name has the state c(name, flags, tag,
// steps...) (altrep.cpp), where the tag is kStateTag followed by the
// sender's package version. The number in kStateTag changes whenever the
// state's layout or meaning does, so that a receiver of another layout
// fails loudly instead of misreading it (kura 0.1.0 had no tag, and reads
// the tag as a malformed step). The version only names the sender in errors.
inline constexpr std::string_view kStateTag = "kura-state-1 ";

// This package's version (DESCRIPTION), set by .onLoad through
// kura_session_start; "unknown" before.
extern std::string package_version;

}  // namespace kura::r
