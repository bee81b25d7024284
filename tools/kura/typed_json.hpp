// Typed JSON (DESIGN.md section 5): the text form of a kura value that
// `kura put` reads and `kura get --json` writes.
//
//   {"type": "f64", "values": [1.5, null, "NaN", "Inf"]}
//   {"type": "strings", "values": ["a", null, {"latin1": "6Q=="}, {"bytes": "AP8="}]}
//   {"type": "list", "values": [ ...nodes... ], "names": ["x", null]}
//   {"type": "bytes", "tag": "json", "base64": "..."}
//   {"type": "null", "attrs": {"class": {"type": "strings", "values": ["x"]}}}
//
// Every node is an object whose keys keep their order. Integers are exact
// in all 64 bits, floats are written with the fewest digits that read back
// the same bits, non-finite floats are "NaN", "Inf" and "-Inf", and null is
// R's NA_real_ in f64 and in either part of a c128 [re, im] pair (and NA in
// lgl and strings); it is refused in every other numeric dtype.
//
// Reading is strict: an unknown or duplicate key, a wrong type, an
// out-of-range number or a bad tag is an InvalidArgument error naming the
// JSON path where it was found, such as `$.values[2].attrs["dim"].values[0]`.
// Writing never produces broken JSON: a UTF-8 string that is not valid UTF-8
// is written in the {"bytes": ...} form.
//
// Reading streams: nlohmann's SAX parser hands each JSON event to a reader
// that builds the Value directly, so no JSON document is held (a DOM costs
// several times the value's memory, and its destructor allocates, which
// aborts a process that ran out of memory). Streaming has one rule: in a
// node object, "type" comes before "values", which are read straight into
// place as the dtype requires. kura writes "type" first, and so does any
// writer that sorts keys ("type" < "values"); the other keys ("names",
// "attrs", "tag", "base64") may come anywhere. Buffering "values" of an
// unknown type instead would mean holding arbitrary JSON in a second form
// until the type arrives: the DOM this avoids. The first problem met in
// document order is the one reported, whether it is typed JSON or JSON.
#pragma once

#include <cstddef>
#include <cstdint>
#include <istream>
#include <new>
#include <nlohmann/json.hpp>
#include <ostream>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/bytes.hpp"
#include "kura/core/status.hpp"
#include "kura/core/value.hpp"
#include "kura/core/view.hpp"

namespace kura::tool {

using Json = nlohmann::ordered_json;

// Parses typed JSON text into a Value. Errors: InvalidArgument (not JSON,
// or not typed JSON; the message names the path), OutOfMemory.
Result<Value> parse_typed_json(std::string_view text) noexcept;
// The same, reading `in` to the end of the document (and checking that only
// whitespace follows). Errors: as above, and Io when reading `in` failed.
Result<Value> parse_typed_json(std::istream& in) noexcept;

// Writes the value at `node` and everything below it as typed JSON to
// `out`, streaming (no copy of the value is made; each string is copied
// once, checked and written from the copy). Lists are laid out one child
// per line, indented; everything else on one line. Output is O(region
// size): the walk spends a WalkBudget. Errors: Corrupt (a bad node, an lgl
// value other than 0, 1 and NA, a spent budget: links that share a node or
// string entries that share bytes), InvalidArgument (an attribute key that
// is NA or not valid UTF-8, which JSON cannot hold as a key), OutOfMemory.
// On error `out` holds a partial document; a failed stream is left for the
// caller to see in `out`'s state.
Status write_typed_json(const NodeView& node, std::ostream& out) noexcept;

// The typed JSON of `value`, via a hashed region image built in memory
// (for tests and small values). Errors: as Layout::plan and write_typed_json.
Result<std::string> to_typed_json(const Value& value) noexcept;

// --- Pieces shared with the plain printer ----------------------------------

// valid_utf8() and json_quote() are kura/core/bytes.hpp's.

// The shortest text that reads back to the same double (or float), always
// with a '.', an exponent, or a letter so that JSON reads it as a float.
// Non-finite values give "NaN", "Inf", "-Inf" (unquoted).
std::string format_f64(double x);
std::string format_f32(float x);

// True when `x` is R's NA_real_ (a NaN whose low 32 bits are 1954).
bool is_na_real(double x) noexcept;

// Runs `f`, which writes output and returns a Status, so that no exception
// leaves it: std::bad_alloc becomes OutOfMemory, any other std::exception
// (an ostream set to throw) Io with `what` and its what().
template <class F>
Status guard_output(const char* what, F&& f) noexcept {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::exception& e) {
    try {
      return Status(Code::kIo, std::string(what) + ": " + e.what());
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory();
    }
  }
}

// RFC 4648 base64 with padding.
std::string base64_encode(std::span<const std::byte> bytes);
// Strict decoding: padding required, no whitespace, no other characters.
// Errors: InvalidArgument.
Result<std::vector<std::byte>> base64_decode(std::string_view text);

}  // namespace kura::tool
