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

}  // namespace

extern "C" void kura_register_functions(kura::ipc::Registry& registry) {
  registry.add("set_tag", set_tag);
  registry.add("get_tag", get_tag);
}
