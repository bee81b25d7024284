# A task as a promise of the promises package (for Shiny's ExtendedTask and
# other asynchronous code): registered as promises::as.promise's method when
# promises is loaded. It resolves with the task's value, or is rejected with
# an error carrying an error value's message, from later's event loop, which
# looks at the task every 10 ms without blocking the session.
as.promise.kura_task <- function(x) {
  promises::promise(function(resolve, reject) {
    look <- function() {
      if (unresolved(x)) return(later::later(look, 0.01))
      v <- x$value
      if (is_error_value(v)) {
        reject(simpleError(paste0("kura task ", v$outcome, ": ", v$message)))
      } else {
        resolve(v)
      }
    }
    look()
  })
}
