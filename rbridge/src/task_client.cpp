// The session's side of R tasks: a dispatcher on a thread of the session and
// a client of it (tasks.hpp).
#define XXH_STATIC_LINKING_ONLY  // XXH3_state_t on the stack
#include <xxhash.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <deque>
#include <memory>
#include <mutex>
#include <string>
#include <vector>

#include "from_r.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/dispatcher.hpp"
#include "r_edge.hpp"
#include "regions.hpp"
#include "tasks.hpp"
#include "to_r.hpp"
#include "tracking.hpp"

using namespace kura;
using namespace kura::r;

namespace {

// The last lines a dispatcher logged: its thread writes, R reads.
struct LogRing {
  static constexpr std::size_t kLines = 200;
  std::mutex mu;
  std::deque<std::string> lines;
  void add(const std::string& line) {
    std::lock_guard<std::mutex> lock(mu);
    if (lines.size() == kLines) lines.pop_front();
    lines.push_back(line);
  }
};

struct SessionDispatcher {
  std::shared_ptr<LogRing> log = std::make_shared<LogRing>();
  std::unique_ptr<ipc::Dispatcher> dispatcher;
};

SEXP dispatcher_tag() {
  static SEXP tag = Rf_install("kura_dispatcher");
  return tag;
}
SEXP client_tag() {
  static SEXP tag = Rf_install("kura_client");
  return tag;
}

void finalize_dispatcher(SEXP xp) {
  delete static_cast<SessionDispatcher*>(R_ExternalPtrAddr(xp));
  R_ClearExternalPtr(xp);
}
void finalize_client(SEXP xp) {
  delete static_cast<ipc::Client*>(R_ExternalPtrAddr(xp));
  R_ClearExternalPtr(xp);
}

template <class T>
T& from_pointer(SEXP xp, SEXP tag, const char* what) {
  if (TYPEOF(xp) != EXTPTRSXP || R_ExternalPtrTag(xp) != tag) fail(std::string("kura: not a ") + what);
  auto* p = static_cast<T*>(R_ExternalPtrAddr(xp));
  if (p == nullptr) fail(std::string("kura: the ") + what + " was closed");
  return *p;
}

ipc::Client& client_of(SEXP xp) {
  return from_pointer<ipc::Client>(xp, client_tag(), "client of a dispatcher");
}

std::string string_arg(SEXP x, const char* what) {
  if (TYPEOF(x) != STRSXP || XLENGTH(x) != 1 || STRING_ELT(x, 0) == NA_STRING)
    fail(std::string("kura: ") + what + " must be a string");
  return CHAR(STRING_ELT(x, 0));
}

double number_arg(SEXP x, const char* what) {
  if ((TYPEOF(x) != REALSXP && TYPEOF(x) != INTSXP) || XLENGTH(x) != 1)
    fail(std::string("kura: ") + what + " must be a number");
  const double v = Rf_asReal(x);
  if (ISNAN(v)) fail(std::string("kura: ") + what + " must not be NA");
  return v;
}

// A task id as R holds it (a double): a whole number from 1 to 2^53.
ipc::TaskId task_id(double v) {
  if (!(v >= 1 && v <= 9007199254740992.0) || v != static_cast<double>(static_cast<std::uint64_t>(v)))
    fail("kura: not a task id");
  return static_cast<ipc::TaskId>(v);
}

bool flag_arg(SEXP x) {
  return TYPEOF(x) == LGLSXP && XLENGTH(x) == 1 && LOGICAL(x)[0] == TRUE;
}

ipc::Call make_call(SEXP fn, SEXP args, Keep keep, bool utf8) {
  ipc::Call call;
  call.fn = string_arg(fn, "the function's name");
  if (TYPEOF(args) != VECSXP) fail("kura: a task's arguments must be a list");
  for (R_xlen_t i = 0; i < XLENGTH(args); ++i) {
    SEXP a = VECTOR_ELT(args, i);
    if (Rf_inherits(a, "kura_name")) {
      call.args.push_back(ipc::Arg::ref(string_arg(a, "a name argument")));
    } else {
      call.args.push_back(ipc::Arg::copy(to_value(a, keep, utf8)));
    }
  }
  return call;
}

// The R form of a task's result: list(id, outcome, message, value).
SEXP result_to_r(ipc::TaskId id, ipc::TaskResult& r, Keep keep) {
  SEXP value = R_NilValue;
  if (r.ok()) {
    if (auto region = r.take_region()) {
      auto mapped = region->map();
      if (!mapped) fail(mapped.status(), "cannot map the result region " + region->name());
      std::shared_ptr<RegionCore> core = adopt_published(std::move(*region), std::move(mapped).value());
      value = node_to_r(core, core->mapped.node(), Where{core->name, {}}, keep);
    } else {
      value = node_to_r_copy(r.value(), keep);
    }
  }
  const std::string outcome(ipc::outcome_name(r.outcome()));
  const std::string& message = r.message();
  return call_r([&]() -> SEXP {
    SEXP out = PROTECT(Rf_allocVector(VECSXP, 4));
    SET_VECTOR_ELT(out, 0, Rf_ScalarReal(static_cast<double>(id)));
    SET_VECTOR_ELT(out, 1, Rf_mkString(outcome.c_str()));
    SEXP text = PROTECT(Rf_mkCharLenCE(message.data(), static_cast<int>(message.size()), CE_UTF8));
    SET_VECTOR_ELT(out, 2, Rf_ScalarString(text));
    UNPROTECT(1);
    SET_VECTOR_ELT(out, 3, value);
    UNPROTECT(1);
    return out;
  });
}

// Feeds what `x` is (type, length, elements, attributes, to any depth) to
// `st`; false for an object with parts other than vectors and lists.
bool feed_content(XXH3_state_t* st, SEXP x, int depth) {
  if (depth > 256) return false;
  const int type = TYPEOF(x);
  const std::int64_t head[3] = {type, type == NILSXP ? 0 : static_cast<std::int64_t>(XLENGTH(x)), OBJECT(x)};
  XXH3_128bits_update(st, head, sizeof head);
  std::size_t width = 0;
  switch (type) {
    case NILSXP: return true;
    case LGLSXP:
    case INTSXP: width = sizeof(int); break;
    case REALSXP: width = sizeof(double); break;
    case CPLXSXP: width = sizeof(Rcomplex); break;
    case RAWSXP: width = 1; break;
    case STRSXP:
      for (R_xlen_t i = 0; i < XLENGTH(x); ++i) {
        SEXP c = STRING_ELT(x, i);
        const std::int64_t tag[2] = {c == NA_STRING ? -1 : LENGTH(c), c == NA_STRING ? 0 : Rf_getCharCE(c)};
        XXH3_128bits_update(st, tag, sizeof tag);
        if (c != NA_STRING) XXH3_128bits_update(st, CHAR(c), static_cast<std::size_t>(LENGTH(c)));
      }
      break;
    case VECSXP:
      for (R_xlen_t i = 0; i < XLENGTH(x); ++i)
        if (!feed_content(st, VECTOR_ELT(x, i), depth + 1)) return false;
      break;
    default: return false;
  }
  if (width != 0 && XLENGTH(x) > 0)
    XXH3_128bits_update(st, DATAPTR_RO(x), static_cast<std::size_t>(XLENGTH(x)) * width);
  for (SEXP a = ATTRIB(x); a != R_NilValue; a = CDR(a)) {
    const char* key = CHAR(PRINTNAME(TAG(a)));
    XXH3_128bits_update(st, key, std::strlen(key) + 1);
    if (!feed_content(st, CAR(a), depth + 1)) return false;
  }
  return true;
}

}  // namespace

