#include "kura/ipc/worker.hpp"

#include <dlfcn.h>
#include <unistd.h>

#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <deque>
#include <map>
#include <mutex>
#include <new>
#include <thread>

#include "kura/core/builder.hpp"
#include "kura/shm/owner.hpp"
#include "message_internal.hpp"
#include "transport_internal.hpp"

namespace kura::ipc {

void register_builtins(Registry& registry);  // builtins.cpp

namespace {

// The process's functions. Never destroyed (a worker may run until _exit).
class GlobalRegistry final : public Registry {
 public:
  void add(std::string name, Function fn) override {
    std::lock_guard<std::mutex> lock(mu_);
    fns_[std::move(name)] = std::move(fn);
  }
  // A copy of the function called `name`, or an empty function.
  Function find(const std::string& name) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = fns_.find(name);
    return it == fns_.end() ? Function() : it->second;
  }
  std::string names() {
    std::lock_guard<std::mutex> lock(mu_);
    std::string out;
    for (const auto& [name, fn] : fns_) out += (out.empty() ? "" : ", ") + name;
    return out;
  }

 private:
  std::mutex mu_;
  std::map<std::string, Function> fns_;
};

GlobalRegistry& registry() {
  static GlobalRegistry* r = [] {
    auto* g = new GlobalRegistry;
    register_builtins(*g);
    return g;
  }();
  return *r;
}

}  // namespace

// The cancellation state of the task a context belongs to.
struct TaskContext::Internals {
  std::mutex* mu;
  std::condition_variable* cv;
  const std::atomic<bool>* cancel;
  std::optional<shm::Lease>* lease;  // held on first need

  static TaskContext make(std::vector<NodeView> args, std::uint64_t owner, const Internals* in) {
    TaskContext c;
    c.args_ = std::move(args);
    c.owner_ = owner;
    c.in_ = in;
    return c;
  }
  static Result<const shm::Lease*> lease_of(TaskContext& c) {
    if (!*c.in_->lease) {
      KURA_ASSIGN_OR_RETURN(shm::Lease l, shm::Lease::hold(c.owner_));
      c.in_->lease->emplace(std::move(l));
    }
    return &**c.in_->lease;
  }
};

bool TaskContext::cancelled() const noexcept {
  return in_ != nullptr && in_->cancel->load();
}

bool TaskContext::sleep_for(std::chrono::milliseconds d) const noexcept {
  if (in_ == nullptr) {
    std::this_thread::sleep_for(d);
    return false;
  }
  std::unique_lock<std::mutex> lock(*in_->mu);
  return in_->cv->wait_for(lock, d, [this] { return in_->cancel->load(); });
}

Result<shm::Pending> TaskContext::result_region(const Value& layout) noexcept {
  auto lease = Internals::lease_of(*this);
  if (!lease) return lease.status();
  return shm::Pending::create(**lease, layout);
}

