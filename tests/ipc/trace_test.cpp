// Task tracing: the traceparent a task carries, the times a worker reports
// for a traced task, and the spans a dispatcher with a trace file writes
// (OTLP/JSON, checked field by field, and nesting as the design says), from
// a pipeline and from the kura tool.
#include <catch2/catch.hpp>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "ipc_util.hpp"
#include "kura/ipc/pipeline.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;
using Json = nlohmann::json;

namespace {

const std::string kTraceId = "4bf92f3577b34da6a3ce929d0e0e4736";
const std::string kParentId = "00f067aa0ba902b7";
const std::string kTraceparent = "00-" + kTraceId + "-" + kParentId + "-01";

std::vector<Json> read_lines(const std::string& path) {
  std::ifstream in(path);
  std::vector<Json> out;
  for (std::string line; std::getline(in, line);) {
    INFO(line);
    REQUIRE_NOTHROW(out.push_back(Json::parse(line)));
  }
  return out;
}

bool hex_of_length(const Json& v, std::size_t n) {
  if (!v.is_string()) return false;
  const std::string s = v.get<std::string>();
  return s.size() == n && s.find_first_not_of("0123456789abcdef") == std::string::npos &&
         s != std::string(n, '0');
}

std::uint64_t nanos(const Json& v) {
  REQUIRE(v.is_string());  // 64-bit integers are decimal strings in OTLP/JSON
  const std::string s = v.get<std::string>();
  REQUIRE(s.find_first_not_of("0123456789") == std::string::npos);
  return std::stoull(s);
}

std::string attribute(const Json& span, const std::string& key) {
  for (const Json& a : span.at("attributes"))
    if (a.at("key") == key) {
      const Json& v = a.at("value");
      return v.contains("stringValue") ? v.at("stringValue").get<std::string>()
                                       : v.at("intValue").get<std::string>();
    }
  return "";
}

// Checks one line as an ExportTraceServiceRequest of one task's spans and
// their nesting; returns its spans by name.
std::multimap<std::string, Json> check_line(const Json& line) {
  REQUIRE(line.at("resourceSpans").size() == 1);
  const Json& rs = line.at("resourceSpans")[0];
  bool service = false;
  for (const Json& a : rs.at("resource").at("attributes"))
    service =
        service || (a.at("key") == "service.name" && a.at("value").at("stringValue") == "kura-dispatcher");
  CHECK(service);
  REQUIRE(rs.at("scopeSpans").size() == 1);
  CHECK(rs.at("scopeSpans")[0].at("scope").at("name") == "kura");
  std::map<std::string, Json> by_id;
  std::multimap<std::string, Json> by_name;
  for (const Json& s : rs.at("scopeSpans")[0].at("spans")) {
    INFO(s.dump());
    CHECK(s.at("traceId") == kTraceId);
    CHECK(hex_of_length(s.at("spanId"), 16));
    CHECK(hex_of_length(s.at("parentSpanId"), 16));
    CHECK(s.at("kind") == 1);
    CHECK(nanos(s.at("startTimeUnixNano")) <= nanos(s.at("endTimeUnixNano")));
    const int code = s.at("status").at("code").get<int>();
    CHECK((code == 1 || code == 2));
    CHECK(by_id.emplace(s.at("spanId").get<std::string>(), s).second);  // ids are unique
    by_name.emplace(s.at("name").get<std::string>(), s);
  }
  // Each span lies within its parent, which is the one the design names.
  const std::map<std::string, std::string> parent_of = {{"kura.queued", "kura.task"},
                                                        {"kura.run", "kura.task"},
                                                        {"kura.function", "kura.run"},
                                                        {"kura.result.write", "kura.run"}};
  for (const auto& [name, s] : by_name) {
    INFO(s.dump());
    if (name == "kura.task") {
      CHECK(s.at("parentSpanId") == kParentId);
      continue;
    }
    REQUIRE(parent_of.count(name) == 1);
    auto p = by_id.find(s.at("parentSpanId").get<std::string>());
    REQUIRE(p != by_id.end());
    CHECK(p->second.at("name") == parent_of.at(name));
    CHECK(nanos(p->second.at("startTimeUnixNano")) <= nanos(s.at("startTimeUnixNano")));
    CHECK(nanos(s.at("endTimeUnixNano")) <= nanos(p->second.at("endTimeUnixNano")));
  }
  CHECK(by_name.count("kura.task") == 1);
  CHECK(by_name.count("kura.queued") == 1);
  return by_name;
}

}  // namespace

