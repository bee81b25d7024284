# Tasks: background R worker processes that run R functions on shared data.
# The session runs kura's dispatcher on a thread of its own (or connects to
# one); workers are R processes serving tasks (serve()). A task travels as a
# few hundred bytes: shared objects (and arguments large enough to be shared
# automatically) go as their names, and a large result comes back as a
# region the session maps.

.kura <- new.env(parent = emptyenv())

utf8_locale <- function() isTRUE(l10n_info()[["UTF-8"]])

# The function R workers run for task(), everywhere() and task_map(): its one
# argument is the task's spec, serialized.
kR <- "kura.r"

# Separates an error's message from the call it came from, in the message a
# worker sends.
kCallMark <- "\n  in call: "

# --- Workers -------------------------------------------------------------------

workers <- function(n = NULL, memory = NULL, socket = NULL, seed = NULL, sync = FALSE,
                    functions = list(), window = 1L) {
  if (is.null(n) && is.null(socket) && !isTRUE(sync)) {
    return(if (is.null(.kura$mode)) 0L else .kura$n)
  }
  stop_workers()
  if (!is.null(seed)) .kura$seed_state <- seed_stream(seed)
  if (isTRUE(sync)) {
    .kura$mode <- "sync"
    .kura$n <- 0L
    .kura$functions <- check_functions(functions)
    return(invisible(0L))
  }
  if (!is.null(socket)) {
    if (!is.character(socket) || length(socket) != 1L || is.na(socket)) stop("`socket` must be a path")
    .kura$client <- .Call(C_kura_client_connect, socket)
    .kura$mode <- "connected"
    .kura$n <- NA_integer_
    return(invisible(NA_integer_))
  }
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 0 || n != floor(n)) {
    stop("`n` must be a whole number of workers")
  }
  n <- as.integer(n)
  if (n == 0L) return(invisible(0L))
  cap <- if (is.null(memory)) 0 else memory
  if (!is.numeric(cap) || length(cap) != 1L || is.na(cap) || cap < 0) {
    stop("`memory` must be a number of bytes")
  }
  if (!is.numeric(window) || length(window) != 1L || is.na(window) || window < 1 ||
    window > 1024 || window != floor(window)) {
    stop("`window` must be a whole number of tasks from 1 to 1024")
  }
  functions <- check_functions(functions)
  dir <- tempfile("kura-")
  dir.create(dir, mode = "0700")
  fn_file <- ""
  if (length(functions)) {
    fn_file <- file.path(dir, "functions.rds")
    saveRDS(functions, fn_file)
    Sys.chmod(fn_file, "0600")
  }
  socket <- file.path(dir, "dispatcher.sock")
  command <- c(file.path(R.home("bin"), "Rscript"), "-e", "kura:::serve_managed()", "{socket}", fn_file)
  started <- tryCatch(
    {
      .kura$dispatcher <- .Call(C_kura_dispatcher_start, socket, n, cap, command, as.integer(window))
      .kura$client <- .Call(C_kura_client_connect, socket)
      TRUE
    },
    error = function(e) e
  )
  .kura$dir <- dir
  if (!isTRUE(started)) {
    stop_workers()
    stop(started)
  }
  .kura$mode <- "local"
  .kura$n <- n
  invisible(n)
}

check_functions <- function(functions) {
  if (!is.list(functions) || (length(functions) && (is.null(names(functions)) ||
    any(!nzchar(names(functions))) || !all(vapply(functions, is.function, TRUE))))) {
    stop("`functions` must be a named list of functions")
  }
  if (kR %in% names(functions)) stop("\"", kR, "\" is kura's own function name")
  functions
}

stop_workers <- function() {
  if (!is.null(.kura$client)) .Call(C_kura_client_close, .kura$client)
  if (!is.null(.kura$dispatcher)) .Call(C_kura_dispatcher_stop, .kura$dispatcher)
  if (!is.null(.kura$dir)) unlink(.kura$dir, recursive = TRUE)
  vars <- c("client", "dispatcher", "dir", "mode", "n", "seed_state", "functions", "setup_keep", "share_cache")
  for (v in vars) {
    if (exists(v, envir = .kura, inherits = FALSE)) rm(list = v, envir = .kura)
  }
  invisible()
}

client <- function() {
  if (is.null(.kura$client)) stop("no workers: set them up with workers(n) first")
  .kura$client
}

# Bytes the session's client sent and received through its socket (for
# tests and benchmarks: what crossed besides names).
client_bytes <- function() {
  b <- .Call(C_kura_client_bytes, client())
  c(sent = b[[1]], received = b[[2]])
}

# The dispatcher's recent log lines (for diagnosing workers that do not start).
dispatcher_log <- function() {
  if (is.null(.kura$dispatcher)) character() else .Call(C_kura_dispatcher_log, .kura$dispatcher)
}

