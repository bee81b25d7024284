// An R process as a worker of a dispatcher (tasks.hpp). Tasks run on R's
// main thread, inside the .Call that serves; the worker's loop runs on a
// thread of its own (ipc::WorkerOptions::run_on_calling_thread) and keeps
// heartbeats and cancels going while R computes. A cancel arrives as SIGINT,
// which R turns into an interrupt of the running task.
#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <csignal>
#include <optional>
#include <string>
#include <vector>

#include "from_r.hpp"
#include "kura/ipc/worker.hpp"
#include "r_edge.hpp"
#include "tasks.hpp"
#include "to_r.hpp"

// R's flag for an interrupt that has arrived and not been acted on yet
// (exported by libR; declared in R_ext/GraphicsDevice.h).
extern "C" int R_interrupts_pending;

using namespace kura;
using namespace kura::r;

namespace {

// What the tasks of this process share: the handler, and the R objects the
// last result borrows its bytes from (kept until the worker has sent it,
// that is until the next task begins).
struct Serving {
  SEXP handler = R_NilValue;
  bool utf8 = true;
  SEXP held = R_NilValue;
};
Serving g_serving;

void let_go_of_last_result() {
  if (g_serving.held != R_NilValue) R_ReleaseObject(g_serving.held);
  g_serving.held = R_NilValue;
}

// One task's way through R.
struct TaskRun {
  ipc::TaskContext* ctx;
  const std::string* fn;
  std::optional<Value> value;
  std::string error;

  // Converts the arguments (a name is mapped: zero-copy; an inline value is
  // copied), calls the handler, and lays out its value for the worker.
  void run(Keep keep) {
    const auto n = static_cast<R_xlen_t>(ctx->args().size());
    SEXP args = call_r([&]() -> SEXP { return keep.push(Rf_allocVector(VECSXP, n)); });
    for (R_xlen_t i = 0; i < n; ++i) {
      const auto k = static_cast<std::size_t>(i);
      const std::string& name = ctx->arg_name(k);
      SEXP a = nullptr;
      if (!name.empty()) a = value_of_name(name, "argument " + std::to_string(k + 1), keep);
      if (a == nullptr) a = node_to_r_copy(ctx->args()[k], keep);
      SET_VECTOR_ELT(args, i, a);
    }
    SEXP out = call_r([&]() -> SEXP {
      SEXP name = PROTECT(Rf_mkString(fn->c_str()));
      SEXP call = PROTECT(Rf_lang3(g_serving.handler, name, args));
      SEXP r = keep.push(Rf_eval(call, R_GlobalEnv));
      UNPROTECT(2);
      return r;
    });
    if (TYPEOF(out) != VECSXP || XLENGTH(out) < 2 || TYPEOF(VECTOR_ELT(out, 0)) != LGLSXP ||
        XLENGTH(VECTOR_ELT(out, 0)) != 1)
      fail("kura: the task handler returned something other than list(ok, value)");
    if (LOGICAL(VECTOR_ELT(out, 0))[0] == TRUE) {
      value = to_value(VECTOR_ELT(out, 1), keep, g_serving.utf8);
      return;
    }
    SEXP message = VECTOR_ELT(out, 1);
    error = TYPEOF(message) == STRSXP && XLENGTH(message) >= 1 && STRING_ELT(message, 0) != NA_STRING
                ? Rf_translateCharUTF8(STRING_ELT(message, 0))
                : "the task failed";
  }
};

// Runs under R_ToplevelExec: an R error or interrupt that escapes the
// handler ends here (R_ToplevelExec returns FALSE), never in the worker's
// C++ frames.
void run_at_top_level(void* p) {
  auto* t = static_cast<TaskRun*>(p);
  SEXP head = Rf_cons(R_NilValue, R_NilValue);
  R_PreserveObject(head);
  g_serving.held = head;
  entry([&]() -> SEXP {
    try {
      t->run(Keep(head));
    } catch (const Error& e) {
      t->error = e.what();
    } catch (const std::bad_alloc&) {
      t->error = "kura: out of memory";
    }
    return R_NilValue;
  });
}

// The last R error's message, without R's "Error: " or "Error in <call> : "
// prefix and the trailing newline.
std::string r_error_message() {
  std::string m = R_curErrorBuf();
  if (m.rfind("Error", 0) == 0) {
    const auto colon = m.find(": ");
    if (colon != std::string::npos) m.erase(0, colon + 2);
  }
  while (!m.empty() && (m.back() == '\n' || m.back() == ' ')) m.pop_back();
  return m;
}

ipc::Function r_function(std::string fn) {
  return [fn](ipc::TaskContext& ctx) -> Result<ipc::Output> {
    let_go_of_last_result();
    R_interrupts_pending = 0;  // a cancel's signal meant for the task before
    if (ctx.cancelled()) return Status(Code::kIo, "cancelled");
    // A closure task names the shared objects inside it as arguments too: on
    // a worker that pulled their bytes, the names inside the closure read
    // the local copies.
    std::vector<std::pair<std::string, std::string>> aliases;
    for (std::size_t i = 0; i < ctx.args().size(); ++i)
      if (ctx.arg_origin(i) != ctx.arg_name(i)) aliases.emplace_back(ctx.arg_origin(i), ctx.arg_name(i));
    set_aliases(std::move(aliases));
    TaskRun t{&ctx, &fn, std::nullopt, {}};
    const bool finished = R_ToplevelExec(run_at_top_level, &t) == TRUE;
    clear_aliases();
    R_interrupts_pending = 0;
    if (!finished) {
      // An R error outside the handler's tryCatch (an argument that does
      // not unserialize, say) left its message in R's error buffer.
      if (t.error.empty() && !ctx.cancelled()) t.error = r_error_message();
      return Status(Code::kIo, t.error.empty() ? "interrupted" : t.error);
    }
    if (!t.error.empty()) return Status(Code::kInvalidArgument, t.error);
    if (!t.value) return Status(Code::kIo, "the task gave no value");
    return ipc::Output(std::move(*t.value));
  };
}

}  // namespace

