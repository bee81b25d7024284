// A worker plugin for the tests: functions with process-wide state, to see
// that everywhere() reaches every worker, replacements included.
#include <string>

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

}  // namespace

extern "C" void kura_register_functions(kura::ipc::Registry& registry) {
  registry.add("publish_then_sleep", publish_then_sleep);
  registry.add("set_tag", set_tag);
  registry.add("get_tag", get_tag);
}