status <- function() {
  if (identical(.kura$mode, "sync")) {
    return(list(counters = c(connections = 0), workers = data.frame()))
  }
  s <- .Call(C_kura_client_status, client())
  names(s[[2]]) <- c("id", "pid", "state", "tasks_done", "functions")
  list(counters = s[[1]], workers = as.data.frame(s[[2]], stringsAsFactors = FALSE))
}

# --- Seeds ------------------------------------------------------------------------

seed_stream <- function(seed) {
  old <- if (exists(".Random.seed", envir = globalenv(), inherits = FALSE)) {
    get(".Random.seed", envir = globalenv())
  }
  old_kind <- RNGkind()
  on.exit({
    do.call(RNGkind, as.list(old_kind))
    if (is.null(old)) {
      rm(".Random.seed", envir = globalenv())
    } else {
      assign(".Random.seed", old, envir = globalenv())
    }
  })
  RNGkind("L'Ecuyer-CMRG")
  set.seed(seed)
  get(".Random.seed", envir = globalenv())
}

# The next task's stream (NULL without a seed).
next_seed <- function() {
  s <- .kura$seed_state
  if (is.null(s)) return(NULL)
  .kura$seed_state <- parallel::nextRNGStream(s)
  s
}

# --- Arguments ---------------------------------------------------------------------

share_above <- function() {
  v <- getOption("kura.share_above", 65536)
  if (!is.numeric(v) || length(v) != 1L || is.na(v)) 65536 else v
}

# The most bytes of automatically shared arguments kept for the next tasks.
share_cache_bytes <- function() {
  v <- getOption("kura.share_cache", 2^31)
  if (!is.numeric(v) || length(v) != 1L || is.na(v)) 2^31 else v
}

# `x` as it travels: a shared object as itself (it serializes as its name),
# one larger than the threshold shared, anything else as it is. Whoever
# sends a task keeps its shared arguments alive until it has ended (the
# worker maps them by name). An argument is shared once: the shared versions
# are kept, by what they hold (kura_content_key), for the tasks that follow,
# up to kura.share_cache bytes (the least recently used go first).
prepare_arg <- function(x) {
  if (is.null(x) || is_shared(x) || is.function(x) || is.environment(x)) return(x)
  if (is.atomic(x) && as.double(length(x)) * 8 <= share_above()) return(x)
  if (!is.atomic(x) && !is.list(x)) return(x)
  size <- as.double(utils::object.size(x))
  if (size <= share_above()) return(x)
  key <- .Call(C_kura_content_key, x)
  if (is.null(key)) return(share(x))
  cache <- .kura$share_cache
  if (is.null(cache)) cache <- .kura$share_cache <- new.env(parent = emptyenv())
  hit <- cache[[key]]
  if (!is.null(hit)) {
    hit$used <- Sys.time()
    return(hit$shared)
  }
  shared <- share(x)
  if (size <= share_cache_bytes()) {
    keys <- ls(cache, all.names = TRUE)
    total <- sum(vapply(keys, function(k) cache[[k]]$size, 0))
    while (length(keys) && total + size > share_cache_bytes()) {
      oldest <- keys[[which.min(vapply(keys, function(k) as.double(cache[[k]]$used), 0))]]
      total <- total - cache[[oldest]]$size
      rm(list = oldest, envir = cache)
      keys <- setdiff(keys, oldest)
    }
    entry <- new.env(parent = emptyenv())
    entry$shared <- shared
    entry$size <- size
    entry$used <- Sys.time()
    assign(key, entry, envir = cache)
  }
  shared
}

# A named function's argument, prepared: a name when shared, else the value.
named_arg <- function(x) {
  name <- shared_name(x)
  if (is.null(name)) x else structure(name, class = "kura_name")
}

spec_bytes <- function(spec) {
  structure(serialize(spec, NULL, version = 3), kura_tag = "rds3")
}

# The arguments of the task kR runs `spec`: its serialization, then the
# names of the shared objects inside it (in its arguments or a closure's
# environment), so that the dispatcher serves their bytes to a worker on
# another host, which reads them from its copies (run_spec is given only the
# first).
spec_args <- function(spec) {
  .Call(C_kura_collect_names, TRUE)
  on.exit(.Call(C_kura_collect_names, FALSE))
  bytes <- spec_bytes(spec)
  names <- .Call(C_kura_collect_names, FALSE)
  c(list(bytes), lapply(names, function(n) structure(n, class = "kura_name")))
}

# --- Tasks ------------------------------------------------------------------------

task <- function(.f, ..., .args = list(), .timeout = NULL, .retries = 0L) {
  submit(.f, list(...), .args, .timeout, .retries, try_only = FALSE)
}