extern "C" {

SEXP kura_worker_serve(SEXP socket, SEXP names, SEXP handler, SEXP utf8_locale, SEXP secret_file) {
  return entry([&]() -> SEXP {
    if (TYPEOF(socket) != STRSXP || XLENGTH(socket) != 1 || STRING_ELT(socket, 0) == NA_STRING)
      fail("kura: the socket must be a string");
    if (TYPEOF(names) != STRSXP) fail("kura: the function names must be a character vector");
    if (!Rf_isFunction(handler)) fail("kura: the handler must be a function");
    g_serving.handler = handler;  // an argument of this call: protected while it serves
    g_serving.utf8 = TYPEOF(utf8_locale) == LGLSXP && XLENGTH(utf8_locale) == 1 && LOGICAL(utf8_locale)[0];
    for (R_xlen_t i = 0; i < XLENGTH(names); ++i) {
      std::string fn = CHAR(STRING_ELT(names, i));
      if (Status s = ipc::Worker::add(fn, r_function(fn)); !s) fail(s, "cannot add function " + fn);
    }
    ipc::WorkerOptions o;
    o.socket_path = CHAR(STRING_ELT(socket, 0));
    if (TYPEOF(secret_file) == STRSXP && XLENGTH(secret_file) == 1 && STRING_ELT(secret_file, 0) != NA_STRING)
      o.secret_file = CHAR(STRING_ELT(secret_file, 0));
    o.run_on_calling_thread = true;
    o.cancel_signal = SIGINT;
    Status s = ipc::Worker::run(o);
    let_go_of_last_result();
    g_serving.handler = R_NilValue;
    if (!s) fail(s, "the worker stopped");
    return R_NilValue;
  });
}

SEXP kura_claim_slot(SEXP dir, SEXP n) {
  return entry([&]() -> SEXP {
    if (TYPEOF(dir) != STRSXP || XLENGTH(dir) != 1 || STRING_ELT(dir, 0) == NA_STRING)
      fail("kura: the directory must be a string");
    const int slots = Rf_asInteger(n);
    if (slots == NA_INTEGER || slots < 1) fail("kura: the number of slots must be positive");
    const std::string base = CHAR(STRING_ELT(dir, 0));
    for (int k = 1; k <= slots; ++k) {
      const std::string path = base + "/node-" + std::to_string(k);
      const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
      if (fd < 0) fail("kura: cannot open " + path);
      // Held (and the descriptor kept) for the life of the process: the
      // kernel lets go of the lock when the process ends, however it ends.
      if (::flock(fd, LOCK_EX | LOCK_NB) == 0) return Rf_ScalarInteger(k);
      ::close(fd);
    }
    fail("kura: all " + std::to_string(slots) + " node slots are taken");
  });
}

}  // extern "C"
