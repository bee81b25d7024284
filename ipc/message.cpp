#include <time.h>

#include <new>
#include <string>

#include "kura/core/builder.hpp"
#include "kura/core/name.hpp"
#include "message_internal.hpp"
#include "record_internal.hpp"

namespace kura::ipc::detail {

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

std::string version_mismatch(std::string_view who, std::uint32_t theirs) {
  return std::string(who) + " speaks kura protocol " + std::to_string(theirs) + ", this side speaks " +
         std::to_string(kProtocolVersion) + " (run the same kura version on both sides)";
}

Result<Bytes> encode_hello(const Hello& h) noexcept {
  return guard([&]() -> Result<Bytes> {
    std::vector<String> fns;
    fns.reserve(h.functions.size());
    for (const std::string& f : h.functions) fns.push_back(String{f, Encoding::kUtf8, false});
    return image_of(record({{"protocol", u32_of(h.protocol)},
                            {"features", u64_of(h.features)},
                            {"role", string_of(h.role)},
                            {"pid", i64_of(h.pid)},
                            {"owner", u64_of(h.owner)},
                            {"token", u64_of(h.token)},
                            {"functions", Value::strings_of(std::move(fns))}}));
  });
}

namespace {

// A record's field count and first field name tell the protocol version
// of a hello or welcome before its fields are read.
Result<std::pair<std::uint64_t, std::string>> shape_of(std::span<const std::byte> payload,
                                                       const char* message) {
  auto region = Region::open(payload, nullptr);
  if (!region) return bad(message, region.status().message());
  auto root = region->root();
  if (!root) return bad(message, root.status().message());
  if (root->kind() != Kind::kList || root->length() == 0) return bad(message, "not a record of its fields");
  auto names = root->names();
  if (!names) return bad(message, names.status().message());
  if (!*names) return bad(message, "a record without field names");
  auto first = (*names)->string(0);
  if (!first) return bad(message, first.status().message());
  return std::pair<std::uint64_t, std::string>(root->length(), std::string(first->bytes));
}

Status check_role(const Hello& h, const char* kMsg) {
  if (h.role != "client" && h.role != "worker") return bad(kMsg, "unknown role \"" + h.role + "\"");
  return Status::ok();
}

}  // namespace

Result<Hello> decode_hello(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Hello> {
    constexpr const char* kMsg = "hello";
    KURA_ASSIGN_OR_RETURN(auto shape, shape_of(payload, kMsg));
    Hello h;
    if (shape.first == 3 && shape.second == "role") {
      // Protocol 1 (kura 0.1): recognised only to be refused by name.
      KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"role", "pid", "owner"}));
      KURA_ASSIGN_OR_RETURN(h.role, text(r[0], kMsg, "role"));
      KURA_RETURN_IF_ERROR(check_role(h, kMsg));
      KURA_ASSIGN_OR_RETURN(h.pid, scalar<Dtype::kI64>(r[1], kMsg, "pid"));
      KURA_ASSIGN_OR_RETURN(h.owner, scalar<Dtype::kU64>(r[2], kMsg, "owner"));
      h.protocol = 1;
      h.features = 0;
      return h;
    }
    KURA_ASSIGN_OR_RETURN(
        Record r, Record::open(payload, nullptr, kMsg,
                               {"protocol", "features", "role", "pid", "owner", "token", "functions"}));
    KURA_ASSIGN_OR_RETURN(h.protocol, scalar<Dtype::kU32>(r[0], kMsg, "protocol"));
    KURA_ASSIGN_OR_RETURN(h.features, scalar<Dtype::kU64>(r[1], kMsg, "features"));
    KURA_ASSIGN_OR_RETURN(h.role, text(r[2], kMsg, "role"));
    KURA_RETURN_IF_ERROR(check_role(h, kMsg));
    KURA_ASSIGN_OR_RETURN(h.pid, scalar<Dtype::kI64>(r[3], kMsg, "pid"));
    KURA_ASSIGN_OR_RETURN(h.owner, scalar<Dtype::kU64>(r[4], kMsg, "owner"));
    KURA_ASSIGN_OR_RETURN(h.token, scalar<Dtype::kU64>(r[5], kMsg, "token"));
    const NodeView& fns = r[6];
    if (fns.kind() != Kind::kStrings) return bad(kMsg, "field \"functions\" is " + fns.describe());
    if (fns.length() > kMaxFunctions)
      return bad(kMsg, "more than " + std::to_string(kMaxFunctions) + " functions");
    h.functions.reserve(static_cast<std::size_t>(fns.length()));
    for (std::uint64_t i = 0; i < fns.length(); ++i) {
      auto f = fns.string(i);
      if (!f) return bad(kMsg, f.status().message());
      if (f->na || f->encoding != Encoding::kUtf8 || f->bytes.empty() || f->bytes.size() > kMaxFunctionName)
        return bad(kMsg, "a function name that is NA, empty, not UTF-8 or over " +
                             std::to_string(kMaxFunctionName) + " bytes");
      h.functions.emplace_back(f->bytes);
    }
    return h;
  });
}