extern "C" {

SEXP kura_dispatcher_start(SEXP socket, SEXP workers, SEXP memory, SEXP command, SEXP window) {
  return entry([&]() -> SEXP {
    ipc::DispatcherOptions o;
    o.socket_path = string_arg(socket, "the socket");
    const double n = number_arg(workers, "the number of workers");
    if (n < 0 || n > 1024) fail("kura: the number of workers must be in 0..1024");
    o.workers = static_cast<unsigned>(n);
    const double cap = number_arg(memory, "the byte cap");
    if (cap < 0 || cap > 9.0e18) fail("kura: the byte cap must be a number of bytes, 0 for none");
    o.memory = static_cast<std::uint64_t>(cap);
    const double w = number_arg(window, "the worker window");
    if (w < 1 || w > ipc::kMaxWorkerWindow)
      fail("kura: the worker window must be in 1.." + std::to_string(ipc::kMaxWorkerWindow));
    o.worker_window = static_cast<std::uint32_t>(w);
    if (TYPEOF(command) != STRSXP) fail("kura: the worker command must be a character vector");
    for (R_xlen_t i = 0; i < XLENGTH(command); ++i)
      o.worker_command.emplace_back(CHAR(STRING_ELT(command, i)));
    auto holder = std::make_unique<SessionDispatcher>();
    o.log = [log = holder->log](const std::string& line) { log->add(line); };
    auto d = ipc::Dispatcher::start(std::move(o));
    if (!d) fail(d.status(), "cannot start the dispatcher");
    holder->dispatcher = std::move(d).value();
    SessionDispatcher* raw = holder.get();
    SEXP xp = call_r([&]() -> SEXP {
      SEXP p = PROTECT(R_MakeExternalPtr(raw, dispatcher_tag(), R_NilValue));
      R_RegisterCFinalizerEx(p, finalize_dispatcher, TRUE);
      UNPROTECT(1);
      return p;
    });
    (void)holder.release();  // the external pointer owns it now
    return xp;
  });
}

SEXP kura_dispatcher_stop(SEXP dispatcher) {
  return entry([&]() -> SEXP {
    if (TYPEOF(dispatcher) == EXTPTRSXP && R_ExternalPtrTag(dispatcher) == dispatcher_tag())
      finalize_dispatcher(dispatcher);
    return R_NilValue;
  });
}

SEXP kura_dispatcher_log(SEXP dispatcher) {
  return entry([&]() -> SEXP {
    auto& d = from_pointer<SessionDispatcher>(dispatcher, dispatcher_tag(), "dispatcher");
    std::vector<std::string> lines;
    {
      std::lock_guard<std::mutex> lock(d.log->mu);
      lines.assign(d.log->lines.begin(), d.log->lines.end());
    }
    return call_r([&]() -> SEXP { return strings_to_r(lines, CE_UTF8); });
  });
}

SEXP kura_client_connect(SEXP socket) {
  return entry([&]() -> SEXP {
    auto c = ipc::Client::connect(string_arg(socket, "the socket"));
    if (!c) fail(c.status(), "cannot connect to the dispatcher");
    ipc::Client* raw = c->get();
    SEXP xp = call_r([&]() -> SEXP {
      SEXP p = PROTECT(R_MakeExternalPtr(raw, client_tag(), R_NilValue));
      R_RegisterCFinalizerEx(p, finalize_client, TRUE);
      UNPROTECT(1);
      return p;
    });
    (void)c->release();
    return xp;
  });
}

SEXP kura_client_close(SEXP client) {
  return entry([&]() -> SEXP {
    if (TYPEOF(client) == EXTPTRSXP && R_ExternalPtrTag(client) == client_tag()) finalize_client(client);
    return R_NilValue;
  });
}

SEXP kura_task_submit(SEXP client, SEXP fn, SEXP args, SEXP timeout_ms, SEXP retries, SEXP wait_for_worker,
                      SEXP try_only, SEXP utf8_locale) {
  SEXP head = PROTECT(Rf_cons(R_NilValue, R_NilValue));
  SEXP out = entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    ipc::TaskOptions o;
    const double t = number_arg(timeout_ms, "the timeout");
    if (t < 0 || t > 1e12) fail("kura: the timeout must be a number of milliseconds, 0 for none");
    o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(t));
    const double n = number_arg(retries, "the number of retries");
    if (n < 0 || n > ipc::kMaxRetries)
      fail("kura: the number of retries must be in 0.." + std::to_string(ipc::kMaxRetries));
    o.retries = static_cast<unsigned>(n);
    o.wait_for_worker = flag_arg(wait_for_worker);
    double id = 0;
    bool admitted = true;
    {
      ipc::Call call = make_call(fn, args, Keep(head), flag_arg(utf8_locale));
      if (flag_arg(try_only)) {
        auto r = c.try_submit(call, o);
        if (!r) fail(r.status(), "cannot submit the task");
        admitted = r->has_value();
        if (admitted) id = static_cast<double>(**r);
      } else {
        auto r = c.submit(call, o);
        if (!r) fail(r.status(), "cannot submit the task");
        id = static_cast<double>(*r);
      }
    }
    if (!admitted) return R_NilValue;
    return call_r([&]() -> SEXP { return Rf_ScalarReal(id); });
  });
  UNPROTECT(1);
  return out;
}