try_task <- function(.f, ..., .args = list(), .timeout = NULL, .retries = 0L) {
  submit(.f, list(...), .args, .timeout, .retries, try_only = TRUE)
}

new_task <- function(id, keep = NULL) {
  t <- new.env(parent = emptyenv())
  t$id <- id
  t$done <- FALSE
  t$value <- NULL
  t$client <- .kura$client
  t$keep <- keep  # the arguments, shared ones among them, until the task ends
  class(t) <- "kura_task"
  t
}

submit <- function(.f, dots, .args, .timeout, .retries, try_only) {
  if (!is.list(.args)) stop("`.args` must be a list")
  args <- c(dots, .args)
  timeout <- if (is.null(.timeout)) 0 else .timeout
  if (!is.numeric(timeout) || length(timeout) != 1L || is.na(timeout) || timeout < 0) {
    stop("`.timeout` must be a number of milliseconds")
  }
  if (identical(.kura$mode, "sync")) return(run_sync(.f, args))
  args <- lapply(args, prepare_arg)
  if (is.character(.f)) {
    if (length(.f) != 1L || is.na(.f)) stop("`.f` must be one function name")
    id <- .Call(
      C_kura_task_submit, client(), .f, lapply(args, named_arg), timeout, .retries, FALSE,
      try_only, utf8_locale()
    )
  } else {
    spec <- make_spec(.f, args)
    id <- .Call(
      C_kura_task_submit, client(), kR, spec_args(spec), timeout, .retries, TRUE,
      try_only, utf8_locale()
    )
  }
  if (is.null(id)) NULL else new_task(id, args)
}

# The spec of an R task; `args` prepared.
make_spec <- function(.f, args) {
  if (is.function(.f)) {
    # Source references (the function's and those of functions defined in
    # its body) are for the session's own debugging; they hold the whole
    # source file, which would travel with every task.
    f <- if (is.primitive(.f)) .f else utils::removeSource(.f)
    list(kind = "call", f = f, args = args, seed = next_seed())
  } else if (is.language(.f)) {
    if (length(args) && (is.null(names(args)) || any(!nzchar(names(args))))) {
      stop("the arguments of an expression task must be named (they are its variables)")
    }
    list(kind = "eval", expr = .f, args = args, seed = next_seed())
  } else {
    stop("`.f` must be a function, a quoted expression or the name of a workers' function")
  }
}

# A worker's error message back into its message and call.
error_value <- function(outcome, message) {
  parts <- strsplit(message, kCallMark, fixed = TRUE)[[1]]
  structure(
    list(
      message = if (length(parts)) parts[[1]] else "",
      call = if (length(parts) > 1L) parts[[2]] else NULL,
      outcome = outcome
    ),
    class = "kura_error_value"
  )
}

is_error_value <- function(x) inherits(x, "kura_error_value")

settle <- function(t, r) {
  t$done <- TRUE
  t$value <- if (identical(r[[2]], "ok")) r[[4]] else error_value(r[[2]], r[[3]])
  t$client <- NULL
  t$keep <- NULL
  invisible(t)
}

# Waits up to `timeout_ms` (negative: without end) for task `t`.
await <- function(t, timeout_ms) {
  if (!t$done) {
    if (is.null(t$client)) stop("the task belongs to workers that were stopped")
    r <- .Call(C_kura_task_wait, t$client, t$id, timeout_ms)
    if (!is.null(r)) settle(t, r)
  }
  t$done
}

`[.kura_task` <- function(x, ...) {
  await(x, -1)
  x$value
}

unresolved <- function(x) {
  if (inherits(x, "kura_task")) return(!await(x, 0))
  if (is.list(x)) return(any(vapply(x, unresolved, TRUE)))
  FALSE
}

race <- function(tasks) {
  if (inherits(tasks, "kura_task")) tasks <- list(tasks)
  if (!length(tasks) || !all(vapply(tasks, inherits, TRUE, "kura_task"))) {
    stop("`tasks` must be a list of tasks")
  }
  for (t in tasks) if (t$done) return(t)
  live <- Filter(function(t) !is.null(t$client), tasks)
  if (!length(live)) stop("the tasks belong to workers that were stopped")
  ids <- vapply(live, function(t) t$id, 0)
  r <- .Call(C_kura_task_wait, live[[1]]$client, ids, -1)
  t <- live[[match(r[[1]], ids)]]
  settle(t, r)
  t
}

cancel <- function(x) {
  if (is.list(x) && !inherits(x, "kura_task")) {
    for (t in x) cancel(t)
    return(invisible())
  }
  if (!inherits(x, "kura_task")) stop("`x` must be a task or a list of tasks")
  if (!x$done && !is.null(x$client)) .Call(C_kura_task_cancel, x$client, x$id)
  invisible()
}