Result<Bytes> encode_welcome(const Welcome& w) noexcept {
  return guard([&]() -> Result<Bytes> {
    return image_of(record({{"protocol", u32_of(w.protocol)},
                            {"features", u64_of(w.features)},
                            {"frame_limit", u32_of(w.frame_limit)},
                            {"pid", i64_of(w.pid)},
                            {"queue_cap", u64_of(w.queue_cap)},
                            {"heartbeat_ms", u32_of(w.heartbeat_ms)},
                            {"heartbeat_timeout_ms", u32_of(w.heartbeat_timeout_ms)},
                            {"regions", string_of(w.regions)}}));
  });
}

Result<Welcome> decode_welcome(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<Welcome> {
    constexpr const char* kMsg = "welcome";
    KURA_ASSIGN_OR_RETURN(auto shape, shape_of(payload, kMsg));
    Welcome w;
    if (shape.first == 3 && shape.second == "frame_limit") {
      // Protocol 1 (kura 0.1): recognised only to be refused by name.
      KURA_ASSIGN_OR_RETURN(Record r,
                            Record::open(payload, nullptr, kMsg, {"frame_limit", "pid", "queue_cap"}));
      KURA_ASSIGN_OR_RETURN(w.frame_limit, scalar<Dtype::kU32>(r[0], kMsg, "frame_limit"));
      KURA_ASSIGN_OR_RETURN(w.pid, scalar<Dtype::kI64>(r[1], kMsg, "pid"));
      KURA_ASSIGN_OR_RETURN(w.queue_cap, scalar<Dtype::kU64>(r[2], kMsg, "queue_cap"));
      w.protocol = 1;
      w.features = 0;
      return w;
    }
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg,
                                                 {"protocol", "features", "frame_limit", "pid", "queue_cap",
                                                  "heartbeat_ms", "heartbeat_timeout_ms", "regions"}));
    KURA_ASSIGN_OR_RETURN(w.protocol, scalar<Dtype::kU32>(r[0], kMsg, "protocol"));
    KURA_ASSIGN_OR_RETURN(w.features, scalar<Dtype::kU64>(r[1], kMsg, "features"));
    KURA_ASSIGN_OR_RETURN(w.frame_limit, scalar<Dtype::kU32>(r[2], kMsg, "frame_limit"));
    KURA_ASSIGN_OR_RETURN(w.pid, scalar<Dtype::kI64>(r[3], kMsg, "pid"));
    KURA_ASSIGN_OR_RETURN(w.queue_cap, scalar<Dtype::kU64>(r[4], kMsg, "queue_cap"));
    KURA_ASSIGN_OR_RETURN(w.heartbeat_ms, scalar<Dtype::kU32>(r[5], kMsg, "heartbeat_ms"));
    KURA_ASSIGN_OR_RETURN(w.heartbeat_timeout_ms, scalar<Dtype::kU32>(r[6], kMsg, "heartbeat_timeout_ms"));
    KURA_ASSIGN_OR_RETURN(w.regions, text(r[7], kMsg, "regions"));
    return w;
  });
}

Result<Bytes> encode_refused(std::string_view message) noexcept {
  return guard([&]() -> Result<Bytes> { return image_of(record({{"message", string_of(message)}})); });
}

Result<std::string> decode_refused(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<std::string> {
    constexpr const char* kMsg = "refused";
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(payload, nullptr, kMsg, {"message"}));
    return text(r[0], kMsg, "message");
  });
}

