// Registration of the package's native routines and ALTREP classes.
#include "altrep.hpp"
#include "api.hpp"
#include "r_api.hpp"
#include "r_edge.hpp"
#include "tasks.hpp"

namespace {

// R's table takes every routine as DL_FUNC; going through void (*)() says
// the cast of the function type is meant.
template <class F>
DL_FUNC routine(F* f) {
  return reinterpret_cast<DL_FUNC>(reinterpret_cast<void (*)()>(f));
}

const R_CallMethodDef kCallMethods[] = {
    {"kura_share", routine(&kura_share), 2},
    {"kura_map_shared", routine(&kura_map_shared), 1},
    {"kura_shared_name", routine(&kura_shared_name), 1},
    {"kura_is_shared", routine(&kura_is_shared), 1},
    {"kura_prune", routine(&kura_prune), 0},
    {"kura_serialize_by_name", routine(&kura_serialize_by_name), 1},
    {"kura_collect_names", routine(&kura_collect_names), 1},
    {"kura_use_bit64", routine(&kura_use_bit64), 1},
    {"kura_session_start", routine(&kura_session_start), 2},
    {"kura_region_directory", routine(&kura_region_directory), 0},
    {"kura_dispatcher_start", routine(&kura_dispatcher_start), 5},
    {"kura_dispatcher_stop", routine(&kura_dispatcher_stop), 1},
    {"kura_dispatcher_log", routine(&kura_dispatcher_log), 1},
    {"kura_client_connect", routine(&kura_client_connect), 1},
    {"kura_client_close", routine(&kura_client_close), 1},
    {"kura_task_submit", routine(&kura_task_submit), 8},
    {"kura_task_wait", routine(&kura_task_wait), 3},
    {"kura_task_cancel", routine(&kura_task_cancel), 2},
    {"kura_client_everywhere", routine(&kura_client_everywhere), 4},
    {"kura_client_status", routine(&kura_client_status), 1},
    {"kura_client_bytes", routine(&kura_client_bytes), 1},
    {"kura_worker_serve", routine(&kura_worker_serve), 5},
    {"kura_claim_slot", routine(&kura_claim_slot), 2},
    {"kura_content_key", routine(&kura_content_key), 1},
    {nullptr, nullptr, 0},
};

}  // namespace

extern "C" attribute_visible void R_init_kura(DllInfo* dll) {
  R_registerRoutines(dll, nullptr, kCallMethods, nullptr, nullptr);
  R_useDynamicSymbols(dll, FALSE);
  R_forceSymbols(dll, TRUE);
  kura::r::detail::init_edge();
  kura::r::register_classes(dll);
}
