// The managed worker pool: DispatcherOptions::workers processes started
// and kept running. Each gets a start token (kWorkerTokenEnv) that it sends
// back in its hello, so a connection is matched to its process by token,
// not by pid. A worker that dies is replaced: at once when it finished a
// task since it was ready, else (a crash loop, a task that kills every
// worker it reaches) after a delay that doubles up to kMaxRestartDelayMs.
#include <sys/random.h>
#include <unistd.h>

#include <climits>
#include <cstdio>
#include <cstring>
#include <random>

#include "dispatcher_internal.hpp"
#include "kura/ipc/worker.hpp"

extern char** environ;

namespace kura::ipc {

namespace {

std::string self_exe() {
  char buf[PATH_MAX];
  ssize_t n = ::readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return {};
  buf[n] = '\0';
  return buf;
}

}  // namespace

bool descends_from(std::int64_t pid, std::int64_t ancestor) {
  for (int depth = 0; depth < 8 && pid > 1; ++depth) {
    if (pid == ancestor) return true;
    std::FILE* f = std::fopen(("/proc/" + std::to_string(pid) + "/stat").c_str(), "r");
    if (f == nullptr) return false;
    char line[512];
    const bool got = std::fgets(line, sizeof line, f) != nullptr;
    std::fclose(f);
    // pid (comm) state ppid ...: comm may hold spaces and parentheses, so
    // the fields start after the last ')'.
    const char* close = got ? std::strrchr(line, ')') : nullptr;
    long long ppid = 0;
    if (close == nullptr || std::sscanf(close + 1, " %*c %lld", &ppid) != 1) return false;
    pid = ppid;
  }
  return pid == ancestor;
}

// A fresh start token: random, so that no process can guess the token of a
// worker it did not see started; never 0 and never one in use.
std::uint64_t Dispatcher::Core::fresh_token() const {
  for (;;) {
    std::uint64_t t = 0;
    if (::getrandom(&t, sizeof t, 0) != static_cast<ssize_t>(sizeof t)) t = std::random_device{}();
    bool used = t == 0;
    for (const ManagedWorker* m : managed) used = used || m->token == t;
    if (!used) return t;
  }
}

Status Dispatcher::Core::pool_command() {
  if (options.workers == 0 || !options.worker_command.empty()) return Status::ok();
  std::string exe = self_exe();
  if (exe.empty()) return Status(Code::kIo, "cannot find this executable to start workers with");
  options.worker_command = ipc::Worker::command(exe);
  return Status::ok();
}

Dispatcher::Core::ManagedWorker* Dispatcher::Core::managed_by_token(std::uint64_t token) {
  if (token == 0) return nullptr;
  for (ManagedWorker* m : managed)
    if (m->token == token) return m;
  return nullptr;
}

void Dispatcher::Core::kill_managed(std::uint64_t token) {
  if (ManagedWorker* m = managed_by_token(token)) uv_process_kill(&m->process, SIGKILL);
}

void Dispatcher::Core::spawn_worker() {
  std::vector<std::string> argv = options.worker_command;
  for (std::string& a : argv) {
    for (auto p = a.find("{socket}"); p != std::string::npos;
         p = a.find("{socket}", p + options.socket_path.size()))
      a.replace(p, 8, options.socket_path);
  }
  std::vector<char*> args;
  for (std::string& a : argv) args.push_back(a.data());
  args.push_back(nullptr);
  auto* m = new ManagedWorker;
  m->core = this;
  m->token = fresh_token();
  m->process.data = m;
  // The environment of this process, with the worker's token.
  const std::string prefix = std::string(detail::kWorkerTokenEnv) + "=";
  std::vector<std::string> env_strings;
  for (char** e = environ; e != nullptr && *e != nullptr; ++e)
    if (std::strncmp(*e, prefix.c_str(), prefix.size()) != 0) env_strings.emplace_back(*e);
  env_strings.push_back(prefix + std::to_string(m->token));
  std::vector<char*> env;
  for (std::string& e : env_strings) env.push_back(e.data());
  env.push_back(nullptr);
  uv_stdio_container_t stdio[3];
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_IGNORE;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = 2;
  uv_process_options_t po{};
  po.file = args[0];
  po.args = args.data();
  po.env = env.data();
  po.stdio_count = 3;
  po.stdio = stdio;
  // A session of its own: a Ctrl-C at the terminal reaches the dispatcher,
  // which stops, and its workers then see it go away and exit.
  po.flags = UV_PROCESS_DETACHED;
  po.exit_cb = [](uv_process_t* p, int64_t status, int signal) {
    auto* w = static_cast<ManagedWorker*>(p->data);
    w->core->guarded([&] { w->core->on_worker_exit(w, status, signal); });
  };
  if (int rc = uv_spawn(&loop, &m->process, &po); rc != 0) {
    log("cannot start a worker (" + argv[0] + "): " + uv_strerror(rc));
    uv_close(reinterpret_cast<uv_handle_t*>(&m->process),
             [](uv_handle_t* h) { delete static_cast<ManagedWorker*>(h->data); });
    schedule_restart(false);
    return;
  }
  managed.insert(m);
  ++workers_started;
  log("started worker pid " + std::to_string(m->process.pid));
}

void Dispatcher::Core::on_worker_exit(ManagedWorker* m, std::int64_t status, int signal) {
  const bool productive = m->ready && m->tasks_done > 0;
  if (!stopping)
    log("worker pid " + std::to_string(m->process.pid) + " exited" +
        (signal ? " on signal " + std::to_string(signal) : " with status " + std::to_string(status)) +
        "; starting a replacement");
  managed.erase(m);
  uv_close(reinterpret_cast<uv_handle_t*>(&m->process),
           [](uv_handle_t* h) { delete static_cast<ManagedWorker*>(h->data); });
  if (stopping) {
    if (managed.empty()) {
      uv_timer_stop(&kill_timer);
      close_all_handles();
    }
    return;
  }
  schedule_restart(productive);
}

// Starts a replacement now, or, when workers keep dying without doing any
// work, after a delay that doubles each time.
void Dispatcher::Core::schedule_restart(bool productive) {
  if (stopping) return;
  ++restarts_pending;
  if (productive) {
    restart_delay_ms = 0;
  } else {
    restart_delay_ms = std::min(kMaxRestartDelayMs, restart_delay_ms == 0 ? 100 : 2 * restart_delay_ms);
  }
  uv_timer_start(
      &restart_timer,
      [](uv_timer_t* t) {
        auto* core = static_cast<Core*>(t->loop->data);
        unsigned n = core->restarts_pending;
        core->restarts_pending = 0;
        core->guarded([core, n] {
          for (unsigned i = 0; i < n && !core->stopping; ++i) core->spawn_worker();
        });
      },
      restart_delay_ms, 0);
}

}  // namespace kura::ipc