Result<Bytes> encode_submit(const Call& call, std::uint64_t owner, const TaskOptions& options) noexcept {
  return guard([&]() -> Result<Bytes> {
    if (options.retries > kMaxRetries)
      return invalid_argument("retries is " + std::to_string(options.retries) + ", over the most allowed, " +
                              std::to_string(kMaxRetries));
    if (!options.traceparent.empty() && !valid_traceparent(options.traceparent))
      return invalid_argument("traceparent \"" + options.traceparent +
                              "\" is not a W3C trace context (00-<32 hex>-<16 hex>-<2 hex>)");
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
                            {"wait_for_worker", Value::array<Dtype::kLgl>({options.wait_for_worker ? 1 : 0})},
                            {"traceparent", string_of(options.traceparent)},
                            {"kinds", Value::array<Dtype::kU8>(std::span<const std::uint8_t>(kinds))},
                            {"args", Value::list(std::move(args))}}));
  });
}

Result<Submit> decode_submit(std::shared_ptr<const Bytes> payload) noexcept {
  return guard([&]() -> Result<Submit> {
    constexpr const char* kMsg = "submit";
    std::span<const std::byte> bytes(payload->data(), payload->size());
    KURA_ASSIGN_OR_RETURN(Record r, Record::open(bytes, payload, kMsg,
                                                 {"fn", "owner", "timeout_ms", "retries", "inline_result",
                                                  "wait_for_worker", "traceparent", "kinds", "args"}));
    Submit s;
    KURA_ASSIGN_OR_RETURN(s.fn, text(r[0], kMsg, "fn"));
    if (s.fn.empty() || s.fn.size() > kMaxFunctionName)
      return bad(kMsg,
                 "a function name that is empty or over " + std::to_string(kMaxFunctionName) + " bytes");
    KURA_ASSIGN_OR_RETURN(s.owner, scalar<Dtype::kU64>(r[1], kMsg, "owner"));
    KURA_ASSIGN_OR_RETURN(s.timeout_ms, scalar<Dtype::kU64>(r[2], kMsg, "timeout_ms"));
    KURA_ASSIGN_OR_RETURN(s.retries, scalar<Dtype::kU32>(r[3], kMsg, "retries"));
    if (s.retries > kMaxRetries) return bad(kMsg, "retries over " + std::to_string(kMaxRetries));
    KURA_ASSIGN_OR_RETURN(s.inline_result, flag(r[4], kMsg, "inline_result"));
    KURA_ASSIGN_OR_RETURN(s.wait_for_worker, flag(r[5], kMsg, "wait_for_worker"));
    KURA_ASSIGN_OR_RETURN(s.traceparent, text(r[6], kMsg, "traceparent"));
    if (!s.traceparent.empty() && !valid_traceparent(s.traceparent))
      return bad(kMsg, "field \"traceparent\" is not a W3C trace context");
    auto kinds = r[7].array<Dtype::kU8>();
    if (!kinds) return bad(kMsg, "field \"kinds\" is " + r[7].describe());
    const NodeView& args = r[8];
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

std::uint64_t wall_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<std::uint64_t>(ts.tv_sec) * 1000000000u + static_cast<std::uint64_t>(ts.tv_nsec);
}

Result<Bytes> encode_result(Outcome outcome, std::string_view message, std::string_view name,
                            const Value* value, const Timing* timing) noexcept {
  return guard([&]() -> Result<Bytes> {
    const std::uint64_t times[3] = {timing ? timing->started_ns : 0, timing ? timing->returned_ns : 0,
                                    timing ? timing->written_ns : 0};
    return image_of(record({{"outcome", Value::array<Dtype::kU8>({static_cast<std::uint8_t>(outcome)})},
                            {"message", string_of(message)},
                            {"name", string_of(name)},
                            {"value", value != nullptr ? borrow_value(*value) : Value::null()},
                            {"timing", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(
                                           times, timing != nullptr ? 3 : 0))}}));
  });
}

Result<ResultMsg> decode_result(std::shared_ptr<const Bytes> payload) noexcept {
  return guard([&]() -> Result<ResultMsg> {
    constexpr const char* kMsg = "result";
    std::span<const std::byte> bytes(payload->data(), payload->size());
    KURA_ASSIGN_OR_RETURN(
        Record f, Record::open(bytes, payload, kMsg, {"outcome", "message", "name", "value", "timing"}));
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
    auto times = f[4].array<Dtype::kU64>();
    if (!times || (times->size() != 0 && times->size() != 3))
      return bad(kMsg, "field \"timing\" is " + f[4].describe());
    if (times->size() == 3) r.timing = Timing{(*times)[0], (*times)[1], (*times)[2]};
    return r;
  });
}

Result<Bytes> encode_status(const DispatcherStatus& s) noexcept {
  return guard([&]() -> Result<Bytes> {
    const std::uint64_t counters[] = {s.connections,       s.cumulative,   s.awaiting,     s.executing,
                                      s.completed,         s.queued_bytes, s.queued_peak,  s.queued_cap,
                                      s.bytes_in,          s.bytes_out,    s.unroutable,   s.workers_dropped,
                                      s.workers_started,   s.pulls,        s.pulled_bytes, s.pushed_bytes,
                                      s.waiting_on_workers};
    std::vector<std::uint64_t> ids;
    std::vector<std::int64_t> pids;
    std::vector<String> states;
    std::vector<std::uint64_t> done;
    std::vector<Value> fns;
    for (const WorkerStatus& w : s.workers) {
      ids.push_back(w.id);
      pids.push_back(w.pid);
      states.push_back(String{w.state, Encoding::kUtf8, false});
      done.push_back(w.tasks_done);
      std::vector<String> names;
      for (const std::string& f : w.functions) names.push_back(String{f, Encoding::kUtf8, false});
      fns.push_back(Value::strings_of(std::move(names)));
    }
    return image_of(record({{"counters", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(counters))},
                            {"worker_id", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(ids))},
                            {"worker_pid", Value::array<Dtype::kI64>(std::span<const std::int64_t>(pids))},
                            {"worker_state", Value::strings_of(std::move(states))},
                            {"worker_done", Value::array<Dtype::kU64>(std::span<const std::uint64_t>(done))},
                            {"worker_fns", Value::list(std::move(fns))}}));
  });
}

