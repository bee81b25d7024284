// The process's function registry, cancellation of the running task, and
// TaskContext (worker_internal.hpp).
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include <atomic>
#include <climits>
#include <new>
#include <thread>

#include "worker_internal.hpp"

namespace kura::ipc {

void register_builtins(Registry& registry);  // builtins.cpp

namespace detail {

void FunctionRegistry::add(std::string name, Function fn) {
  std::lock_guard<std::mutex> lock(mu_);
  fns_[std::move(name)] = std::move(fn);
}

Function FunctionRegistry::find(const std::string& name) {
  std::lock_guard<std::mutex> lock(mu_);
  auto it = fns_.find(name);
  return it == fns_.end() ? Function() : it->second;
}

std::string FunctionRegistry::names() {
  std::lock_guard<std::mutex> lock(mu_);
  std::string out;
  for (const auto& [name, fn] : fns_) out += (out.empty() ? "" : ", ") + name;
  return out;
}

std::vector<std::string> FunctionRegistry::list() {
  std::lock_guard<std::mutex> lock(mu_);
  std::vector<std::string> out;
  out.reserve(fns_.size());
  for (const auto& [name, fn] : fns_) out.push_back(name);
  return out;
}

FunctionRegistry& functions() {
  static FunctionRegistry* r = [] {
    auto* g = new FunctionRegistry;
    register_builtins(*g);
    return g;
  }();
  return *r;
}

// Cancellation. The dispatcher sends a kCancel frame; the worker's loop,
// which stays free while a function runs on the executor thread, marks the
// task (TaskContext::cancelled polls the mark), wakes a sleeping
// TaskContext through an eventfd, and sends WorkerOptions::cancel_signal
// (kCancelSignal unless the host chose another) to the thread that runs
// functions (its value the task id) for code that does not poll: a handler
// of its own may act on it.
namespace {

std::atomic<std::uint64_t> g_running{0};    // the task running now, 0 when idle
std::atomic<std::uint64_t> g_cancelled{0};  // the last task cancelled
int g_cancel_fd = -1;                       // eventfd written when the running task is cancelled
std::atomic<bool> g_cancel_fd_written{false};

void on_cancel_signal(int, siginfo_t* info, void*) {
  mark_cancelled(static_cast<std::uint64_t>(reinterpret_cast<std::uintptr_t>(info->si_value.sival_ptr)));
}

}  // namespace

void mark_cancelled(std::uint64_t id) noexcept {
  g_cancelled.store(id);
  if (id != 0 && id == g_running.load() && g_cancel_fd >= 0) {
    const std::uint64_t one = 1;
    g_cancel_fd_written.store(true);
    (void)!::write(g_cancel_fd, &one, sizeof one);
  }
}

Status install_cancel_handler() noexcept {
  if (g_cancel_fd < 0) {
    g_cancel_fd = ::eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (g_cancel_fd < 0) return Status(Code::kIo, "cannot create an eventfd for cancellation");
  }
  struct sigaction sa {};
  sa.sa_sigaction = on_cancel_signal;
  sa.sa_flags = SA_SIGINFO | SA_RESTART;
  sigemptyset(&sa.sa_mask);
  if (::sigaction(kCancelSignal, &sa, nullptr) != 0)
    return Status(Code::kIo, "cannot install the cancel handler");
  return Status::ok();
}

bool cancelled_before_start(std::uint64_t id) noexcept {
  return id != 0 && g_cancelled.load() == id;
}

void begin_task(std::uint64_t id) noexcept {
  if (g_cancel_fd_written.exchange(false)) {
    std::uint64_t stale = 0;
    (void)!::read(g_cancel_fd, &stale, sizeof stale);  // a wake-up meant for an earlier task
  }
  g_running.store(id);
}

void end_task() noexcept {
  g_running.store(0);
}

bool running(std::uint64_t id) noexcept {
  return id != 0 && g_running.load() == id;
}

}  // namespace detail

TaskContext TaskContext::Internals::make(std::vector<NodeView> args, std::vector<std::string> names,
                                         std::vector<std::string> origins, std::uint64_t owner,
                                         bool want_inline, const Internals* in) {
  TaskContext c;
  c.args_ = std::move(args);
  c.names_ = std::move(names);
  c.origins_ = std::move(origins);
  c.owner_ = owner;
  c.inline_ = want_inline;
  c.in_ = in;
  return c;
}

Result<const shm::Lease*> TaskContext::Internals::lease_of(TaskContext& c) {
  if (!*c.in_->lease) {
    KURA_ASSIGN_OR_RETURN(shm::Lease l, shm::Lease::hold(c.owner_));
    c.in_->lease->emplace(std::move(l));
  }
  return &**c.in_->lease;
}

bool TaskContext::cancelled() const noexcept {
  const std::uint64_t running = detail::g_running.load();
  return in_ != nullptr && running != 0 && detail::g_cancelled.load() == running;
}

bool TaskContext::sleep_for(std::chrono::milliseconds d) const noexcept {
  const auto deadline = std::chrono::steady_clock::now() + d;
  while (!cancelled()) {
    const auto left =
        std::chrono::duration_cast<std::chrono::milliseconds>(deadline - std::chrono::steady_clock::now());
    if (left.count() <= 0) return false;
    if (in_ == nullptr || detail::g_cancel_fd < 0) {
      std::this_thread::sleep_for(left);
      return false;
    }
    pollfd p{detail::g_cancel_fd, POLLIN, 0};
    ::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left.count(), INT_MAX)));
  }
  return true;
}

Result<shm::Pending> TaskContext::result_region(const Value& layout) noexcept {
  if (in_ != nullptr && in_->own_owner) return shm::Pending::create(layout);
  auto lease = Internals::lease_of(*this);
  if (!lease) return lease.status();
  return shm::Pending::create(**lease, layout);
}

Status Worker::add(std::string name, Function fn) noexcept {
  if (name.empty()) return invalid_argument("a function needs a name");
  try {
    detail::functions().add(std::move(name), std::move(fn));
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc
