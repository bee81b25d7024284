#include "client.hpp"

#include <cinttypes>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <thread>
#include <vector>

#include "kura/ipc/client.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "plan.hpp"

namespace kura::soak {

namespace {

constexpr std::size_t kWindow = 32;  // tasks in flight per client
constexpr std::size_t kHeld = 32;    // result regions the holding client keeps
// No result this long after submit: lost. Every task of the plan ends within
// a second or so, retries and the dispatcher's restart included.
constexpr std::int64_t kTaskBoundNs = 30'000'000'000;
constexpr std::int64_t kMs = 1'000'000;

Value array_of(const Task& t) {
  std::vector<double> xs(t.n);
  for (std::uint64_t j = 0; j < t.n; ++j) xs[j] = element(t, j);
  return Value::array<Dtype::kF64>(std::span<const double>(xs));
}

std::string fail_message(const Task& t) {
  return "soak task " + std::to_string(t.token);
}

bool same_array(const NodeView& v, const Task& t, double k) {
  auto xs = v.array<Dtype::kF64>();
  if (!xs || xs->size() != t.n) return false;
  for (std::uint64_t j = 0; j < t.n; ++j)
    if ((*xs)[j] != element(t, j) * k) return false;
  return true;
}

bool single(const NodeView& v, double want) {
  auto xs = v.array<Dtype::kF64>();
  return xs && xs->size() == 1 && (*xs)[0] == want;
}

// Whether `r` holds what the plan says task `t` returns (for ok and error
// results; the table judges the outcome itself).
bool verify(const Task& t, const ipc::TaskResult& r) {
  if (r.outcome() == ipc::Outcome::kError) {
    if (t.kind == TaskKind::kFail) return r.message().find(fail_message(t)) != std::string::npos;
    if (t.kind == TaskKind::kUnknown) return r.message().find("unknown function") != std::string::npos;
    return false;
  }
  if (!r.ok()) return true;
  const NodeView& v = r.value();
  switch (t.kind) {
    case TaskKind::kEchoInline:
    case TaskKind::kEchoName: return r.region_size() == 0 && same_array(v, t, 1.0);
    case TaskKind::kEchoBig: return r.region_size() > 0 && same_array(v, t, 1.0);
    case TaskKind::kScaleName: return r.region_size() > 0 && same_array(v, t, t.param);
    case TaskKind::kSumName: {
      double want = 0;
      for (std::uint64_t j = 0; j < t.n; ++j) want += element(t, j);
      return single(v, want);
    }
    case TaskKind::kRaceCancel:
    case TaskKind::kLongTimeout: return single(v, static_cast<double>(t.token));
    case TaskKind::kSleepShort: return v.kind() == kura::Kind::kNull;
    default: return false;  // fail, unknown, cancel and timeout never end ok
  }
}

Got got_of(ipc::Outcome o) {
  return static_cast<Got>(static_cast<int>(o));  // the first six agree (plan.hpp)
}

struct InFlight {
  std::uint64_t index = 0;
  Task task{};
  std::int64_t t0 = 0;
  std::int64_t conn_t = 0;
  std::optional<shm::Shared> arg;
};

// Sends the planned cancels at their time, from a thread of its own: the
// client's thread may be blocked in submit() waiting for room in the queue,
// room that only those cancels free when every worker runs a sleep(30).
class Canceller {
 public:
  Canceller() : thread_([this] { loop(); }) {}
  ~Canceller() {
    {
      std::lock_guard<std::mutex> lock(mu_);
      stop_ = true;
    }
    cv_.notify_all();
    thread_.join();
  }
  // The client the cancels go to (nullptr: none); forgets those not sent.
  void set_client(ipc::Client* c) {
    std::lock_guard<std::mutex> lock(mu_);
    client_ = c;
    due_.clear();
  }
  void at(std::int64_t t, ipc::TaskId id) {
    {
      std::lock_guard<std::mutex> lock(mu_);
      due_.emplace(t, id);
    }
    cv_.notify_all();
  }

 private:
  void loop() {
    std::unique_lock<std::mutex> lock(mu_);
    while (!stop_) {
      if (due_.empty()) {
        cv_.wait(lock);
        continue;
      }
      const std::int64_t wait = due_.begin()->first - now_ns();
      if (wait > 0) {
        cv_.wait_for(lock, std::chrono::nanoseconds(wait));
        continue;
      }
      const ipc::TaskId id = due_.begin()->second;
      due_.erase(due_.begin());
      if (client_) (void)client_->cancel(id);  // a lost connection shows in the results
    }
  }