Status Worker::add(std::string name, Function fn) noexcept {
  if (name.empty()) return invalid_argument("a function needs a name");
  try {
    registry().add(std::move(name), std::move(fn));
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

namespace {

// One worker process's connection, loop and executor thread.
class WorkerLoop {
 public:
  explicit WorkerLoop(const WorkerOptions& o) : options_(o) {
    if (!options_.log)
      options_.log = [](const std::string& line) { std::fprintf(stderr, "kura worker: %s\n", line.c_str()); };
  }

  Status run() {
    detail::ignore_sigpipe();
    for (const std::string& p : options_.plugins) KURA_RETURN_IF_ERROR(load_plugin(p));
    if (int rc = uv_loop_init(&loop_); rc != 0)
      return Status(Code::kIo, std::string("uv_loop_init: ") + uv_strerror(rc));
    loop_.data = this;
    uv_async_init(&loop_, &wake_,
                  [](uv_async_t* a) { static_cast<WorkerLoop*>(a->loop->data)->send_done(); });
    Status connected = Status(Code::kIo, "not connected");
    detail::connect_unix(&loop_, options_.socket_path, [&](Result<uv_stream_t*> s) {
      if (!s) {
        connected = s.status();
        uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
        return;
      }
      conn_ = detail::Connection::adopt(*s, kDefaultFrameLimit, UINT64_MAX);
      connected = conn_->start(
          detail::Connection::Callbacks{[this](detail::Connection&, Frame&& f) { on_frame(std::move(f)); },
                                        [this](detail::Connection&, const Status& why) { on_close(why); }});
      if (!connected) return;
      auto hello = detail::encode_hello(detail::Hello{"worker", ::getpid(), 0});
      if (!hello) {
        connected = hello.status();
        conn_->close(connected);
        return;
      }
      conn_->send(FrameType::kHello, 0, 0, std::make_shared<const Bytes>(std::move(hello).value()));
    });
    executor_ = std::thread([this] { execute(); });
    uv_run(&loop_, UV_RUN_DEFAULT);
    {
      std::lock_guard<std::mutex> lock(mu_);
      quit_ = true;
    }
    cv_.notify_all();
    executor_.join();
    uv_loop_close(&loop_);
    return ended_well_ ? Status::ok() : connected;
  }

 private:
  struct Job {
    std::uint64_t id;
    std::uint16_t flags;
    std::shared_ptr<const Bytes> payload;
    bool cancelled = false;
  };
  struct Done {
    std::uint64_t id;
    std::uint16_t flags;
    std::shared_ptr<const Bytes> payload;
  };

  Status load_plugin(const std::string& path) {
    void* h = ::dlopen(path.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (h == nullptr) return invalid_argument("cannot load plugin " + path + ": " + ::dlerror());
    auto* entry = reinterpret_cast<void (*)(Registry&)>(::dlsym(h, kPluginEntry));
    if (entry == nullptr)
      return invalid_argument("plugin " + path + " has no " + kPluginEntry +
                              "(kura::ipc::Registry&) function");
    entry(registry());
    return Status::ok();
  }

  void on_frame(Frame&& f) {
    switch (f.header.type) {
      case FrameType::kWelcome: {
        auto w = detail::decode_welcome(f.payload);
        if (!w) return conn_->close(w.status());
        conn_->set_read_limit(w->frame_limit);
        frame_limit_ = w->frame_limit;
        return;
      }
      case FrameType::kTask: {
        {
          std::lock_guard<std::mutex> lock(mu_);
          jobs_.push_back(
              Job{f.header.id, f.header.flags, std::make_shared<const Bytes>(std::move(f.payload)), false});
        }
        cv_.notify_all();
        return;
      }
      case FrameType::kCancel: {
        std::lock_guard<std::mutex> lock(mu_);
        if ((f.header.flags & kFlagSetup) != 0) return;  // set-up calls are not cancelled
        if (running_ && running_id_ == f.header.id && (running_flags_ & kFlagSetup) == 0) {
          cancel_.store(true);
        } else {
          // Received but not started yet: it will end as cancelled without running.
          for (Job& j : jobs_)
            if (j.id == f.header.id && (j.flags & kFlagSetup) == 0) j.cancelled = true;
        }
        cv_.notify_all();
        return;
      }
      default:
        return conn_->close(
            corrupt("the dispatcher sent a frame of type " + std::to_string(int(f.header.type))));
    }
  }

  void on_close(const Status& why) {
    bool busy;
    {
      std::lock_guard<std::mutex> lock(mu_);
      busy = running_;
    }
    if (busy) {
      options_.log("the dispatcher went away (" + why.message() + ") while a function ran; exiting");
      std::fflush(stderr);
      ::_exit(0);
    }
    ended_well_ = why.message() == "the peer closed the connection";
    uv_close(reinterpret_cast<uv_handle_t*>(&wake_), nullptr);
  }

  // The executor thread: runs jobs one at a time.
  void execute() {
    for (;;) {
      Job job;
      {
        std::unique_lock<std::mutex> lock(mu_);
        cv_.wait(lock, [this] { return quit_ || !jobs_.empty(); });
        if (quit_) return;
        job = std::move(jobs_.front());
        jobs_.pop_front();
        running_ = true;
        running_id_ = job.id;
        running_flags_ = job.flags;
        cancel_.store(job.cancelled);
      }
      std::shared_ptr<const Bytes> result =
          job.cancelled ? error_result(Outcome::kCancelled, "cancelled") : run_job(job);
      {
        std::lock_guard<std::mutex> lock(mu_);
        running_ = false;
        done_.push_back(Done{job.id, job.flags, std::move(result)});
      }
      uv_async_send(&wake_);
    }
  }

  void send_done() {
    std::deque<Done> done;
    {
      std::lock_guard<std::mutex> lock(mu_);
      done.swap(done_);
    }
    for (Done& d : done) {
      if (conn_ == nullptr || conn_->closed()) return;
      conn_->send(FrameType::kDone, d.flags & kFlagSetup, d.id, std::move(d.payload));
    }
  }

  static std::shared_ptr<const Bytes> error_result(Outcome o, const std::string& message) {
    auto p = detail::encode_result(o, message, "", nullptr);
    if (!p) p = detail::encode_result(Outcome::kError, "out of memory", "", nullptr);
    return p ? std::make_shared<const Bytes>(std::move(p).value()) : nullptr;
  }

  // Runs one task and returns the result image for the dispatcher.
  std::shared_ptr<const Bytes> run_job(const Job& job) noexcept {
    try {
      auto s = detail::decode_submit(job.payload);
      if (!s) return error_result(Outcome::kError, "cannot read the task: " + s.status().message());
      Function fn = registry().find(s->fn);
      if (!fn)
        return error_result(Outcome::kError, "no function \"" + s->fn +
                                                 "\" in this worker (it has: " + registry().names() + ")");
      std::vector<NodeView> args;
      args.reserve(s->args.size());
      for (std::size_t i = 0; i < s->args.size(); ++i) {
        const auto& a = s->args[i];
        if (a.value) {
          args.push_back(*a.value);
          continue;
        }
        auto m = shm::map(a.name);
        if (!m)
          return error_result(Outcome::kError,
                              "argument " + std::to_string(i + 1) + ": " + m.status().to_string());
        args.push_back(m->node());
      }
      std::optional<shm::Lease> lease;
      TaskContext::Internals in{&mu_, &cv_, &cancel_, &lease};
      TaskContext ctx = TaskContext::Internals::make(std::move(args), s->owner, &in);
      Result<Output> out = Status(Code::kIo, "not run");
      try {
        out = fn(ctx);
      } catch (const std::bad_alloc&) {
        out = Status::out_of_memory();
      } catch (const std::exception& e) {
        out = Status(Code::kIo, std::string("the function threw: ") + e.what());
      } catch (...) {
        out = Status(Code::kIo, "the function threw an exception of unknown type");
      }
      if (cancel_.load()) return error_result(Outcome::kCancelled, "cancelled");  // nobody takes it
      if (!out) return error_result(Outcome::kError, out.status().message());
      if (out->is_region()) {
        std::string name = out->region().disown();
        return make_result("", name, nullptr);
      }
      const Value& v = out->value();
      auto layout = Layout::plan(v);
      if (!layout)
        return error_result(Outcome::kError, "the result cannot be laid out: " + layout.status().message());
      const std::uint64_t room = frame_limit_ > 4096 ? frame_limit_ - 4096 : 0;
      if (layout->size() <= std::min<std::uint64_t>(options_.inline_limit, room))
        return make_result("", "", &v);
      auto held = TaskContext::Internals::lease_of(ctx);
      if (!held)
        return error_result(Outcome::kError, "cannot hold the client's lease: " + held.status().message());
      auto shared = shm::share(**held, v);
      if (!shared)
        return error_result(Outcome::kError, "cannot write the result: " + shared.status().to_string());
      return make_result("", shared->disown(), nullptr);
    } catch (...) {
      return error_result(Outcome::kError, "out of memory");
    }
  }

  static std::shared_ptr<const Bytes> make_result(const std::string& message, const std::string& name,
                                                  const Value* v) {
    auto p = detail::encode_result(Outcome::kOk, message, name, v);
    if (!p) return error_result(Outcome::kError, "cannot encode the result: " + p.status().message());
    return std::make_shared<const Bytes>(std::move(p).value());
  }

  WorkerOptions options_;
  uv_loop_t loop_{};
  uv_async_t wake_{};
  detail::Connection* conn_ = nullptr;
  std::uint32_t frame_limit_ = kDefaultFrameLimit;
  bool ended_well_ = false;
  std::thread executor_;

  std::mutex mu_;
  std::condition_variable cv_;
  std::deque<Job> jobs_;
  std::deque<Done> done_;
  bool quit_ = false;
  bool running_ = false;
  std::uint64_t running_id_ = 0;
  std::uint16_t running_flags_ = 0;
  std::atomic<bool> cancel_{false};
};

}  // namespace

Status Worker::run(const WorkerOptions& options) noexcept {
  try {
    WorkerLoop loop(options);
    return loop.run();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  } catch (const std::system_error& e) {
    return Status(Code::kIo, std::string("cannot start the worker: ") + e.what());
  }
}

std::optional<int> Worker::main(int argc, char** argv) noexcept {
  if (argc < 4 || std::strcmp(argv[1], "worker") != 0) return std::nullopt;
  WorkerOptions o;
  for (int i = 2; i + 1 < argc; i += 2) {
    if (std::strcmp(argv[i], "--connect") == 0) {
      o.socket_path = argv[i + 1];
    } else if (std::strcmp(argv[i], "--plugin") == 0) {
      o.plugins.push_back(argv[i + 1]);
    } else {
      return std::nullopt;
    }
  }
  if (o.socket_path.empty()) return std::nullopt;
  Status s = run(o);
  if (!s) {
    std::fprintf(stderr, "kura worker: %s\n", s.to_string().c_str());
    return 1;
  }
  return 0;
}

}  // namespace kura::ipc
