// Where kura's fatal exits go inside R.
//
// core and shm end the process on a broken invariant of their own
// (KURA_CHECK: a message on the C stderr stream, then abort()), and shm does
// the same when it cannot allocate a path string at start-up. ipc logs to
// stderr by default, and a worker whose dispatcher went away while a task
// ran leaves at once with _exit(0) (in R, a worker process serving tasks).
// R CMD check refuses compiled code that references abort, _exit or the C
// stream stderr, and core/shm/ipc are compiled here unchanged. So the
// package is linked with -Wl,--wrap=abort -Wl,--wrap=_exit
// -Wl,--wrap=stderr (Makevars.in): the linker sends every reference to
// those symbols in the package's objects to the definitions below, which do
// the same thing: write to the process's standard error; end the process
// with SIGABRT; end it at once with the status given. Nothing else in the
// package writes to stderr or ends the process.
#include <sys/syscall.h>
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

[[noreturn]] void __wrap__exit(int status) {
  for (;;) ::syscall(SYS_exit_group, status);
}
// NOLINTEND(bugprone-reserved-identifier)

}  // extern "C"