  std::mutex mu_;
  std::condition_variable cv_;
  std::multimap<std::int64_t, ipc::TaskId> due_;
  ipc::Client* client_ = nullptr;
  bool stop_ = false;
  std::thread thread_;
};

class Runner {
 public:
  explicit Runner(const ClientConfig& c) : c_(c) {}

  int run() {
    if (auto owner = shm::process_owner()) {
      char line[40];
      std::snprintf(line, sizeof line, "O %" PRIx64 "\n", *owner);
      c_.out(line);
    }
    if (!connect()) return 1;
    std::uint64_t next = c_.first;
    while (next < c_.count || !pending_.empty()) {
      if (broken_) {
        drain_disconnected();
        if (!connect()) return 1;
        continue;
      }
      const std::int64_t now = now_ns();
      while (!broken_ && next < c_.count && pending_.size() < kWindow && now >= due(next)) submit(next++);
      give_up_stale();
      if (pending_.empty()) {
        if (next < c_.count)
          std::this_thread::sleep_for(
              std::chrono::nanoseconds(std::clamp<std::int64_t>(due(next) - now_ns(), 0, 20 * kMs)));
        continue;
      }
      take_one(next < c_.count && pending_.size() < kWindow ? due(next) : 0);
    }
    canceller_.set_client(nullptr);
    client_.reset();
    held_.clear();
    return 0;
  }

 private:
  std::int64_t due(std::uint64_t i) const {
    return c_.start_ns + static_cast<std::int64_t>(static_cast<double>(c_.span_ns) * static_cast<double>(i) /
                                                   static_cast<double>(c_.count));
  }

