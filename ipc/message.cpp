#include <new>
#include <string>

#include "kura/core/builder.hpp"
#include "kura/core/name.hpp"
#include "message_internal.hpp"

namespace kura::ipc::detail {

namespace {

Value u64_of(std::uint64_t x) {
  return Value::array<Dtype::kU64>({x});
}
Value i64_of(std::int64_t x) {
  return Value::array<Dtype::kI64>({x});
}
Value u32_of(std::uint32_t x) {
  return Value::array<Dtype::kU32>({x});
}
Value string_of(std::string_view s) {
  return Value::strings_of({String{std::string(s), Encoding::kUtf8, false}});
}

// A list whose elements are named by `keys`.
Value record(std::vector<std::pair<const char*, Value>> fields) {
  std::vector<Value> children;
  std::vector<String> names;
  children.reserve(fields.size());
  names.reserve(fields.size());
  for (auto& [key, value] : fields) {
    children.push_back(std::move(value));
    names.push_back(String{key, Encoding::kUtf8, false});
  }
  return Value::list(std::move(children)).with_names(std::move(names));
}

// Messages are small and read once: no node hashes.
Result<Bytes> image_of(const Value& v) noexcept {
  return build(v, Stamp{}, /*hashed=*/false);
}

Status bad(const char* message, std::string_view what) {
  return corrupt(std::string(message) + ": " + std::string(what));
}

// The fields of a message image: a list whose i-th child is named keys[i],
// exactly the fields the encoder writes, in its order (reading them by
// position costs one name comparison each, not a search).
class Record {
 public:
  static Result<Record> open(std::span<const std::byte> payload, std::shared_ptr<const void> keep,
                             const char* message, std::initializer_list<std::string_view> keys) {
    auto region = Region::open(payload, std::move(keep));
    if (!region) return bad(message, region.status().message());
    auto root = region->root();
    if (!root) return bad(message, root.status().message());
    if (root->kind() != Kind::kList || root->length() != keys.size())
      return bad(message, "not a record of its fields");
    auto names = root->names();
    if (!names) return bad(message, names.status().message());
    if (!*names) return bad(message, "a record without field names");
    Record r;
    r.message_ = message;
    r.fields_.reserve(keys.size());
    std::size_t i = 0;
    for (std::string_view key : keys) {
      auto name = (*names)->string(i);
      if (!name) return bad(message, name.status().message());
      if (name->na || name->bytes != key)
        return bad(message, "field " + std::to_string(i + 1) + " is not \"" + std::string(key) + "\"");
      auto child = root->child(i);
      if (!child) return bad(message, child.status().message());
      r.fields_.push_back(std::move(child).value());
      ++i;
    }
    return r;
  }
  const NodeView& operator[](std::size_t i) const { return fields_[i]; }
  const char* message() const { return message_; }

 private:
  const char* message_ = "";
  std::vector<NodeView> fields_;
};

template <Dtype D>
Result<typename DtypeTraits<D>::type> scalar(const NodeView& n, const char* message, std::string_view key) {
  auto xs = n.array<D>();
  if (!xs || xs->size() != 1)
    return bad(message, "field \"" + std::string(key) + "\" is " + n.describe() + ", not one " +
                            std::string(dtype_name(D)));
  return (*xs)[0];
}

Result<std::string> text(const NodeView& n, const char* message, std::string_view key) {
  if (n.kind() != Kind::kStrings || n.length() != 1)
    return bad(message, "field \"" + std::string(key) + "\" is " + n.describe() + ", not one string");
  auto s = n.string(0);
  if (!s) return bad(message, s.status().message());
  if (s->na || s->encoding != Encoding::kUtf8)
    return bad(message, "field \"" + std::string(key) + "\" is NA or not UTF-8");
  return std::string(s->bytes);
}

template <class F>
auto guard(F&& f) noexcept -> decltype(f()) {
  try {
    return f();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::exception& e) {
    return Status(Code::kIo, e.what());
  }
}

}  // namespace

Value borrow_value(const Value& v) {
  Value out;
  out.kind = v.kind;
  out.dtype = v.dtype;
  out.length = v.length;
  out.source = v.source;
  out.tag = v.tag;
  out.names = v.names;
  if ((v.kind == Kind::kArray || v.kind == Kind::kBytes) && v.source != Source::kInPlace) {
    out.source = Source::kBorrowed;
    out.borrowed = v.payload().data();
  }
  out.strings = v.strings;
  out.children.reserve(v.children.size());
  for (const Value& c : v.children) out.children.push_back(borrow_value(c));
  for (const auto& [key, a] : v.attrs) out.attrs.emplace_back(key, borrow_value(a));
  return out;
}

Result<Bytes> encode_hello(const Hello& h) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(
        record({{"role", string_of(h.role)}, {"pid", i64_of(h.pid)}, {"owner", u64_of(h.owner)}}));
  });
}