SEXP kura_task_wait(SEXP client, SEXP ids, SEXP timeout_ms) {
  SEXP head = PROTECT(Rf_cons(R_NilValue, R_NilValue));
  SEXP out = entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    if (TYPEOF(ids) != REALSXP || XLENGTH(ids) == 0) fail("kura: task ids must be a non-empty double vector");
    std::vector<ipc::TaskId> wanted;
    for (R_xlen_t i = 0; i < XLENGTH(ids); ++i) wanted.push_back(task_id(REAL(ids)[i]));
    const double t = number_arg(timeout_ms, "the timeout");
    using Clock = std::chrono::steady_clock;
    const auto deadline =
        Clock::now() + std::chrono::milliseconds(static_cast<std::int64_t>(std::max(t, 0.0)));
    // Waits in slices, so that R sees an interrupt within 100 ms.
    for (;;) {
      auto slice = std::chrono::milliseconds(100);
      if (t >= 0)
        slice =
            std::min(slice, std::chrono::duration_cast<std::chrono::milliseconds>(deadline - Clock::now()));
      slice = std::max(slice, std::chrono::milliseconds(0));
      std::optional<std::pair<ipc::TaskId, ipc::TaskResult>> got;
      if (wanted.size() == 1) {
        if (auto r = c.wait_for(wanted[0], slice)) got.emplace(wanted[0], std::move(*r));
      } else {
        got = c.wait_any_for(wanted, slice);
      }
      if (got) return result_to_r(got->first, got->second, Keep(head));
      if (t >= 0 && Clock::now() >= deadline) return R_NilValue;
      call_r([]() -> SEXP {
        R_CheckUserInterrupt();
        return R_NilValue;
      });
    }
  });
  UNPROTECT(1);
  return out;
}

