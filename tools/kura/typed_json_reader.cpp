// Reading typed JSON: nlohmann's SAX parser hands events to a Reader, which
// builds the kura::Value directly. No JSON document is ever built, so memory
// is the Value plus the frames of the nodes being read, and nothing
// allocates while an exception unwinds (a DOM's destructor does). This file
// follows the nodes' structure; typed_json_elements.cpp reads elements.
#include <istream>
#include <stdexcept>

#include "typed_json_reader_internal.hpp"

namespace kura::tool {
namespace typed_json {

std::string Reader::element_path(const Frame& f, std::uint64_t i) {
  const Frame& n = stack_[f.node];
  switch (f.what) {
    case Frame::kArrayValues:
    case Frame::kChildren: return idx(n.path + ".values", i);
    case Frame::kStrings: return idx(n.path + (f.into_names ? ".names" : ".values"), i);
    case Frame::kPair: return idx(idx(n.path + ".values", stack_[stack_.size() - 2].count), i);
    default: return n.path;
  }
}

Status Reader::open_node(std::string path, unsigned depth) {
  if (depth > kMaxDepth) return bad(path, "nested deeper than " + std::to_string(kMaxDepth) + " levels");
  Frame f(Frame::kNode, stack_.size());
  f.path = std::move(path);
  f.depth = depth;
  stack_.push_back(std::move(f));
  return Status::ok();
}

Status Reader::start(bool object) {
  const char* found = type_of_container(object);
  if (stack_.empty()) {
    if (!object) return not_a_node("$", found);
    return open_node("$", 0);
  }
  Frame& f = top();
  switch (f.what) {
    case Frame::kNode: return node_value(f, nullptr, object);
    case Frame::kArrayValues: {
      const Dtype d = node_of(f).value.dtype;
      if (d == Dtype::kC128 && !object) {
        stack_.emplace_back(Frame::kPair, f.node);
        return Status::ok();
      }
      return bad(element_path(f, f.count), expected_element(d) + ", found " + found);
    }
    case Frame::kStrings: {
      if (!object)
        return bad(element_path(f, f.count),
                   "expected a string, null, {\"latin1\": base64} or {\"bytes\": base64}, found an array");
      stack_.emplace_back(Frame::kStringForm, f.node);
      return Status::ok();
    }
    case Frame::kStringForm: {
      const Frame& list = stack_[stack_.size() - 2];
      return bad(element_path(list, list.count) + "." + f.form_key,
                 std::string("expected base64 text, found ") + found);
    }
    case Frame::kPair:
      return bad(element_path(f, f.count), std::string("expected a number for c128, found ") + found);
    case Frame::kChildren:
    case Frame::kAttrs: {
      std::string p = f.what == Frame::kChildren ? element_path(f, f.count)
                                                 : node_of(f).path + ".attrs[" + json_quote(f.attr_key) + "]";
      if (!object) return not_a_node(p, found);
      return open_node(std::move(p), node_of(f).depth + 1);
    }
  }
  return Status::ok();
}

Status Reader::on_scalar(const Scalar& s) {
  if (stack_.empty()) return not_a_node("$", type_of(s));
  Frame& f = top();
  switch (f.what) {
    case Frame::kNode: return node_value(f, &s, std::nullopt);
    case Frame::kArrayValues: {
      KURA_RETURN_IF_ERROR(array_element(f, s));
      ++f.count;
      return Status::ok();
    }
    case Frame::kStrings: {
      KURA_RETURN_IF_ERROR(string_element(f, s));
      ++f.count;
      return Status::ok();
    }
    case Frame::kStringForm: {
      const Frame& list = stack_[stack_.size() - 2];
      auto path = [&] { return element_path(list, list.count) + "." + f.form_key; };
      if (s.type != Scalar::kString)
        return bad(path(), std::string("expected base64 text, found ") + type_of(s));
      auto bytes = base64_decode(*s.text);
      if (!bytes) return bad(path(), bytes.status().message());
      f.form =
          String{std::string(reinterpret_cast<const char*>(bytes->data()), bytes->size()), f.encoding, false};
      return Status::ok();
    }
    case Frame::kPair: {
      if (f.count >= 2)
        return bad(element_path(stack_[stack_.size() - 2], stack_[stack_.size() - 2].count),
                   "expected a [re, im] pair for c128, found an array of more than 2");
      KURA_ASSIGN_OR_RETURN(f.pair[f.count], floating(Dtype::kC128, s, f, true));
      ++f.count;
      return Status::ok();
    }
    case Frame::kChildren: return not_a_node(element_path(f, f.count), type_of(s));
    case Frame::kAttrs:
      return not_a_node(node_of(f).path + ".attrs[" + json_quote(f.attr_key) + "]", type_of(s));
  }
  return Status::ok();
}

Status Reader::on_key(std::string& k) {
  Frame& f = top();
  switch (f.what) {
    case Frame::kNode: {
      auto key = key_of(k);
      if (!key)
        return bad(f.path,
                   "unexpected key \"" + k + "\" in a " + (f.kind ? f.type + " node" : std::string("node")) +
                       " (a node has \"type\", \"values\", \"names\", \"attrs\", \"tag\", \"base64\")");
      if (f.seen & *key) return bad(f.path, "duplicate key \"" + k + "\"");
      if (*key == kKeyValues && !f.kind)
        return bad(
            f.path,
            "\"values\" comes before \"type\"; a node's \"type\" must come before its \"values\" (they are "
            "read straight into place)");
      if (f.kind) {
        const bool ok = (*key == kKeyValues && *f.kind != Kind::kNull && *f.kind != Kind::kBytes) ||
                        ((*key == kKeyTag || *key == kKeyBase64) && *f.kind == Kind::kBytes) ||
                        *key == kKeyType || *key == kKeyNames || *key == kKeyAttrs;
        if (!ok) return bad(f.path, "unexpected key \"" + k + "\" in a " + f.type + " node");
      }
      f.seen |= *key;
      f.pending = *key;
      return Status::ok();
    }
    case Frame::kStringForm: {
      const Frame& list = stack_[stack_.size() - 2];
      const std::string p = element_path(list, list.count);
      if (f.count > 0)
        return bad(
            p,
            "expected a string, null, {\"latin1\": base64} or {\"bytes\": base64}, found an object with "
            "more than one key");
      ++f.count;
      if (k == "latin1")
        f.encoding = Encoding::kLatin1;
      else if (k == "bytes")
        f.encoding = Encoding::kBytes;
      else
        return bad(p, "a string object has the key \"" + k + "\"; expected \"latin1\" or \"bytes\"");
      f.form_key = k;
      return Status::ok();
    }
    case Frame::kAttrs: {
      const std::string p = node_of(f).path + ".attrs[" + json_quote(k) + "]";
      if (k.empty()) return bad(p, "an attribute key may not be empty");
      if (!f.attr_keys.insert(k).second) return bad(p, "duplicate attribute key");
      f.attr_key = k;
      return Status::ok();
    }
    default: return bad(node_of(f).path, "unexpected key");  // the parser gives keys in objects only
  }
}

Status Reader::end() {
  Frame& f = top();
  switch (f.what) {
    case Frame::kNode: return end_node();
    case Frame::kArrayValues: {
      Frame& n = node_of(f);
      n.value.length = f.count;
      break;
    }
    case Frame::kStrings: {
      Frame& n = node_of(f);
      if (!f.into_names) n.value.length = f.count;
      break;
    }
    case Frame::kStringForm: {
      Frame& list = stack_[stack_.size() - 2];
      if (f.count == 0)
        return bad(
            element_path(list, list.count),
            "expected a string, null, {\"latin1\": base64} or {\"bytes\": base64}, found an empty object");
      Frame& n = node_of(f);
      auto& target = list.into_names ? *n.names : n.value.strings;
      target.push_back(std::move(*f.form));
      ++list.count;
      break;
    }
    case Frame::kPair: {
      Frame& values = stack_[stack_.size() - 2];
      if (f.count != 2)
        return bad(element_path(values, values.count),
                   "expected a [re, im] pair for c128, found an array of " + std::to_string(f.count));
      append(node_of(f).value.data, std::complex<double>(f.pair[0], f.pair[1]));
      ++values.count;
      break;
    }
    case Frame::kChildren: {
      Frame& n = node_of(f);
      n.value.length = f.count;
      break;
    }
    case Frame::kAttrs: break;
  }
  stack_.pop_back();
  return Status::ok();
}

Status Reader::set_type(Frame& n, const std::string& type) {
  n.type = type;
  if (type == "null") {
    n.kind = Kind::kNull;
  } else if (type == "list") {
    n.kind = Kind::kList;
  } else if (type == "strings") {
    n.kind = Kind::kStrings;
  } else if (type == "bytes") {
    n.kind = Kind::kBytes;
  } else if (auto d = dtype_from_name(type); d && *d != Dtype::kNone) {
    n.kind = Kind::kArray;
    n.value.dtype = *d;
  } else {
    return bad(n.path + ".type", "unknown type \"" + type +
                                     "\"; expected null, list, strings, bytes or a dtype (u8 i8 u16 i16 u32 "
                                     "i32 u64 i64 f32 f64 c128 lgl)");
  }
  n.value.kind = *n.kind;
  // Keys read before "type" that this type does not have.
  for (Key k : {kKeyTag, kKeyBase64})
    if ((n.seen & k) && *n.kind != Kind::kBytes)
      return bad(n.path, std::string("unexpected key \"") + key_name(k) + "\" in a " + type + " node");
  return Status::ok();
}

Status Reader::node_value(Frame& n, const Scalar* s, std::optional<bool> container) {
  const Key key = *n.pending;
  n.pending.reset();
  const std::string found = s ? type_of(*s) : type_of_container(*container);
  switch (key) {
    case kKeyType:
      if (!s || s->type != Scalar::kString) return bad(n.path + ".type", "expected a string, found " + found);
      return set_type(n, *s->text);
    case kKeyValues: {
      if (container != std::optional<bool>(false))
        return bad(n.path + ".values", "expected an array, found " + found);
      const Frame::What what = *n.kind == Kind::kList      ? Frame::kChildren
                               : *n.kind == Kind::kStrings ? Frame::kStrings
                                                           : Frame::kArrayValues;
      stack_.emplace_back(what, n.node);
      return Status::ok();
    }
    case kKeyNames: {
      if (container != std::optional<bool>(false))
        return bad(n.path + ".names", "expected an array of strings, found " + found);
      n.names.emplace();
      stack_.emplace_back(Frame::kStrings, n.node).into_names = true;
      return Status::ok();
    }
    case kKeyAttrs: {
      if (container != std::optional<bool>(true))
        return bad(n.path + ".attrs", "expected an object of nodes, found " + found);
      stack_.emplace_back(Frame::kAttrs, n.node);
      return Status::ok();
    }
    case kKeyTag: {
      if (!s || s->type != Scalar::kString) return bad(n.path + ".tag", "expected a string, found " + found);
      const std::string& tag = *s->text;
      if (tag.size() > 8)
        return bad(n.path + ".tag", "a tag is at most 8 printable ASCII characters (0x21-0x7E), not " +
                                        std::to_string(tag.size()) + " bytes");
      for (std::size_t i = 0; i < tag.size(); ++i) {
        const auto c = static_cast<unsigned char>(tag[i]);
        if (c < 0x21 || c > 0x7E) {
          static const char* hex = "0123456789abcdef";
          return bad(n.path + ".tag",
                     std::string("a tag is at most 8 printable ASCII characters (0x21-0x7E); byte ") +
                         std::to_string(i + 1) + " is 0x" + hex[c >> 4] + hex[c & 15]);
        }
      }
      n.value.tag = tag;
      return Status::ok();
    }
    case kKeyBase64: {
      if (!s || s->type != Scalar::kString)
        return bad(n.path + ".base64", "expected base64 text, found " + found);
      auto bytes = base64_decode(*s->text);
      if (!bytes) return bad(n.path + ".base64", bytes.status().message());
      n.base64_bytes = bytes->size();
      n.value.data = std::move(bytes).value();
      return Status::ok();
    }
  }
  return Status::ok();
}

Status Reader::end_node() {
  Frame& n = top();
  if (!n.kind) return bad(n.path, "a node needs a \"type\"");
  const Kind kind = *n.kind;
  if ((kind == Kind::kArray || kind == Kind::kStrings || kind == Kind::kList) && !(n.seen & kKeyValues))
    return bad(n.path, "a " + n.type + " node needs \"values\"");
  if (kind == Kind::kBytes) {
    if (!(n.seen & kKeyBase64)) return bad(n.path, "a bytes node needs \"base64\"");
    n.value.length = n.base64_bytes;
  }
  if (n.names) {
    if (n.names->size() != n.value.length)
      return bad(n.path + ".names", std::to_string(n.names->size()) + " names for " +
                                        std::to_string(n.value.length) + " elements");
    n.value.names = std::move(n.names);
  }
  Value v = std::move(n.value);
  stack_.pop_back();
  if (stack_.empty()) {
    result_ = std::move(v);
    return Status::ok();
  }
  Frame& parent = top();
  Frame& owner = node_of(parent);
  if (parent.what == Frame::kChildren) {
    owner.value.children.push_back(std::move(v));
    ++parent.count;
  } else {
    owner.value.attrs.emplace_back(std::move(parent.attr_key), std::move(v));
  }
  return Status::ok();
}

}  // namespace typed_json

namespace {

// Parses JSON from `input` (a pointer pair or an istream) into a Value.
template <class... Input>
Result<Value> parse(Input&&... input) noexcept {
  try {
    typed_json::Reader reader;
    if (!Json::sax_parse(std::forward<Input>(input)..., &reader)) return reader.error();
    if (!reader.result()) return invalid_argument("typed JSON: no value");
    return std::move(*reader.result());
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::length_error&) {
    return Status::out_of_memory();
  } catch (const std::exception& e) {
    try {
      return invalid_argument(std::string("cannot read typed JSON: ") + e.what());
    } catch (const std::bad_alloc&) {
      return Status::out_of_memory();
    }
  }
}

}  // namespace

Result<Value> parse_typed_json(std::string_view text) noexcept {
  return parse(text.data(), text.data() + text.size());
}

Result<Value> parse_typed_json(std::istream& in) noexcept {
  auto v = parse(in);
  if (in.bad()) return Status(Code::kIo, "read failed");  // short enough to need no allocation
  return v;
}

}  // namespace kura::tool