print.kura_task <- function(x, ...) {
  cat("< kura task", format(x$id), if (x$done) "(ended) >" else "(unresolved) >", "\n")
  invisible(x)
}

print.kura_error_value <- function(x, ...) {
  cat("< kura error value: ", x$outcome, " >\n", x$message, "\n", sep = "")
  if (!is.null(x$call)) cat("in call: ", x$call, "\n", sep = "")
  invisible(x)
}

# --- Set-up calls ------------------------------------------------------------------

everywhere <- function(expr, .args = list()) {
  if (!is.list(.args) || (length(.args) && (is.null(names(.args)) || any(!nzchar(names(.args)))))) {
    stop("`.args` must be a named list")
  }
  spec <- list(kind = "setup", expr = substitute(expr), args = lapply(.args, prepare_arg))
  if (identical(.kura$mode, "sync")) {
    run_spec(spec)
    return(invisible())
  }
  # Kept while the workers are: the dispatcher replays the call to every
  # worker that joins later, which maps the shared arguments then.
  .kura$setup_keep <- c(.kura$setup_keep, list(spec$args))
  err <- .Call(C_kura_client_everywhere, client(), kR, list(spec_bytes(spec)), utf8_locale())
  if (!is.null(err)) stop("everywhere(): ", err, call. = FALSE)
  invisible()
}

# --- The worker's side --------------------------------------------------------------

# Runs one spec in this process; the value, or an error raised as usual.
run_spec <- function(spec) {
  if (!is.null(spec$seed)) {
    RNGkind("L'Ecuyer-CMRG")
    assign(".Random.seed", spec$seed, envir = globalenv())
  }
  switch(spec$kind,
    call = {
      # Called through symbols, so that an error's call reads f(.x1, .x2), not
      # the deparsed data.
      env <- new.env(parent = globalenv())
      assign("f", spec$f, envir = env)
      n <- length(spec$args)
      syms <- lapply(seq_len(n), function(i) as.name(paste0(".x", i)))
      for (i in seq_len(n)) assign(paste0(".x", i), spec$args[[i]], envir = env)
      names(syms) <- names(spec$args)
      eval(as.call(c(list(as.name("f")), syms)), env)
    },
    eval = eval(spec$expr, envir = list2env(spec$args, parent = globalenv())),
    setup = {
      for (v in names(spec$args)) assign(v, spec$args[[v]], envir = globalenv())
      eval(spec$expr, envir = globalenv())
      NULL
    },
    stop("unknown kind of task: ", spec$kind)
  )
}

error_text <- function(e) {
  call <- conditionCall(e)
  text <- conditionMessage(e)
  if (!is.null(call)) text <- paste0(text, kCallMark, paste(deparse(call, nlines = 1L), collapse = ""))
  text
}

task_handler <- function(functions) {
  function(fn, args) {
    tryCatch(
      list(TRUE, if (identical(fn, kR)) run_spec(args[[1]]) else do.call(functions[[fn]], args)),
      error = function(e) list(FALSE, error_text(e)),
      interrupt = function(e) list(FALSE, "interrupted")
    )
  }
}

serve <- function(socket, functions = list(), secret_file = NULL) {
  functions <- check_functions(functions)
  # A task's error goes back to its client; printed here too it would only
  # clutter the worker's standard error (the session's, for workers()).
  old <- options(show.error.messages = FALSE)
  on.exit(options(old))
  if (!is.null(secret_file)) secret_file <- path.expand(as.character(secret_file))
  .Call(C_kura_worker_serve, socket, c(kR, names(functions)), task_handler(functions), utf8_locale(),
        secret_file)
  invisible()
}

# A worker that workers() or make_cluster() starts has kura attached, as the
# session has, so that tasks call share() and friends without kura::.
attach_kura <- function() {
  if (!("package:kura" %in% search())) attachNamespace("kura")
  invisible()
}

# The command line of a worker that workers() starts: its socket and the file
# of its named functions ("" for none).
serve_managed <- function() {
  attach_kura()
  args <- commandArgs(trailingOnly = TRUE)
  functions <- if (length(args) >= 2L && nzchar(args[[2]])) readRDS(args[[2]]) else list()
  serve(args[[1]], functions)
}

# Sync mode: the task runs now, in this session.
run_sync <- function(.f, args) {
  t <- new_task(0)
  value <- tryCatch(
    if (is.character(.f)) {
      f <- .kura$functions[[.f]]
      if (is.null(f)) stop("no function \"", .f, "\" (sync mode has the functions given to workers())")
      do.call(f, args)
    } else {
      run_spec(make_spec(.f, lapply(args, prepare_arg)))
    },
    error = function(e) error_value("error", error_text(e))
  )
  t$done <- TRUE
  t$value <- value
  t
}