SEXP kura_task_cancel(SEXP client, SEXP id) {
  return entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    if (Status s = c.cancel(task_id(number_arg(id, "the task id"))); !s) fail(s, "cannot cancel the task");
    return R_NilValue;
  });
}

SEXP kura_client_everywhere(SEXP client, SEXP fn, SEXP args, SEXP utf8_locale) {
  SEXP head = PROTECT(Rf_cons(R_NilValue, R_NilValue));
  SEXP out = entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    std::string error;
    {
      ipc::Call call = make_call(fn, args, Keep(head), flag_arg(utf8_locale));
      if (Status s = c.everywhere(call); !s) error = s.message();
    }
    if (error.empty()) return R_NilValue;
    return call_r([&]() -> SEXP { return Rf_mkString(error.c_str()); });
  });
  UNPROTECT(1);
  return out;
}

SEXP kura_client_status(SEXP client) {
  return entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    auto st = c.status();
    if (!st) fail(st.status(), "cannot read the dispatcher's status");
    const ipc::DispatcherStatus& s = *st;
    const std::vector<std::pair<const char*, std::uint64_t>> counters = {
        {"connections", s.connections},
        {"cumulative", s.cumulative},
        {"awaiting", s.awaiting},
        {"executing", s.executing},
        {"waiting_on_workers", s.waiting_on_workers},
        {"completed", s.completed},
        {"queued_bytes", s.queued_bytes},
        {"queued_peak", s.queued_peak},
        {"queued_cap", s.queued_cap},
        {"unroutable", s.unroutable},
        {"workers_dropped", s.workers_dropped},
        {"workers_started", s.workers_started},
        {"pulls", s.pulls},
        {"pulled_bytes", s.pulled_bytes},
        {"pushed_bytes", s.pushed_bytes}};
    std::vector<std::string> functions;
    for (const auto& w : s.workers) {
      std::string joined;
      for (const auto& f : w.functions) joined += (joined.empty() ? "" : ",") + f;
      functions.push_back(std::move(joined));
    }
    return call_r([&]() -> SEXP {
      SEXP out = PROTECT(Rf_allocVector(VECSXP, 2));
      SEXP numbers = PROTECT(Rf_allocVector(REALSXP, static_cast<R_xlen_t>(counters.size())));
      SEXP names = PROTECT(Rf_allocVector(STRSXP, static_cast<R_xlen_t>(counters.size())));
      for (std::size_t i = 0; i < counters.size(); ++i) {
        REAL(numbers)[i] = static_cast<double>(counters[i].second);
        SET_STRING_ELT(names, static_cast<R_xlen_t>(i), Rf_mkChar(counters[i].first));
      }
      Rf_setAttrib(numbers, R_NamesSymbol, names);
      SET_VECTOR_ELT(out, 0, numbers);
      const auto n = static_cast<R_xlen_t>(s.workers.size());
      SEXP cols = PROTECT(Rf_allocVector(VECSXP, 5));
      SEXP id = Rf_allocVector(REALSXP, n);
      SET_VECTOR_ELT(cols, 0, id);
      SEXP pid = Rf_allocVector(REALSXP, n);
      SET_VECTOR_ELT(cols, 1, pid);
      SEXP state = Rf_allocVector(STRSXP, n);
      SET_VECTOR_ELT(cols, 2, state);
      SEXP done = Rf_allocVector(REALSXP, n);
      SET_VECTOR_ELT(cols, 3, done);
      SEXP fns = Rf_allocVector(STRSXP, n);
      SET_VECTOR_ELT(cols, 4, fns);
      for (R_xlen_t i = 0; i < n; ++i) {
        const auto& w = s.workers[static_cast<std::size_t>(i)];
        REAL(id)[i] = static_cast<double>(w.id);
        REAL(pid)[i] = static_cast<double>(w.pid);
        SET_STRING_ELT(state, i, Rf_mkChar(w.state.c_str()));
        REAL(done)[i] = static_cast<double>(w.tasks_done);
        SET_STRING_ELT(fns, i, Rf_mkCharCE(functions[static_cast<std::size_t>(i)].c_str(), CE_UTF8));
      }
      SET_VECTOR_ELT(out, 1, cols);
      UNPROTECT(4);
      return out;
    });
  });
}

SEXP kura_content_key(SEXP x) {
  return entry([&]() -> SEXP {
    XXH3_state_t st;
    XXH3_128bits_reset(&st);
    if (!feed_content(&st, x, 0)) return R_NilValue;
    const XXH128_hash_t h = XXH3_128bits_digest(&st);
    char hex[33];
    std::snprintf(hex, sizeof hex, "%016llx%016llx", static_cast<unsigned long long>(h.high64),
                  static_cast<unsigned long long>(h.low64));
    return call_r([&]() -> SEXP { return Rf_mkString(hex); });
  });
}

SEXP kura_client_bytes(SEXP client) {
  return entry([&]() -> SEXP {
    ipc::Client& c = client_of(client);
    const double sent = static_cast<double>(c.bytes_sent());
    const double received = static_cast<double>(c.bytes_received());
    return call_r([&]() -> SEXP {
      SEXP out = Rf_allocVector(REALSXP, 2);
      REAL(out)[0] = sent;
      REAL(out)[1] = received;
      return out;
    });
  });
}

}  // extern "C"
