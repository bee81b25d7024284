// Taking results: wait, wait_for, wait_any*, wait_all, map (a window of
// tasks in flight), and the reserved tasks of map and Pipeline (results only
// their holder may take, dropped when released).
#include <algorithm>
#include <new>

#include "client_internal.hpp"

namespace kura::ipc {

namespace {

// Tasks map() keeps in flight (sent and not ended) at once.
constexpr std::size_t kMapWindow = 256;
// map() refills its window once this many places are free (or none of its
// tasks is in flight): one write of many submits instead of one per result,
// and the dispatcher reads them at once.
constexpr std::size_t kMapRefill = 32;

}  // namespace

// Takes the result of ended task `id`. REQUIRES: mu held, the task ended.
TaskResult Client::Impl::take(TaskId id) {
  auto it = tasks.find(id);
  TaskResult r = std::move(it->second.result);
  tasks.erase(it);
  auto a = std::find(arrived.begin(), arrived.end(), id);
  if (a != arrived.end()) arrived.erase(a);
  return r;
}

std::uint64_t Client::Impl::reserve() {
  std::lock_guard<std::mutex> lock(mu);
  return next_reservation++;
}

// Lets go of the tasks of `reservation`: results not taken are dropped now,
// those of tasks still pending when they arrive.
void Client::Impl::release(std::uint64_t reservation) {
  std::vector<TaskResult> dropped;  // their regions are unlinked outside `mu`
  {
    std::lock_guard<std::mutex> lock(mu);
    for (auto it = tasks.begin(); it != tasks.end();) {
      Task& t = it->second;
      if (t.reservation != reservation || t.setup) {
        ++it;
        continue;
      }
      if (t.state != State::kDone) {
        t.abandoned = true;
        ++it;
        continue;
      }
      dropped.push_back(std::move(t.result));
      auto a = std::find(arrived.begin(), arrived.end(), it->first);
      if (a != arrived.end()) arrived.erase(a);
      it = tasks.erase(it);
    }
  }
}

// Waits for task `id` (of `reservation`) until `deadline` (none: for
// ever); nullopt when it passed.
std::optional<TaskResult> Client::Impl::wait_one(std::uint64_t reservation, TaskId id,
                                                 std::optional<Clock::time_point> deadline) {
  if (on_reader_thread()) return TaskResult(Outcome::kError, from_callback("wait()").message());
  std::unique_lock<std::mutex> lock(mu);
  auto it = tasks.find(id);
  if (it == tasks.end() || !takeable(it->second, reservation))
    return TaskResult(Outcome::kError, "no pending task " + std::to_string(id));
  // Another thread may take it first (a wait or wait_any of its own).
  auto ended = [&] { return state_of(id) == State::kDone; };
  if (!events.wait_until(lock, deadline, ended)) return std::nullopt;
  if (tasks.count(id) == 0)
    return TaskResult(Outcome::kError, "task " + std::to_string(id) + " was taken by another wait");
  return take(id);
}

// Waits for the first task of `reservation` (among `ids` when given) to
// end, until `deadline` (none: for ever); nullopt when it passed.
std::optional<std::pair<TaskId, TaskResult>> Client::Impl::wait_any(
    std::uint64_t reservation, const std::span<const TaskId>* ids,
    std::optional<Clock::time_point> deadline) {
  const char* none = ids != nullptr ? "none of the tasks is pending" : "no task is pending";
  if (on_reader_thread())
    return std::pair<TaskId, TaskResult>{0,
                                         TaskResult(Outcome::kError, from_callback("wait_any()").message())};
  std::unique_lock<std::mutex> lock(mu);
  auto mine = [&](TaskId id) {
    auto it = tasks.find(id);
    if (it == tasks.end() || !takeable(it->second, reservation)) return false;
    return ids == nullptr || std::find(ids->begin(), ids->end(), id) != ids->end();
  };
  auto pending = [&] {
    if (ids != nullptr) return std::any_of(ids->begin(), ids->end(), mine);
    for (const auto& [id, t] : tasks)
      if (takeable(t, reservation)) return true;
    return false;
  };
  if (!pending()) return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, none)};
  TaskId found = 0;
  // Another thread may take the tasks meanwhile: then none is left.
  auto ready = [&] {
    for (TaskId a : arrived)
      if (mine(a)) {
        found = a;
        return true;
      }
    return !pending();
  };
  if (!events.wait_until(lock, deadline, ready)) return std::nullopt;
  if (found == 0) return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, none)};
  return std::pair<TaskId, TaskResult>{found, take(found)};
}