  bool connect() {
    canceller_.set_client(nullptr);
    client_.reset();
    while (now_ns() < c_.give_up_ns) {
      auto c = ipc::Client::connect(c_.socket);
      if (c) {
        client_ = std::move(c).value();
        canceller_.set_client(client_.get());
        conn_t_ = now_ns();
        broken_ = false;
        return true;
      }
      // Between a dispatcher's death and its successor's listening: look again.
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
    c_.out("E cannot connect to " + c_.socket + " before the soak's deadline\n");
    return false;
  }

  void report(const Task&, std::uint64_t index, Got got, bool submitted, bool verified, std::int64_t t0,
              const std::string& message) {
    Record r;
    r.client = c_.id;
    r.index = index;
    r.got = got;
    r.submitted = submitted;
    r.verified = verified;
    r.t0 = t0;
    r.t1 = now_ns();
    r.conn_t = conn_t_;
    r.message = message;
    c_.out(format_record(r));
  }

  void submit(std::uint64_t index) {
    c_.out("S " + std::to_string(index) + "\n");
    const Task t = plan(c_.id, index);
    ipc::Call call;
    ipc::TaskOptions o;
    o.retries = t.retries;
    InFlight f;
    f.index = index;
    f.task = t;
    f.conn_t = conn_t_;
    auto by_name = [&]() -> bool {
      auto s = shm::share(array_of(t));
      if (!s) {
        report(t, index, s.status().code() == Code::kNoSpace ? Got::kNoSpace : Got::kError, false, false,
               now_ns(), s.status().to_string());
        return false;
      }
      call.args.push_back(ipc::Arg::ref(s->name()));
      f.arg = std::move(s).value();
      return true;
    };
    switch (t.kind) {
      case TaskKind::kEchoInline:
      case TaskKind::kEchoBig: call = {"echo", {ipc::Arg::copy(array_of(t))}}; break;
      case TaskKind::kEchoName:
        call.fn = "echo";
        if (!by_name()) return;
        break;
      case TaskKind::kSumName:
        call.fn = "sum";
        if (!by_name()) return;
        break;
      case TaskKind::kScaleName:
        call.fn = "scale";
        if (!by_name()) return;
        call.args.push_back(ipc::Arg::copy(Value::f64({t.param})));
        break;
      case TaskKind::kFail: call = {"fail", {ipc::Arg::copy(Value::strings_utf8({fail_message(t)}))}}; break;
      case TaskKind::kUnknown: call = {"soak_no_such_function", {}}; break;
      case TaskKind::kSleepShort: call = {"sleep", {ipc::Arg::copy(Value::f64({t.param}))}}; break;
      case TaskKind::kCancel: call = {"sleep", {ipc::Arg::copy(Value::f64({30}))}}; break;
      case TaskKind::kTimeout:
        call = {"sleep", {ipc::Arg::copy(Value::f64({30}))}};
        o.timeout = std::chrono::milliseconds(static_cast<std::int64_t>(t.param));
        break;
      case TaskKind::kRaceCancel:
      case TaskKind::kLongTimeout:
        call = {"echo", {ipc::Arg::copy(Value::f64({static_cast<double>(t.token)}))}};
        if (t.kind == TaskKind::kLongTimeout) o.timeout = std::chrono::seconds(120);
        break;
    }
    f.t0 = now_ns();
    auto id = client_->submit(call, o);
    if (!id) {
      const bool gone = id.status().code() == Code::kIo;
      report(t, index, gone ? Got::kDisconnected : Got::kError, false, false, f.t0, id.status().to_string());
      if (gone) broken_ = true;
      return;
    }
    if (t.kind == TaskKind::kRaceCancel) (void)client_->cancel(*id);
    if (t.kind == TaskKind::kCancel) canceller_.at(f.t0 + static_cast<std::int64_t>(t.param) * kMs, *id);
    ids_.push_back(*id);
    pending_.emplace(*id, std::move(f));
  }

  // A task with no result long past any of the plan's bounds is lost: a
  // defect of the dispatcher or the client. It is reported and forgotten (a
  // result that comes later counts as a duplicate).
  void give_up_stale() {
    const std::int64_t now = now_ns();
    for (auto it = pending_.begin(); it != pending_.end();) {
      if (now - it->second.t0 > kTaskBoundNs || now > c_.give_up_ns) {
        report(it->second.task, it->second.index, Got::kLost, true, false, it->second.t0,
               "no result within the soak's bound");
        std::erase(ids_, it->first);
        it = pending_.erase(it);
      } else {
        ++it;
      }
    }
  }

  // Waits for one result, at most until `until` (0: 20 ms) or 20 ms,
  // whichever is first.
  void take_one(std::int64_t until) {
    std::int64_t wait = 20 * kMs;
    if (until != 0) wait = std::min(wait, until - now_ns());
    wait = std::max<std::int64_t>(wait, kMs);
    auto got = client_->wait_any_for(ids_, std::chrono::milliseconds(wait / kMs));
    if (!got) return;
    auto it = pending_.find(got->first);
    if (it == pending_.end()) {
      c_.out("X duplicate or unknown result for task id " + std::to_string(got->first) + ": " +
             got->second.describe().substr(0, 100) + "\n");
      return;
    }
    InFlight f = std::move(it->second);
    pending_.erase(it);
    std::erase(ids_, got->first);
    const ipc::TaskResult& r = got->second;
    if (r.outcome() == ipc::Outcome::kDisconnected) broken_ = true;
    report(f.task, f.index, got_of(r.outcome()), true, verify(f.task, r), f.t0, r.message());
    f.arg.reset();
    if (c_.hold_results && r.region_size() > 0) {
      held_.push_back(std::move(got->second));
      if (held_.size() > kHeld) held_.pop_front();
      c_.out("H " + std::to_string(held_.size()) + "\n");
    }
  }

  // After a disconnect every pending task ends disconnected (the Client
  // says so for each); take them all, then the Client can go.
  void drain_disconnected() {
    const std::int64_t bound = now_ns() + 20'000 * kMs;
    while (!pending_.empty() && now_ns() < bound) take_one(0);
    for (auto& [id, f] : pending_)
      report(f.task, f.index, Got::kLost, true, false, f.t0, "no result 20 s after the connection was lost");
    pending_.clear();
    ids_.clear();
  }

  const ClientConfig& c_;
  std::unique_ptr<ipc::Client> client_;
  Canceller canceller_;  // after client_: stopped before that goes
  std::int64_t conn_t_ = 0;
  bool broken_ = false;
  std::map<ipc::TaskId, InFlight> pending_;
  std::vector<ipc::TaskId> ids_;
  std::deque<ipc::TaskResult> held_;
};

}  // namespace

int run_client(const ClientConfig& config) noexcept {
  try {
    Runner r(config);
    return r.run();
  } catch (const std::exception& e) {
    config.out(std::string("E ") + e.what() + "\n");
    return 1;
  }
}

}  // namespace kura::soak
