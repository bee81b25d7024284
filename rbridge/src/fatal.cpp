// Where kura's fatal exits go inside R.
//
// core and shm end the process on a broken invariant of their own
// (KURA_CHECK: a message on the C stderr stream, then abort()), and shm does
// the same when it cannot allocate a path string at start-up. R CMD check
// refuses compiled code that references abort or the C stream stderr, and
// core/shm are compiled here unchanged. So the package is linked with
// -Wl,--wrap=abort -Wl,--wrap=stderr (Makevars.in): the linker sends every
// reference to those two symbols in the package's objects to the
// definitions below, which do the same thing: write to the process's
// standard error, and end the process with SIGABRT. Nothing else in the
// package writes to stderr or aborts.
#include <unistd.h>

#include <csignal>
#include <cstdio>

namespace {

FILE* open_standard_error() noexcept {
  FILE* s = ::fdopen(::dup(STDERR_FILENO), "w");
  if (s == nullptr) s = std::fopen("/dev/null", "w");
  if (s != nullptr) std::setvbuf(s, nullptr, _IONBF, 0);
  return s;
}

}  // namespace

extern "C" {

// NOLINTBEGIN(bugprone-reserved-identifier): the names ld's --wrap uses.
FILE* __wrap_stderr = open_standard_error();

[[noreturn]] void __wrap_abort() {
  std::signal(SIGABRT, SIG_DFL);
  std::raise(SIGABRT);
  std::raise(SIGKILL);
  for (;;) ::pause();
}
// NOLINTEND(bugprone-reserved-identifier)

}  // extern "C"
