// The dispatcher subcommands of the kura tool: dispatcher, worker, secret,
// status and submit (DESIGN.md section 5).
#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <iomanip>
#include <iostream>
#include <sstream>

#include "commands.hpp"
#include "kura/core/name.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "kura/ipc/secret.hpp"
#include "kura/ipc/worker.hpp"
#include "print.hpp"
#include "typed_json.hpp"

namespace kura::tool {

namespace {

// An argument of `kura submit`: a kura name, or an inline scalar.
Result<ipc::Arg> parse_arg(const std::string& text) {
  if (text.rfind("/kura_", 0) == 0) {
    auto n = parse_name(text);
    if (!n) return n.status();
    return ipc::Arg::ref(text);
  }
  if (text == "true" || text == "false" || text == "NA")
    return ipc::Arg::copy(Value::array<Dtype::kLgl>({text == "NA" ? kNaInt : text == "true" ? 1 : 0}));
  if (!text.empty()) {
    char* end = nullptr;
    errno = 0;
    const double x = std::strtod(text.c_str(), &end);
    if (end == text.c_str() + text.size() && errno == 0) return ipc::Arg::copy(Value::f64({x}));
  }
  return ipc::Arg::copy(Value::strings_utf8({text}));
}

}  // namespace

int cmd_dispatcher(const DispatcherArgs& a) {
  ipc::DispatcherOptions o;
  o.socket_path = a.socket;
  o.workers = a.workers;
  o.memory = a.memory;
  if (a.frame_limit > 0) o.frame_limit = a.frame_limit;
  if (a.heartbeat_timeout_ms > 0) {
    o.heartbeat_timeout_ms = a.heartbeat_timeout_ms;
    o.heartbeat_ms = std::min(o.heartbeat_ms, std::max(1u, a.heartbeat_timeout_ms / 4));
  }
  if (a.hello_timeout_ms > 0) o.hello_timeout_ms = a.hello_timeout_ms;
  if (a.cancel_grace_ms > 0) o.cancel_grace_ms = a.cancel_grace_ms;
  o.trace_path = a.trace_path;
  o.max_connections = a.max_connections;
  o.worker_window = a.worker_window;
  std::istringstream words(a.worker_command);
  for (std::string w; words >> w;) o.worker_command.push_back(w);
  o.tcp_listen = a.tcp_listen;
  o.secret_file = a.secret_file;
  Status s = ipc::Dispatcher::run(
      std::move(o), [](const std::string& socket) { std::cout << "listening on " << socket << std::endl; });
  if (!s) return fail(s, "dispatcher");
  return kExitOk;
}

int cmd_worker(const WorkerArgs& a) {
  ipc::WorkerOptions o;
  o.socket_path = a.socket;
  o.secret_file = a.secret_file;
  o.fingerprint = a.fingerprint;
  o.tls = a.tls;
  o.plugins = a.plugins;
  if (a.reconnect_for_s >= 0) o.reconnect_ms = static_cast<std::uint32_t>(a.reconnect_for_s * 1000);
  Status s = ipc::Worker::run(o);
  if (!s) return fail(s, "worker");
  return kExitOk;
}

int cmd_secret(const std::string& path) {
  if (Status s = ipc::write_secret_file(path); !s) return fail(s, "secret");
  auto fingerprint = ipc::certificate_fingerprint(ipc::certificate_path(path));
  if (!fingerprint) return fail(fingerprint.status(), "secret");
  std::cout << "secret: " << path << "\ncertificate: " << ipc::certificate_path(path)
            << "\nkey: " << ipc::key_path(path) << "\nfingerprint: " << *fingerprint << std::endl;
  return kExitOk;
}

int cmd_status(const std::string& socket, bool json) {
  auto client = ipc::Client::connect(socket);
  if (!client) return fail(client.status(), "status");
  auto st = (*client)->status();
  if (!st) return fail(st.status(), "status");
  if (json) {
    Json out;
    out["connections"] = st->connections;
    out["cumulative"] = st->cumulative;
    out["awaiting"] = st->awaiting;
    out["executing"] = st->executing;
    out["waiting_on_workers"] = st->waiting_on_workers;
    out["completed"] = st->completed;
    out["unroutable"] = st->unroutable;
    out["workers_dropped"] = st->workers_dropped;
    out["workers_started"] = st->workers_started;
    out["objects"] = {
        {"pulls", st->pulls}, {"pulled_bytes", st->pulled_bytes}, {"pushed_bytes", st->pushed_bytes}};
    out["queued_bytes"] = {{"used", st->queued_bytes}, {"peak", st->queued_peak}, {"cap", st->queued_cap}};
    out["workers"] = Json::array();
    for (const auto& w : st->workers)
      out["workers"].push_back({{"id", w.id},
                                {"pid", w.pid},
                                {"state", w.state},
                                {"tasks_done", w.tasks_done},
                                {"functions", w.functions}});
    std::cout << out.dump(2) << std::endl;
    return kExitOk;
  }
  std::cout << "connections " << st->connections << ", workers ever " << st->cumulative << "\n"
            << "tasks: " << st->awaiting << " awaiting, " << st->executing << " executing, "
            << st->waiting_on_workers << " waiting on workers, " << st->completed << " completed, "
            << st->unroutable << " waiting for a worker with their function\n"
            << "workers: " << st->workers_started << " started, " << st->workers_dropped
            << " dropped for missing heartbeats\n"
            << "objects: " << st->pulls << " pulls by remote workers, " << human_bytes(st->pulled_bytes)
            << " sent to them, " << human_bytes(st->pushed_bytes) << " of results received\n"
            << "queued: " << human_bytes(st->queued_bytes) << " (peak " << human_bytes(st->queued_peak)
            << ", cap " << (st->queued_cap ? human_bytes(st->queued_cap) : std::string("none")) << ")\n"
            << std::left << std::setw(6) << "ID" << std::setw(10) << "PID" << std::setw(8) << "STATE"
            << std::setw(8) << "TASKS"
            << "FUNCTIONS\n";
  for (const auto& w : st->workers) {
    std::string fns;
    for (const auto& f : w.functions) fns += (fns.empty() ? "" : ",") + f;
    std::cout << std::setw(6) << w.id << std::setw(10) << w.pid << std::setw(8) << w.state << std::setw(8)
              << w.tasks_done << fns << '\n';
  }
  std::cout.flush();
  return kExitOk;
}

int cmd_submit(const SubmitArgs& a) {
  ipc::Call call{a.fn, {}};
  for (const std::string& text : a.args) {
    auto arg = parse_arg(text);
    if (!arg) return fail(arg.status(), "submit: argument " + text);
    call.args.push_back(std::move(arg).value());
  }
  auto client = ipc::Client::connect(a.socket);
  if (!client) return fail(client.status(), "submit");
  ipc::TaskOptions options;
  options.timeout = std::chrono::milliseconds(a.timeout_ms);
  options.wait_for_worker = a.wait_for_worker;
  options.traceparent = a.traceparent;
  auto id = (*client)->submit(call, options);
  if (!id) return fail(id.status(), "submit " + a.fn);
  ipc::TaskResult r = (*client)->wait(*id);
  if (!r.ok()) {
    std::cout.flush();
    std::cerr << "kura: submit " << a.fn << ": " << r.describe() << std::endl;
    return kExitError;
  }
  if (a.keep) {
    std::string kept;
    if (auto region = r.take_region()) {
      auto k = region->keep();
      if (!k) return fail(k.status(), "submit --keep");
      kept = *k;
    } else {
      auto v = to_value(r.value());
      if (!v) return fail(v.status(), "submit --keep");
      shm::ShareOptions o;
      o.keep = true;
      auto s = shm::share(*v, o);
      if (!s) return fail(s.status(), "submit --keep");
      kept = s->disown();
    }
    std::cout << kept << std::endl;
    if (!std::cout) {
      (void)shm::remove(kept);
      return fail(Status(Code::kIo, "cannot write the name to standard output; region removed"), "submit");
    }
    return kExitOk;
  }
  Status s =
      a.json ? write_typed_json(r.value(), std::cout) : print_value(r.value(), std::cout, PrintOptions{});
  if (a.json && s) std::cout << '\n';
  std::cout.flush();
  if (!s) return fail(s, "submit " + a.fn);
  return kExitOk;
}

}  // namespace kura::tool
