# make_cluster(): a cluster of package parallel whose nodes are kura
# workers, so parLapply(), clusterExport(), clusterEvalQ() and the rest work,
# and shared objects cross as their names. Each node is a worker process of
# the cluster's own dispatcher that holds node slot k (a lock it keeps while
# it lives) and so has the function kura.node.<k>: a call for node k goes
# to that worker and no other, which keeps what clusterExport() put there.
# A node's worker that dies is replaced, without the state it had.

make_cluster <- function(n) {
  if (!is.numeric(n) || length(n) != 1L || is.na(n) || n < 1 || n != floor(n) || n > 1024) {
    stop("`n` must be a whole number of nodes, 1 to 1024")
  }
  n <- as.integer(n)
  dir <- tempfile("kura-cluster-")
  dir.create(dir, mode = "0700")
  socket <- file.path(dir, "dispatcher.sock")
  command <- c(
    file.path(R.home("bin"), "Rscript"), "-e", "kura:::serve_node()", "{socket}", dir, as.character(n)
  )
  state <- new.env(parent = emptyenv())
  state$dir <- dir
  state$pending <- rep(list(list()), n)
  reg.finalizer(state, stop_cluster_state, onexit = TRUE)
  ok <- tryCatch(
    {
      state$dispatcher <- .Call(C_kura_dispatcher_start, socket, n, 0, command, 1L)
      state$client <- .Call(C_kura_client_connect, socket)
      TRUE
    },
    error = function(e) e
  )
  if (!isTRUE(ok)) {
    stop_cluster_state(state)
    stop(ok)
  }
  nodes <- lapply(seq_len(n), function(k) structure(list(k = k, state = state), class = "kura_node"))
  structure(nodes, class = c("kura_cluster", "cluster"))
}

stop_cluster_state <- function(state) {
  if (!is.null(state$client)) .Call(C_kura_client_close, state$client)
  if (!is.null(state$dispatcher)) .Call(C_kura_dispatcher_stop, state$dispatcher)
  if (!is.null(state$dir)) unlink(state$dir, recursive = TRUE)
  state$client <- state$dispatcher <- state$dir <- NULL
  invisible()
}

stopCluster.kura_cluster <- function(cl = NULL) {
  if (length(cl)) stop_cluster_state(cl[[1]]$state)
  invisible()
}

print.kura_cluster <- function(x, ...) {
  cat("< kura cluster of", length(x), "nodes >\n")
  invisible(x)
}

# A node's worker process: the slot it holds says which node it is.
serve_node <- function() {
  attach_kura()
  args <- commandArgs(trailingOnly = TRUE)
  k <- .Call(C_kura_claim_slot, args[[2]], as.integer(args[[3]]))
  functions <- list()
  functions[[paste0("kura.node.", k)]] <- function(spec) run_spec(spec)
  serve(args[[1]], functions)
}

# parallel's node interface (registered in .onLoad: parallel does not export
# these generics).

sendData.kura_node <- function(node, data) {
  s <- node$state
  if (is.null(s$client)) stop("the cluster was stopped")
  if (!identical(data$type, "EXEC")) return(invisible())
  call <- data$data
  spec <- make_spec(call$fun, lapply(call$args, prepare_arg))
  spec$seed <- NULL  # the streams of workers(seed =) are for tasks
  id <- .Call(
    C_kura_task_submit, s$client, paste0("kura.node.", node$k), list(spec_bytes(spec)), 0, 0L, TRUE, FALSE,
    utf8_locale()
  )
  p <- list(id = id, tag = call$tag, start = proc.time()[[3]], keep = spec$args)
  s$pending[[node$k]] <- c(s$pending[[node$k]], list(p))
  invisible()
}

node_value <- function(r, p) {
  ok <- identical(r[[2]], "ok")
  value <- if (ok) {
    r[[4]]
  } else {
    e <- error_value(r[[2]], r[[3]])
    structure(paste0("Error : ", e$message, "\n"), class = "try-error", condition = simpleError(e$message))
  }
  list(type = "VALUE", value = value, success = ok, time = proc.time()[[3]] - p$start, tag = p$tag)
}

recvData.kura_node <- function(node) {
  s <- node$state
  q <- s$pending[[node$k]]
  if (!length(q)) stop("nothing was sent to node ", node$k)
  p <- q[[1]]
  s$pending[[node$k]] <- q[-1]
  node_value(.Call(C_kura_task_wait, s$client, p$id, -1), p)
}

recvOneData.kura_cluster <- function(cl) {
  s <- cl[[1]]$state
  ids <- unlist(lapply(s$pending, function(q) vapply(q, function(p) p$id, 0)))
  if (!length(ids)) stop("nothing was sent to the cluster")
  r <- .Call(C_kura_task_wait, s$client, ids, -1)
  for (k in seq_along(s$pending)) {
    q <- s$pending[[k]]
    at <- match(r[[1]], vapply(q, function(p) p$id, 0))
    if (!is.na(at)) {
      p <- q[[at]]
      s$pending[[k]] <- q[-at]
      return(list(node = k, value = node_value(r, p)))
    }
  }
  stop("a result arrived for no node")
}
