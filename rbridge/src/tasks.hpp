// The functions R/tasks.R calls through .Call: a dispatcher on a thread of
// the session, a client of it, and an R process serving as a worker. Each
// is a boundary between R and C++ (r_edge.hpp).
#pragma once

#include "r_api.hpp"

extern "C" {

// Starts a dispatcher on a thread of this session listening at `socket`,
// keeping `workers` processes of `command` (a character vector in which
// "{socket}" is replaced) running, with a cap of `memory` bytes on queued
// payload (0: none), each worker holding up to `window` tasks
// (DispatcherOptions::worker_window). Returns an external pointer; the dispatcher stops when
// it is collected or given to kura_dispatcher_stop.
SEXP kura_dispatcher_start(SEXP socket, SEXP workers, SEXP memory, SEXP command, SEXP window);
SEXP kura_dispatcher_stop(SEXP dispatcher);
// The dispatcher's last log lines (at most 200), oldest first.
SEXP kura_dispatcher_log(SEXP dispatcher);

// Connects a client to the dispatcher at `socket`: an external pointer,
// disconnected when collected or given to kura_client_close.
SEXP kura_client_connect(SEXP socket);
SEXP kura_client_close(SEXP client);

// Submits a call of function `fn` with `args` (a list: an element of class
// kura_name travels as that name, any other is copied inline) and options
// (timeout in ms, retries, wait for a worker that has `fn`). Returns the
// task id (a double); with `try_only`, NULL when the queue has no room.
SEXP kura_task_submit(SEXP client, SEXP fn, SEXP args, SEXP timeout_ms, SEXP retries, SEXP wait_for_worker,
                      SEXP try_only, SEXP utf8_locale);
// Waits up to `timeout_ms` (negative: without end) for the first of task
// `ids` to end. NULL when none did; otherwise list(id, outcome, message,
// value): the value is mapped from its region (owned by this session) or
// copied from the inline image.
SEXP kura_task_wait(SEXP client, SEXP ids, SEXP timeout_ms);
SEXP kura_task_cancel(SEXP client, SEXP id);
// Runs a call on every worker now and later (Client::everywhere); NULL when
// it went well, the error message otherwise.
SEXP kura_client_everywhere(SEXP client, SEXP fn, SEXP args, SEXP utf8_locale);
// The dispatcher's counters (a named double vector) and workers (a list of
// columns).
SEXP kura_client_status(SEXP client);
// Bytes the client sent and received through its socket.
SEXP kura_client_bytes(SEXP client);

// Makes this R process a worker of the dispatcher at `socket` with the
// functions named `names`: each task calls `handler(name, args)` on R's
// main thread, which returns list(TRUE, value) or list(FALSE, message).
// A cancelled task is interrupted (SIGINT). Returns when the dispatcher goes
// away (NULL), or raises the error that kept it from serving.
SEXP kura_worker_serve(SEXP socket, SEXP names, SEXP handler, SEXP utf8_locale, SEXP secret_file);

// A key of what `x` holds (its type, length, elements and attributes, to any
// depth: a 128-bit XXH3 in hex), equal for equal objects; NULL for one with
// parts other than vectors and lists. Shared arguments are cached by it.
SEXP kura_content_key(SEXP x);

// The first of slots 1..n in directory `dir` that no live process holds,
// now held by this one until it ends (a lock on the file node-<k>): which
// node of a cluster a worker is. Errors: all taken, the directory unusable.
SEXP kura_claim_slot(SEXP dir, SEXP n);

}  // extern "C"