Result<DispatcherStatus> decode_status(std::span<const std::byte> payload) noexcept {
  return guard([&]() -> Result<DispatcherStatus> {
    constexpr const char* kMsg = "status";
    KURA_ASSIGN_OR_RETURN(Record f, Record::open(payload, nullptr, kMsg,
                                                 {"counters", "worker_id", "worker_pid", "worker_state",
                                                  "worker_done", "worker_fns"}));
    auto counters = f[0].array<Dtype::kU64>();
    if (!counters || counters->size() != 17) return bad(kMsg, "counters are " + f[0].describe());
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
    s.unroutable = c[10];
    s.workers_dropped = c[11];
    s.workers_started = c[12];
    s.pulls = c[13];
    s.pulled_bytes = c[14];
    s.pushed_bytes = c[15];
    s.waiting_on_workers = c[16];
    auto ids = f[1].array<Dtype::kU64>();
    auto pids = f[2].array<Dtype::kI64>();
    auto done = f[4].array<Dtype::kU64>();
    const NodeView& states = f[3];
    const NodeView& fns = f[5];
    if (!ids || !pids || !done || states.kind() != Kind::kStrings || fns.kind() != Kind::kList ||
        states.length() != pids->size() || done->size() != pids->size() || ids->size() != pids->size() ||
        fns.length() != pids->size())
      return bad(kMsg, "worker rows of different lengths or types");
    for (std::size_t i = 0; i < pids->size(); ++i) {
      auto st = states.string(i);
      if (!st || st->na) return bad(kMsg, "a worker state is not a string");
      WorkerStatus w{(*ids)[i], (*pids)[i], std::string(st->bytes), (*done)[i], {}};
      auto names = fns.child(i);
      if (!names || names->kind() != Kind::kStrings) return bad(kMsg, "a worker's functions are not strings");
      for (std::uint64_t k = 0; k < names->length(); ++k) {
        auto n = names->string(k);
        if (!n || n->na) return bad(kMsg, "a worker's function name is not a string");
        w.functions.emplace_back(n->bytes);
      }
      s.workers.push_back(std::move(w));
    }
    return s;
  });
}

}  // namespace kura::ipc::detail

namespace kura::ipc {

namespace {

// Whether s[from, from + n) is lowercase hex, and not all '0' when
// `nonzero`.
bool hex_field(std::string_view s, std::size_t from, std::size_t n, bool nonzero) {
  bool any = false;
  for (std::size_t i = from; i < from + n; ++i) {
    const char c = s[i];
    if (!((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'))) return false;
    any = any || c != '0';
  }
  return any || !nonzero;
}

}  // namespace

// Here rather than in task.cpp: the frame parsers (and their fuzz target)
// check it.
bool valid_traceparent(std::string_view s) noexcept {
  // 00-<trace id: 32>-<parent id: 16>-<flags: 2>
  return s.size() == 55 && s.substr(0, 3) == "00-" && s[35] == '-' && s[52] == '-' &&
         hex_field(s, 3, 32, true) && hex_field(s, 36, 16, true) && hex_field(s, 53, 2, false);
}

}  // namespace kura::ipc