Result<Hello> decode_hello(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Hello> {
    constexpr const char* kMsg = "hello";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"role", "pid", "owner"}));
    Hello h;
    KURA_ASSIGN_OR_RETURN(h.role, text(r[0], kMsg, "role"));
    if (h.role != "client" && h.role != "worker") return bad(kMsg, "unknown role \"" + h.role + "\"");
    KURA_ASSIGN_OR_RETURN(h.pid, scalar<Dtype::kI64>(r[1], kMsg, "pid"));
    KURA_ASSIGN_OR_RETURN(h.owner, scalar<Dtype::kU64>(r[2], kMsg, "owner"));
    return h;
  });
}

Result<Bytes> encode_welcome(const Welcome& w) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"frame_limit", u32_of(w.frame_limit)},
                            {"pid", i64_of(w.pid)},
                            {"queue_cap", u64_of(w.queue_cap)}}));
  });
}

Result<Welcome> decode_welcome(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Welcome> {
    constexpr const char* kMsg = "welcome";
    KURA_ASSIGN_OR_RETURN(Record r,
                          Record::open(payload, nullptr, kMsg, {"frame_limit", "pid", "queue_cap"}));
    Welcome w;
    KURA_ASSIGN_OR_RETURN(w.frame_limit, scalar<Dtype::kU32>(r[0], kMsg, "frame_limit"));
    KURA_ASSIGN_OR_RETURN(w.pid, scalar<Dtype::kI64>(r[1], kMsg, "pid"));
    KURA_ASSIGN_OR_RETURN(w.queue_cap, scalar<Dtype::kU64>(r[2], kMsg, "queue_cap"));
    return w;
  });
}

Result<Bytes> encode_submit(const Call& call, std::uint64_t owner, const TaskOptions& options) noexcept {
  return guard([&]() -> Result<Bytes> {
    std::vector<std::uint8_t> kinds;
    std::vector<Value> args;
    kinds.reserve(call.args.size());
    args.reserve(call.args.size());
    for (std::size_t i = 0; i < call.args.size(); ++i) {
      const Arg& a = call.args[i];
      if (!a.name.empty()) {
        auto parsed = parse_name(a.name);
        if (!parsed)
          return invalid_argument("argument " + std::to_string(i + 1) + ": " + parsed.status().message());
        kinds.push_back(1);
        args.push_back(string_of(a.name));
      } else if (a.value) {
        kinds.push_back(0);
        args.push_back(borrow_value(*a.value));
      } else {
        return invalid_argument("argument " + std::to_string(i + 1) + " has neither a name nor a value");
      }
    }
    const auto timeout =
        options.timeout.count() > 0 ? static_cast<std::uint64_t>(options.timeout.count()) : 0;
    return image_of(record({{"fn", string_of(call.fn)},
                            {"owner", u64_of(owner)},
                            {"timeout_ms", u64_of(timeout)},
                            {"retries", u32_of(options.retries)},
                            {"inline_result", Value::array<Dtype::kLgl>({options.inline_result ? 1 : 0})},
                            {"kinds", Value::array<Dtype::kU8>(std::span<const std::uint8_t>(kinds))},
                            {"args", Value::list(std::move(args))}}));
  });
}

Result<Submit> decode_submit(std::shared_ptr<const Bytes> payload) noexcept {
  return guard([&]() -> Result<Submit> {
    constexpr const char* kMsg = "submit";
    std::span<const std::byte> bytes(payload->data(), payload->size());
    KURA_ASSIGN_OR_RETURN(
        Record r, Record::open(bytes, payload, kMsg,
                               {"fn", "owner", "timeout_ms", "retries", "inline_result", "kinds", "args"}));
    Submit s;
    KURA_ASSIGN_OR_RETURN(s.fn, text(r[0], kMsg, "fn"));
    if (s.fn.empty()) return bad(kMsg, "empty function name");
    KURA_ASSIGN_OR_RETURN(s.owner, scalar<Dtype::kU64>(r[1], kMsg, "owner"));
    KURA_ASSIGN_OR_RETURN(s.timeout_ms, scalar<Dtype::kU64>(r[2], kMsg, "timeout_ms"));
    KURA_ASSIGN_OR_RETURN(s.retries, scalar<Dtype::kU32>(r[3], kMsg, "retries"));
    KURA_ASSIGN_OR_RETURN(std::int32_t inline_result, scalar<Dtype::kLgl>(r[4], kMsg, "inline_result"));
    if (inline_result != 0 && inline_result != 1) return bad(kMsg, "inline_result is not true or false");
    s.inline_result = inline_result == 1;
    auto kinds = r[5].array<Dtype::kU8>();
    if (!kinds) return bad(kMsg, "field \"kinds\" is " + r[5].describe());
    const NodeView& args = r[6];
    if (args.kind() != Kind::kList || args.length() != kinds->size())
      return bad(kMsg,
                 "field \"args\" is " + args.describe() + " for " + std::to_string(kinds->size()) + " kinds");
    s.args.reserve(kinds->size());
    for (std::size_t i = 0; i < kinds->size(); ++i) {
      auto a = args.child(i);
      if (!a) return bad(kMsg, a.status().message());
      Submit::ArgView arg;
      const std::uint8_t kind = (*kinds)[i];
      if (kind == 1) {
        KURA_ASSIGN_OR_RETURN(arg.name, text(*a, kMsg, "args"));
        auto parsed = parse_name(arg.name);
        if (!parsed) return bad(kMsg, "argument " + std::to_string(i + 1) + ": " + parsed.status().message());
      } else if (kind == 0) {
        arg.value = std::move(a).value();
      } else {
        return bad(kMsg, "unknown argument kind " + std::to_string(kind));
      }
      s.args.push_back(std::move(arg));
    }
    return s;
  });
}

