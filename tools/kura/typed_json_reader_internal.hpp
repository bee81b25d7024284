// The typed JSON reader's parts (typed_json_reader.cpp: the SAX events and
// the nodes' structure; typed_json_elements.cpp: array and string elements).
// Internal to the kura tool and its fuzz target.
#pragma once

#include <complex>
#include <cstdint>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "kura/core/layout.hpp"
#include "typed_json.hpp"

namespace kura::tool::typed_json {

template <class T>
void append(std::vector<std::byte>& data, T x) {
  const auto* p = reinterpret_cast<const std::byte*>(&x);
  data.insert(data.end(), p, p + sizeof x);
}

// One JSON value that is not an array or an object.
struct Scalar {
  enum Type { kNull, kBoolean, kInteger, kUnsigned, kFloat, kString };
  explicit Scalar(Type t) : type(t) {}
  Type type;
  bool boolean = false;
  std::int64_t integer = 0;
  std::uint64_t unsigned_integer = 0;
  double floating = 0;
  std::string* text = nullptr;  // kString; the parser's, may be moved from
};

// "an integer", "a string", ... for messages.
inline const char* type_of(const Scalar& s) {
  switch (s.type) {
    case Scalar::kNull: return "null";
    case Scalar::kBoolean: return "a boolean";
    case Scalar::kInteger:
    case Scalar::kUnsigned: return "an integer";
    case Scalar::kFloat: return "a float";
    case Scalar::kString: return "a string";
  }
  return "a value";
}
inline const char* type_of_container(bool object) {
  return object ? "an object" : "an array";
}

// "expected an integer for i32", ...: what an element of dtype `d` must be.
inline std::string expected_element(Dtype d) {
  const std::string name(dtype_name(d));
  switch (d) {
    case Dtype::kF32:
    case Dtype::kF64: return "expected a number for " + name;
    case Dtype::kC128: return "expected a [re, im] pair for c128";
    case Dtype::kLgl: return "expected true, false or null for lgl";
    default: return "expected an integer for " + name;
  }
}

inline std::string idx(const std::string& path, std::uint64_t i) {
  return path + "[" + std::to_string(i) + "]";
}

// The keys a node object may have. A bit each, to find duplicates.
enum Key : unsigned {
  kKeyType = 1,
  kKeyValues = 2,
  kKeyNames = 4,
  kKeyAttrs = 8,
  kKeyTag = 16,
  kKeyBase64 = 32,
};

inline std::optional<Key> key_of(std::string_view k) {
  if (k == "type") return kKeyType;
  if (k == "values") return kKeyValues;
  if (k == "names") return kKeyNames;
  if (k == "attrs") return kKeyAttrs;
  if (k == "tag") return kKeyTag;
  if (k == "base64") return kKeyBase64;
  return std::nullopt;
}

inline const char* key_name(Key k) {
  switch (k) {
    case kKeyType: return "type";
    case kKeyValues: return "values";
    case kKeyNames: return "names";
    case kKeyAttrs: return "attrs";
    case kKeyTag: return "tag";
    case kKeyBase64: return "base64";
  }
  return "?";
}

// What is being read at one level of nesting.
struct Frame {
  enum What {
    kNode,         // a node object
    kArrayValues,  // "values" of an array node
    kStrings,      // "values" of a strings node, or "names"
    kStringForm,   // {"latin1": base64} or {"bytes": base64} in kStrings
    kPair,         // a c128 [re, im] in kArrayValues
    kChildren,     // "values" of a list node
    kAttrs,        // "attrs" of a node
  };
  // `node`: the stack index of the node this frame belongs to (its own for
  // a kNode).
  Frame(What w, std::size_t node) : what(w), node(node) {}

  What what;
  std::size_t node;
  std::uint64_t count = 0;  // elements read so far (arrays), keys (kStringForm)

