// OTLP/JSON spans of traced tasks (trace.hpp). The encoding follows
// OpenTelemetry's protobuf JSON mapping: field names in lowerCamelCase, trace
// and span ids as hex strings, 64-bit times as decimal strings, enums as
// numbers.
#include "trace.hpp"

#include <fcntl.h>
#include <sys/random.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <vector>

#include "kura/core/bytes.hpp"

namespace kura::ipc::detail {

namespace {

// `s` as a JSON string literal; bytes that are not UTF-8 (a function's
// message may hold any) become '?'.
void json_string(std::string& out, std::string_view s) {
  if (valid_utf8(s)) {
    out += json_quote(s);
    return;
  }
  std::string ascii(s);
  for (char& c : ascii)
    if (static_cast<unsigned char>(c) >= 0x80) c = '?';
  out += json_quote(ascii);
}

class Attributes {
 public:
  void text(std::string_view key, std::string_view value) {
    open(key);
    out_ += "{\"stringValue\":";
    json_string(out_, value);
    out_ += "}}";
  }
  void number(std::string_view key, std::int64_t value) {
    open(key);
    out_ += "{\"intValue\":\"" + std::to_string(value) + "\"}}";
  }
  std::string done() { return "[" + out_ + "]"; }

 private:
  void open(std::string_view key) {
    if (!out_.empty()) out_ += ',';
    out_ += "{\"key\":";
    json_string(out_, key);
    out_ += ",\"value\":";
  }
  std::string out_;
};

struct Span {
  std::string id = {}, parent = {}, name = {};
  std::uint64_t start = 0, end = 0;
  std::string attributes = "[]";
  bool error = false;
  std::string message = {};
};

void append_span(std::string& out, const std::string& trace_id, const Span& s) {
  out += "{\"traceId\":\"" + trace_id + "\",\"spanId\":\"" + s.id + "\",\"parentSpanId\":\"" + s.parent +
         "\",\"name\":";
  json_string(out, s.name);
  // SPAN_KIND_INTERNAL; STATUS_CODE_OK or STATUS_CODE_ERROR.
  out += ",\"kind\":1,\"startTimeUnixNano\":\"" + std::to_string(s.start) + "\",\"endTimeUnixNano\":\"" +
         std::to_string(std::max(s.start, s.end)) + "\",\"attributes\":" + s.attributes +
         ",\"status\":{\"code\":" + (s.error ? "2" : "1");
  if (s.error && !s.message.empty()) {
    out += ",\"message\":";
    json_string(out, s.message);
  }
  out += "}}";
}

}  // namespace

std::unique_ptr<TaskTrace> start_trace(const std::string& traceparent, const std::string& fn,
                                       std::uint64_t task, std::uint64_t payload_bytes) {
  auto t = std::make_unique<TaskTrace>();
  t->trace_id = traceparent.substr(3, 32);
  t->parent_id = traceparent.substr(36, 16);
  t->fn = fn;
  t->task = task;
  t->payload_bytes = payload_bytes;
  t->submitted_ns = wall_ns();
  return t;
}

Result<std::unique_ptr<Tracer>> Tracer::open(const std::string& path) noexcept {
  try {
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC | O_NOCTTY, 0600);
    if (fd < 0) return Status(Code::kIo, "cannot open the trace file " + path + ": " + std::strerror(errno));
    std::FILE* f = ::fdopen(fd, "a");
    if (f == nullptr) {
      ::close(fd);
      return Status(Code::kIo, "cannot open the trace file " + path + ": " + std::strerror(errno));
    }
    std::uint64_t seed = 0;
    if (::getrandom(&seed, sizeof seed, 0) != static_cast<ssize_t>(sizeof seed)) seed = wall_ns();
    return std::unique_ptr<Tracer>(new Tracer(f, seed | 1));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Tracer::~Tracer() {
  std::fclose(file_);
}

// A span id: 16 hex digits, never all zero (xorshift64*, seeded at random).
std::string Tracer::span_id() {
  state_ ^= state_ >> 12;
  state_ ^= state_ << 25;
  state_ ^= state_ >> 27;
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx",
                static_cast<unsigned long long>(state_ * 2685821657736338717ull | 1));
  return buf;
}

bool Tracer::write(const TaskTrace& t) {
  const bool failed = t.outcome != Outcome::kOk;
  Span task{span_id(), t.parent_id, "kura.task", t.submitted_ns, t.ended_ns};
  Attributes a;
  a.text("kura.function", t.fn);
  a.number("kura.task.id", static_cast<std::int64_t>(t.task));
  a.number("kura.payload.bytes", static_cast<std::int64_t>(t.payload_bytes));
  a.text("kura.outcome", outcome_name(t.outcome));
  a.text("kura.result.kind", t.result_kind);
  a.number("kura.result.bytes", static_cast<std::int64_t>(t.result_bytes));
  a.number("kura.attempts", t.attempts);
  task.attributes = a.done();
  task.error = failed;
  task.message = t.message;

  std::vector<Span> spans;
  spans.push_back(task);
  spans.push_back(
      Span{span_id(), task.id, "kura.queued", t.submitted_ns, t.started_ns ? t.started_ns : t.ended_ns});
  if (t.started_ns != 0) {
    Span run{span_id(), task.id, "kura.run", t.started_ns, t.ended_ns};
    Attributes w;
    w.number("kura.worker.id", static_cast<std::int64_t>(t.worker));
    w.number("kura.worker.pid", t.worker_pid);
    run.attributes = w.done();
    run.error = failed;
    run.message = t.message;
    spans.push_back(run);
    if (t.timing) {
      spans.push_back(Span{span_id(), run.id, "kura.function", t.timing->started_ns, t.timing->returned_ns});
      spans.push_back(
          Span{span_id(), run.id, "kura.result.write", t.timing->returned_ns, t.timing->written_ns});
    }
  }
  std::string line =
      "{\"resourceSpans\":[{\"resource\":{\"attributes\":[{\"key\":\"service.name\",\"value\":{"
      "\"stringValue\":"
      "\"kura-dispatcher\"}},{\"key\":\"process.pid\",\"value\":{\"intValue\":\"" +
      std::to_string(::getpid()) + "\"}}]},\"scopeSpans\":[{\"scope\":{\"name\":\"kura\"},\"spans\":[";
  for (std::size_t i = 0; i < spans.size(); ++i) {
    if (i > 0) line += ',';
    append_span(line, t.trace_id, spans[i]);
  }
  line += "]}]}]}\n";
  return std::fwrite(line.data(), 1, line.size(), file_) == line.size() && std::fflush(file_) == 0;
}

}  // namespace kura::ipc::detail
