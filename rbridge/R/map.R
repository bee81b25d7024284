# task_map(): a function over the elements of a vector or list, or the rows
# of a data frame, one task each, results in order.

# Tasks in flight at once: enough to keep every worker busy, few enough that
# an early stop has little to cancel.
kMapWindow <- 256L

task_map <- function(.x, .f, ..., .args = list(), .by = c("elements", "rows"), .progress = interactive(),
                     .stop_early = TRUE, .timeout = NULL, .retries = 0L) {
  .by <- match.arg(.by)
  if (!is.list(.args)) stop("`.args` must be a list")
  rows <- .by == "rows"
  if (rows && !is.data.frame(.x)) stop("`.by = \"rows\"` needs a data frame")
  n <- if (rows) nrow(.x) else length(.x)
  common <- c(list(...), .args)
  item <- function(i) if (rows) lapply(.x, function(col) col[[i]]) else list(.x[[i]])
  out <- vector("list", n)
  # Named as the elements are, or as the rows are when they have names of
  # their own (not R's automatic 1..n).
  labels <- if (rows) attr(.x, "row.names") else names(.x)
  if (is.character(labels)) names(out) <- labels
  if (n == 0L) return(out)
  if (identical(.kura$mode, "sync")) {
    for (i in seq_len(n)) {
      t <- run_sync(.f, c(item(i), common))
      out[i] <- list(t$value)
      if (.stop_early && is_error_value(t$value)) map_failed(i, t$value)
    }
    return(out)
  }
  timeout <- if (is.null(.timeout)) 0 else .timeout
  # Shared once for every task: the input (its elements are then shared
  # too, and travel as their path-form names) and the common arguments.
  .x <- prepare_arg(.x)
  named <- is.character(.f)
  common <- lapply(common, prepare_arg)
  c <- client()
  send <- function(i) {
    args <- c(lapply(item(i), prepare_arg), common)
    if (named) {
      .Call(
        C_kura_task_submit, c, .f, lapply(args, named_arg), timeout, .retries, FALSE, FALSE, utf8_locale()
      )
    } else {
      spec <- make_spec(.f, args)
      .Call(C_kura_task_submit, c, kR, spec_args(spec), timeout, .retries, TRUE, FALSE, utf8_locale())
    }
  }
  ids <- numeric()
  at <- integer()
  sent <- 0L
  done <- 0L
  bar <- progress_bar(n, .progress)
  while (done < n) {
    while (sent < n && length(ids) < kMapWindow) {
      sent <- sent + 1L
      ids <- c(ids, send(sent))
      at <- c(at, sent)
    }
    r <- .Call(C_kura_task_wait, c, ids, -1)
    k <- match(r[[1]], ids)
    i <- at[[k]]
    ids <- ids[-k]
    at <- at[-k]
    value <- if (identical(r[[2]], "ok")) r[[4]] else error_value(r[[2]], r[[3]])
    out[i] <- list(value)
    done <- done + 1L
    bar(done)
    if (.stop_early && is_error_value(value)) {
      for (id in ids) .Call(C_kura_task_cancel, c, id)
      while (length(ids)) {
        r <- .Call(C_kura_task_wait, c, ids, -1)
        ids <- ids[ids != r[[1]]]
      }
      bar(n, stopped = TRUE)
      map_failed(i, value)
    }
  }
  out
}

map_failed <- function(i, value) {
  stop(sprintf("task_map(): element %d failed (%s): %s", i, value$outcome, value$message), call. = FALSE)
}

# A progress line on standard error: a bar redrawn in place in an
# interactive session, a line per tenth otherwise; or nothing.
progress_bar <- function(n, show) {
  if (!isTRUE(show)) return(function(done, stopped = FALSE) invisible())
  start <- Sys.time()
  last_tenth <- -1L
  live <- interactive()
  function(done, stopped = FALSE) {
    secs <- as.numeric(difftime(Sys.time(), start, units = "secs"))
    pct <- floor(100 * done / n)
    if (live) {
      width <- 30L
      full <- floor(width * done / n)
      cat(sprintf(
        "\r[%s%s] %3d%% | %d/%d | %.1fs%s", strrep("=", full), strrep(" ", width - full), pct, done, n,
        secs, if (stopped) " | stopped" else ""
      ), file = stderr())
      if (done >= n) cat("\n", file = stderr())
    } else if (floor(10 * done / n) > last_tenth || done >= n) {
      last_tenth <<- floor(10 * done / n)
      cat(sprintf("task_map: %d/%d (%d%%) %.1fs%s\n", done, n, pct, secs, if (stopped) ", stopped" else ""),
        file = stderr()
      )
    }
    invisible()
  }
}