  // --- kNode ---
  std::string path;  // "$", "$.values[2]", "$.attrs[\"dim\"]"
  unsigned depth = 0;
  unsigned seen = 0;           // Key bits
  std::optional<Key> pending;  // the key whose value comes next
  std::optional<Kind> kind;    // known once "type" was read
  std::string type;            // its text, for messages
  Value value;                 // what is read so far
  std::optional<std::vector<String>> names;
  std::uint64_t base64_bytes = 0;  // bytes: the length of the decoded payload

  // --- kStrings: into `names` (true) or value.strings (false) ---
  bool into_names = false;
  // --- kStringForm ---
  Encoding encoding = Encoding::kBytes;
  std::string form_key;
  std::optional<String> form;
  // --- kPair ---
  double pair[2] = {0, 0};
  // --- kAttrs ---
  std::string attr_key;  // the key whose node comes next
  std::set<std::string> attr_keys;
};

class Reader {
 public:
  // The events of nlohmann::json_sax; each returns false to stop the parse,
  // with the reason in error().
  bool null() { return scalar(Scalar(Scalar::kNull)); }
  bool boolean(bool b) {
    Scalar s(Scalar::kBoolean);
    s.boolean = b;
    return scalar(s);
  }
  bool number_integer(std::int64_t i) {
    Scalar s(Scalar::kInteger);
    s.integer = i;
    return scalar(s);
  }
  bool number_unsigned(std::uint64_t u) {
    Scalar s(Scalar::kUnsigned);
    s.unsigned_integer = u;
    return scalar(s);
  }
  bool number_float(double f, const std::string&) {
    Scalar s(Scalar::kFloat);
    s.floating = f;
    return scalar(s);
  }
  bool string(std::string& text) {
    Scalar s(Scalar::kString);
    s.text = &text;
    return scalar(s);
  }
  bool binary(Json::binary_t&) { return fail("$", "binary values are not JSON"); }
  bool start_object(std::size_t) { return check(start(true)); }
  bool start_array(std::size_t) { return check(start(false)); }
  bool key(std::string& k) { return check(on_key(k)); }
  bool end_object() { return check(end()); }
  bool end_array() { return check(end()); }
  bool parse_error(std::size_t, const std::string&, const nlohmann::detail::exception& e) {
    std::string what = e.what();
    // Drop the "[json.exception.parse_error.101] " prefix.
    if (auto p = what.find("] "); what.rfind("[json.exception", 0) == 0 && p != std::string::npos)
      what = what.substr(p + 2);
    error_ = invalid_argument("not valid JSON: " + what);
    return false;
  }

  const Status& error() const { return error_; }
  std::optional<Value>& result() { return result_; }

 private:
  bool check(Status s) {
    if (s) return true;
    error_ = std::move(s);
    return false;
  }
  bool fail(const std::string& path, const std::string& why) { return check(bad(path, why)); }
  static Status bad(const std::string& path, const std::string& why) {
    return invalid_argument(path + ": " + why);
  }
  // Something other than a node object where a node must be.
  static Status not_a_node(const std::string& path, const char* found) {
    return bad(
        path,
        std::string("expected a node object such as {\"type\": \"f64\", \"values\": [...]}, found ") + found);
  }

  Frame& top() { return stack_.back(); }
  Frame& node_of(const Frame& f) { return stack_[f.node]; }

  bool scalar(const Scalar& s) { return check(on_scalar(s)); }
  Status on_scalar(const Scalar& s);
  Status start(bool object);
  Status on_key(std::string& k);
  Status end();

  Status open_node(std::string path, unsigned depth);
  Status node_value(Frame& n, const Scalar* s, std::optional<bool> container);
  Status set_type(Frame& n, const std::string& type);
  Status array_element(Frame& f, const Scalar& s);
  Result<double> floating(Dtype d, const Scalar& s, const Frame& f, bool allow_null);
  template <class T>
  Status integer(Dtype d, const Scalar& s, const Frame& f, std::vector<std::byte>& data);
  Status string_element(Frame& f, const Scalar& s);
  Status end_node();
  std::string element_path(const Frame& f, std::uint64_t i);

  std::vector<Frame> stack_;
  std::optional<Value> result_;
  Status error_;
};

}  // namespace kura::tool::typed_json
