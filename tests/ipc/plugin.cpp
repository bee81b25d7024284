// A worker plugin for the tests: functions with process-wide state, to see
// that everywhere() reaches every worker, replacements included.
#include <sys/stat.h>

#include <chrono>
#include <string>
#include <thread>
#include <vector>

#include "kura/ipc/worker.hpp"

namespace {

std::string g_tag;  // NOLINT: the state a set-up call leaves in the worker

kura::Result<kura::ipc::Output> set_tag(kura::ipc::TaskContext& ctx) {
  if (ctx.args().size() != 1) return kura::invalid_argument("set_tag takes one string");
  auto s = ctx.args()[0].string(0);
  if (!s) return s.status();
  g_tag = std::string(s->bytes);
  return kura::ipc::Output(kura::Value::null());
}

kura::Result<kura::ipc::Output> get_tag(kura::ipc::TaskContext&) {
  return kura::ipc::Output(kura::Value::strings_utf8({g_tag}));
}

// Publishes a result region, then sleeps until cancelled (or 30 s), then
// returns the region: a task cancelled after its result was written.
kura::Result<kura::ipc::Output> publish_then_sleep(kura::ipc::TaskContext& ctx) {
  kura::Value layout = kura::Value::array_in_place(kura::Dtype::kF64, 1000);
  auto pending = ctx.result_region(layout);
  if (!pending) return pending.status();
  auto shared = std::move(pending).value().publish();
  if (!shared) return shared.status();
  (void)ctx.sleep_for(std::chrono::seconds(30));
  return kura::ipc::Output(std::move(shared).value());
}

// Holds the client's lease (a result region being written for it) until the
// file named by its argument exists, or 30 s pass, whatever cancellation
// says (a function busy computing), then drops the region unpublished.
kura::Result<kura::ipc::Output> hold_lease_until(kura::ipc::TaskContext& ctx) {
  if (ctx.args().size() != 1) return kura::invalid_argument("hold_lease_until takes one path");
  auto path = ctx.args()[0].string(0);
  if (!path) return path.status();
  kura::Value layout = kura::Value::array_in_place(kura::Dtype::kF64, 1000);
  auto pending = ctx.result_region(layout);
  if (!pending) return pending.status();
  const std::string file(path->bytes);
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(30);
  struct stat st;
  while (::stat(file.c_str(), &st) != 0 && std::chrono::steady_clock::now() < deadline)
    std::this_thread::sleep_for(std::chrono::milliseconds(2));
  return kura::invalid_argument("released");
}

// Returns a region of the worker's own owner instead of one written for the
// client (a plugin's mistake).
kura::Result<kura::ipc::Output> own_region(kura::ipc::TaskContext&) {
  auto shared = kura::shm::share(kura::Value::f64({1, 2, 3}));
  if (!shared) return shared.status();
  return kura::ipc::Output(std::move(shared).value());
}

// For each argument, the name the task gave it and the name it is mapped by
// here (TaskContext::arg_origin and arg_name), as strings.
kura::Result<kura::ipc::Output> arg_names(kura::ipc::TaskContext& ctx) {
  std::vector<kura::String> out;
  for (std::size_t i = 0; i < ctx.args().size(); ++i) {
    out.push_back(kura::String{ctx.arg_origin(i), kura::Encoding::kUtf8, false});
    out.push_back(kura::String{ctx.arg_name(i), kura::Encoding::kUtf8, false});
  }
  return kura::ipc::Output(kura::Value::strings_of(std::move(out)));
}

}  // namespace

extern "C" void kura_register_functions(kura::ipc::Registry& registry) {
  registry.add("publish_then_sleep", publish_then_sleep);
  registry.add("set_tag", set_tag);
  registry.add("get_tag", get_tag);
  registry.add("hold_lease_until", hold_lease_until);
  registry.add("own_region", own_region);
  registry.add("arg_names", arg_names);
}