Result<Bytes> encode_result(Outcome outcome, std::string_view message, std::string_view name,
                            const Value* value) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"outcome", Value::array<Dtype::kU8>({static_cast<std::uint8_t>(outcome)})},
                            {"message", string_of(message)},
                            {"name", string_of(name)},
                            {"value", value != nullptr ? borrow_value(*value) : Value::null()}}));
  });
}

Result<ResultMsg> decode_result(std::shared_ptr<const Bytes> payload) noexcept {
  return guard([&]() -> Result<ResultMsg> {
    constexpr const char* kMsg = "result";
    std::span<const std::byte> bytes(payload->data(), payload->size());
    KURA_ASSIGN_OR_RETURN(Record f,
                          Record::open(bytes, payload, kMsg, {"outcome", "message", "name", "value"}));
    ResultMsg r;
    KURA_ASSIGN_OR_RETURN(std::uint8_t outcome, scalar<Dtype::kU8>(f[0], kMsg, "outcome"));
    if (outcome > kMaxOutcome) return bad(kMsg, "unknown outcome " + std::to_string(outcome));
    r.outcome = static_cast<Outcome>(outcome);
    KURA_ASSIGN_OR_RETURN(r.message, text(f[1], kMsg, "message"));
    KURA_ASSIGN_OR_RETURN(r.name, text(f[2], kMsg, "name"));
    if (!r.name.empty()) {
      auto parsed = parse_name(r.name);
      if (!parsed || !parsed->path.empty()) return bad(kMsg, "the result name is not a region name");
      if (r.outcome != Outcome::kOk) return bad(kMsg, "a name with an outcome other than ok");
    }
    if (r.outcome == Outcome::kOk && r.name.empty()) r.value = f[3];
    return r;
  });
}

Result<Bytes> encode_status(const DispatcherStatus& s) noexcept {
  return guard([&]() -> Result<Bytes> {
    const std::uint64_t counters[] = {s.connections,  s.cumulative,  s.awaiting,   s.executing, s.completed,
                                      s.queued_bytes, s.queued_peak, s.queued_cap, s.bytes_in,  s.bytes_out};
    std::vector<std::int64_t> pids;
    std::vector<String> states;
    std::vector<std::uint64_t> done;
    for (const WorkerStatus& w : s.workers) {
      pids.push_back(w.pid);
      states.push_back(String{w.state, Encoding::kUtf8, false});
      done.push_back(w.tasks_done);
    }
    return image_of(
        record({{"counters", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(counters))},
                {"worker_pid", Value::array<Dtype::kI64>(std::span<const std::int64_t>(pids))},
                {"worker_state", Value::strings_of(std::move(states))},
                {"worker_done", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(done))}}));
  });
}

Result<DispatcherStatus> decode_status(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<DispatcherStatus> {
    constexpr const char* kMsg = "status";
    KURA_ASSIGN_OR_RETURN(Record f, Record::open(payload, nullptr, kMsg,
                                                 {"counters", "worker_pid", "worker_state", "worker_done"}));
    auto counters = f[0].array<Dtype::kU64>();
    if (!counters || counters->size() != 10) return bad(kMsg, "counters are " + f[0].describe());
    DispatcherStatus s;
    const auto& c = *counters;
    s.connections = c[0];
    s.cumulative = c[1];
    s.awaiting = c[2];
    s.executing = c[3];
    s.completed = c[4];
    s.queued_bytes = c[5];
    s.queued_peak = c[6];
    s.queued_cap = c[7];
    s.bytes_in = c[8];
    s.bytes_out = c[9];
    auto pids = f[1].array<Dtype::kI64>();
    auto done = f[3].array<Dtype::kU64>();
    const NodeView& states = f[2];
    if (!pids || !done || states.kind() != Kind::kStrings || states.length() != pids->size() ||
        done->size() != pids->size())
      return bad(kMsg, "worker rows of different lengths or types");
    for (std::size_t i = 0; i < pids->size(); ++i) {
      auto st = states.string(i);
      if (!st || st->na) return bad(kMsg, "a worker state is not a string");
      s.workers.push_back(WorkerStatus{(*pids)[i], std::string(st->bytes), (*done)[i]});
    }
    return s;
  });
}

}  // namespace kura::ipc::detail