TaskResult Client::wait(TaskId id) noexcept {
  try {
    return *impl_->wait_one(0, id, std::nullopt);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::optional<TaskResult> Client::wait_for(TaskId id, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_one(0, id, Impl::Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::pair<TaskId, TaskResult> Client::wait_any() noexcept {
  try {
    return *impl_->wait_any(0, nullptr, std::nullopt);
  } catch (const std::bad_alloc&) {
    return {0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::pair<TaskId, TaskResult> Client::wait_any(std::span<const TaskId> ids) noexcept {
  try {
    return *impl_->wait_any(0, &ids, std::nullopt);
  } catch (const std::bad_alloc&) {
    return {0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::optional<std::pair<TaskId, TaskResult>> Client::wait_any_for(
    std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_any(0, &ids, Impl::Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, "out of memory")};
  }
}

std::vector<TaskResult> Client::wait_all(std::span<const TaskId> ids) noexcept {
  std::vector<TaskResult> out;
  try {
    out.reserve(ids.size());
    for (TaskId id : ids) out.push_back(wait(id));
  } catch (const std::bad_alloc&) {
    out.clear();
  }
  return out;
}

Result<MapResult> Client::map(const std::string& fn, std::span<const std::vector<Arg>> inputs,
                              const TaskOptions& options,
                              const std::function<void(std::size_t, std::size_t)>& progress) noexcept {
  if (impl_->on_reader_thread()) return Impl::from_callback("map()");
  Impl& im = *impl_;
  const std::uint64_t reservation = im.reserve();
  // However map ends, it lets go of its tasks (results not taken are dropped).
  struct Release {
    Impl& im;
    std::uint64_t reservation;
    ~Release() { im.release(reservation); }
  } release{im, reservation};
  try {
    const std::size_t total = inputs.size();
    MapResult out;
    out.results.resize(total);
    std::unordered_map<TaskId, std::size_t> index;  // in flight -> input
    Impl::Ready ready;                              // encoded, not sent yet
    std::size_t next = 0, done = 0;
    bool stop = false;
    auto not_run = [] { return TaskResult(Outcome::kCancelled, "not run: an earlier task failed"); };
    // Input `i` ended with `r`, which is not ok: the first such stops the map.
    auto fail_at = [&](std::size_t i, TaskResult r) {
      out.results[i] = std::move(r);
      ++done;
      if (stop) return;
      stop = true;
      out.failed = i;
      for (const auto& [other, j] : index) (void)im.write_frame(FrameType::kCancel, 0, other, nullptr);
      for (const auto& [j, payload] : ready) {
        out.results[j] = not_run();
        ++done;
      }
      ready.clear();
      for (; next < total; ++next, ++done) out.results[next] = not_run();
    };
    while (done < total) {
      // Fill the window when enough of it is free, and send what may be
      // sent now, in one write.
      const bool refill = index.empty() || index.size() + ready.size() + kMapRefill <= kMapWindow;
      while (refill && !stop && next < total && index.size() + ready.size() < kMapWindow) {
        auto payload = im.encode(Call{fn, inputs[next]}, options);
        const std::size_t i = next++;
        if (!payload) {
          fail_at(i, TaskResult(Outcome::kError, payload.status().message()));
          break;
        }
        ready.emplace_back(i, std::move(payload).value());
      }
      if (!ready.empty()) {
        auto ids = im.start_many(ready, reservation);
        if (!ids) {
          for (const auto& [id, j] : index) (void)im.write_frame(FrameType::kCancel, 0, id, nullptr);
          return ids.status();
        }
        for (TaskId id : *ids) {
          index[id] = ready.front().first;
          ready.pop_front();
        }
      }
      if (done == total) break;
      // Wait for results, or for room to send more.
      std::vector<std::pair<std::size_t, TaskResult>> arrived;
      {
        std::unique_lock<std::mutex> lock(im.mu);
        auto any_arrived = [&] {
          for (TaskId a : im.arrived)
            if (index.count(a) != 0) return true;
          return false;
        };
        im.events.wait_until(lock, std::nullopt, [&] {
          return any_arrived() || (!ready.empty() && (im.may_send() || im.closed));
        });
        for (auto a = im.arrived.begin(); a != im.arrived.end();) {
          auto hit = index.find(*a);
          if (hit == index.end()) {
            ++a;
            continue;
          }
          auto t = im.tasks.find(*a);
          arrived.emplace_back(hit->second, std::move(t->second.result));
          im.tasks.erase(t);
          index.erase(hit);
          a = im.arrived.erase(a);
        }
      }
      for (auto& [i, r] : arrived) {
        if (!r.ok()) {
          fail_at(i, std::move(r));
        } else {
          out.results[i] = std::move(r);
          ++done;
        }
      }
      if (progress && !arrived.empty()) progress(done, total);
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

std::uint64_t Client::reserve() noexcept {
  return impl_->reserve();
}

void Client::release(std::uint64_t reservation) noexcept {
  try {
    impl_->release(reservation);
  } catch (const std::bad_alloc&) {
    // The dropped results could not be gathered: they stay until the Client goes.
  }
}

Result<TaskId> Client::submit_reserved(std::uint64_t reservation, const Call& call,
                                       const TaskOptions& options) noexcept {
  try {
    return impl_->submit(call, options, reservation);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

TaskResult Client::wait_reserved(std::uint64_t reservation, TaskId id) noexcept {
  try {
    return *impl_->wait_one(reservation, id, std::nullopt);
  } catch (const std::bad_alloc&) {
    return TaskResult(Outcome::kError, "out of memory");
  }
}

std::optional<std::pair<TaskId, TaskResult>> Client::wait_any_reserved_for(
    std::uint64_t reservation, std::span<const TaskId> ids, std::chrono::milliseconds timeout) noexcept {
  try {
    return impl_->wait_any(reservation, &ids, Impl::Clock::now() + timeout);
  } catch (const std::bad_alloc&) {
    return std::pair<TaskId, TaskResult>{0, TaskResult(Outcome::kError, "out of memory")};
  }
}

}  // namespace kura::ipc