TEST_CASE("traceparent: W3C version 00 only, lowercase hex, ids not zero", "[ipc]") {
  CHECK(ipc::valid_traceparent(kTraceparent));
  CHECK(ipc::valid_traceparent("00-" + kTraceId + "-" + kParentId + "-00"));
  CHECK_FALSE(ipc::valid_traceparent(""));
  CHECK_FALSE(ipc::valid_traceparent("01-" + kTraceId + "-" + kParentId + "-01"));
  CHECK_FALSE(ipc::valid_traceparent("00-" + std::string(32, '0') + "-" + kParentId + "-01"));
  CHECK_FALSE(ipc::valid_traceparent("00-" + kTraceId + "-" + std::string(16, '0') + "-01"));
  CHECK_FALSE(ipc::valid_traceparent("00-4BF92F3577B34DA6A3CE929D0E0E4736-" + kParentId + "-01"));
  CHECK_FALSE(ipc::valid_traceparent(kTraceparent + "-x"));
  CHECK_FALSE(ipc::valid_traceparent("00_" + kTraceId + "-" + kParentId + "-01"));

  // Submit refuses a malformed one; the frames carry a good one both ways.
  ipc::TaskOptions o;
  o.traceparent = "00-nothex";
  CHECK(ipc::detail::encode_submit(call("echo"), 1, o).status().code() == Code::kInvalidArgument);
  o.traceparent = kTraceparent;
  auto bytes = ipc::detail::encode_submit(call("echo"), 1, o);
  REQUIRE(bytes.is_ok());
  auto s = ipc::detail::decode_submit(std::make_shared<const Bytes>(std::move(bytes).value()));
  REQUIRE(s.is_ok());
  CHECK(s->traceparent == kTraceparent);
  const ipc::detail::Timing t{10, 20, 30};
  auto r = ipc::detail::encode_result(ipc::Outcome::kOk, "", "", nullptr, &t);
  REQUIRE(r.is_ok());
  auto m = ipc::detail::decode_result(std::make_shared<const Bytes>(std::move(r).value()));
  REQUIRE(m.is_ok());
  REQUIRE(m->timing.has_value());
  CHECK(m->timing->written_ns == 30);
}

TEST_CASE("a traced pipeline writes one line of nested spans per task, and nothing for untraced tasks",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string trace = dir.dir() + "/trace.jsonl";
  EmbeddedDispatcher d(dir, 2, [&](ipc::DispatcherOptions& o) { o.trace_path = trace; });
  auto c = connect(d.socket());
  wait_workers(*c, 2);

  auto untraced = c->wait_for(c->submit(call("echo", {num(1)})).value(), 20s);
  REQUIRE(untraced.has_value());
  REQUIRE(untraced->ok());
  ipc::Pipeline p;
  p.map("standardise", "standardise").map("summary", "summary").reduce("combine", "combine");
  std::vector<ipc::Arg> inputs;
  for (int i = 0; i < 3; ++i) inputs.push_back(ipc::Arg::copy(Value::f64({1.0 * i, 2.0, 3.0, 5.0})));
  ipc::PipelineOptions po;
  po.traceparent = kTraceparent;
  auto r = p.run(*c, inputs, po);
  REQUIRE(r.is_ok());
  INFO((r->failure ? r->failure->message : std::string()));
  REQUIRE_FALSE(r->failure.has_value());
  r->outputs.clear();
  c.reset();
  d.stop();

  const auto lines = read_lines(trace);
  REQUIRE(lines.size() == 7);  // two map tasks per input and the reduce; not the echo
  std::multiset<std::string> functions;
  for (const Json& line : lines) {
    auto spans = check_line(line);
    const Json& task = spans.find("kura.task")->second;
    functions.insert(attribute(task, "kura.function"));
    CHECK(attribute(task, "kura.outcome") == "ok");
    CHECK(attribute(task, "kura.attempts") == "1");
    REQUIRE(spans.count("kura.run") == 1);
    CHECK(attribute(spans.find("kura.run")->second, "kura.worker.pid") != "0");
    CHECK(spans.count("kura.function") == 1);
    CHECK(spans.count("kura.result.write") == 1);
  }
  CHECK(functions == std::multiset<std::string>{"combine", "standardise", "standardise", "standardise",
                                                "summary", "summary", "summary"});
}

TEST_CASE("kura submit --traceparent into kura dispatcher --trace, and a failed task's spans say so",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  const std::string trace = dir.dir() + "/trace.jsonl";
  Process dispatcher({kKura, "dispatcher", "--socket", dir.socket(), "--workers", "1", "--trace", trace});
  REQUIRE(dispatcher.read_line(20s));
  Process ok({kKura, "submit", "--socket", dir.socket(), "--traceparent", kTraceparent, "echo", "7"});
  CHECK(ok.wait(30s) == 0);
  Process failed({kKura, "submit", "--socket", dir.socket(), "--traceparent", kTraceparent, "fail", "boom"});
  CHECK(failed.wait(30s) != 0);
  Process bad({kKura, "submit", "--socket", dir.socket(), "--traceparent", "00-zz", "echo", "7"});
  CHECK(bad.wait(30s) != 0);
  CHECK(bad.err().find("not a W3C trace context") != std::string::npos);
  dispatcher.signal(SIGTERM);
  CHECK(dispatcher.wait(30s) == 0);

  const auto lines = read_lines(trace);
  REQUIRE(lines.size() == 2);
  auto first = check_line(lines[0]);
  CHECK(attribute(first.find("kura.task")->second, "kura.function") == "echo");
  CHECK(first.find("kura.task")->second.at("status").at("code") == 1);
  auto second = check_line(lines[1]);
  const Json& task = second.find("kura.task")->second;
  CHECK(attribute(task, "kura.outcome") == "error");
  CHECK(task.at("status").at("code") == 2);
  CHECK(task.at("status").at("message").get<std::string>().find("boom") != std::string::npos);
}
