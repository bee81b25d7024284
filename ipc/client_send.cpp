// What calling threads send through the connection's Sender: tasks
// (submit, try_submit, everywhere, and the frames of map), cancels and
// status queries.
#include <new>

#include "client_internal.hpp"

namespace kura::ipc {

// Writes frames from the calling thread through the connection's one
// write path (the transport's Sender: frames of one call are contiguous,
// and written at once when the socket takes them). Errors: Io.
Status Client::Impl::write_frame(FrameType type, std::uint16_t flags, std::uint64_t id,
                                 std::shared_ptr<const Bytes> payload) {
  const detail::OutgoingFrame f{type, flags, id, std::move(payload), {}, {}};
  return write_frames(std::span<const detail::OutgoingFrame>(&f, 1));
}
Status Client::Impl::write_frames(std::span<const detail::OutgoingFrame> frames) {
  std::shared_ptr<detail::Sender> out;
  {
    std::lock_guard<std::mutex> lock(mu);
    out = sender;
  }
  if (!out) return disconnected();
  std::uint64_t bytes = 0;
  for (const auto& f : frames) bytes += kFrameHeaderSize + (f.payload ? f.payload->size() : 0);
  KURA_RETURN_IF_ERROR(out->send_many(frames));
  sent += bytes;
  return Status::ok();
}

Status Client::Impl::too_large(std::size_t size) const {
  return invalid_argument("the task is " + human_bytes(size) + ", over the frame limit of " +
                          human_bytes(frame_limit) + ": share large values and pass their names");
}

// Registers new blocking submits of `reservation` for the first payloads of
// `ready`, as many as may be sent now (see may_send), and writes them in
// one go; returns their ids, in order (maybe none).
Result<std::vector<TaskId>> Client::Impl::start_many(const Ready& ready, std::uint64_t reservation) {
  std::vector<TaskId> ids;
  std::vector<detail::OutgoingFrame> frames;
  {
    std::lock_guard<std::mutex> lock(mu);
    if (closed) return disconnected();
    for (const auto& [input, p] : ready)
      if (p->size() > frame_limit) return too_large(p->size());
    for (const auto& [input, p] : ready) {
      if (!may_send()) break;
      const TaskId id = next_id++;
      Task& t = tasks[id];
      t.reservation = reservation;
      if (queue_cap > 0) {
        t.counted = true;
        ++parked;
      }
      ids.push_back(id);
      frames.push_back(detail::OutgoingFrame{FrameType::kSubmit, 0, id, p, {}, {}});
    }
  }
  if (frames.empty()) return ids;
  Status s = write_frames(frames);
  if (!s) {
    forget(ids);
    return s;
  }
  return ids;
}

// Registers a new task and writes its frame; returns its id. A blocking
// submit first waits (in the client, before its frame is written) while
// kMaxParkedSubmits others wait for room. The frame is written outside
// `mu`, so results keep arriving meanwhile.
Result<TaskId> Client::Impl::start(const std::shared_ptr<const Bytes>& payload, std::uint16_t flags,
                                   FrameType type, bool setup, std::uint64_t reservation) {
  TaskId id;
  {
    std::unique_lock<std::mutex> lock(mu);
    if (closed) return disconnected();
    if (payload->size() > frame_limit) return too_large(payload->size());
    const bool counted = type == FrameType::kSubmit && (flags & kFlagTry) == 0 && queue_cap > 0;
    if (counted) {
      events.wait_until(lock, std::nullopt, [&] { return closed || may_send(); });
      if (closed) return disconnected();
      ++parked;
    }
    id = next_id++;
    Task& t = tasks[id];
    t.setup = setup;
    t.counted = counted;
    t.reservation = reservation;
  }
  Status s = write_frame(type, flags, id, payload);
  if (!s) {
    const TaskId one[] = {id};
    forget(one);
    return s;
  }
  return id;
}

// Forgets tasks whose frames could not be written.
void Client::Impl::forget(std::span<const TaskId> ids) {
  {
    std::lock_guard<std::mutex> lock(mu);
    for (TaskId id : ids) {
      auto it = tasks.find(id);
      if (it == tasks.end()) continue;
      settle(it->second);
      tasks.erase(it);
    }
  }
  events.notify_all();
}

Result<std::shared_ptr<const Bytes>> Client::Impl::encode(const Call& call, const TaskOptions& options) {
  KURA_ASSIGN_OR_RETURN(Bytes b, detail::encode_submit(call, owner, options));
  return std::make_shared<const Bytes>(std::move(b));
}

// Submits `call` for `reservation`; with a cap, returns once the task is
// admitted (or has ended).
Result<TaskId> Client::Impl::submit(const Call& call, const TaskOptions& options, std::uint64_t reservation) {
  if (queue_cap > 0 && on_reader_thread()) return from_callback("submit() with a byte cap");
  KURA_ASSIGN_OR_RETURN(auto payload, encode(call, options));
  KURA_ASSIGN_OR_RETURN(TaskId id, start(payload, 0, FrameType::kSubmit, false, reservation));
  if (queue_cap > 0) {
    std::unique_lock<std::mutex> lock(mu);
    events.wait_until(lock, std::nullopt, [&] { return state_of(id) != State::kSent; });
  }
  return id;
}

Result<TaskId> Client::submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    return impl_->submit(call, options, 0);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::optional<TaskId>> Client::try_submit(const Call& call, const TaskOptions& options) noexcept {
  try {
    if (impl_->on_reader_thread()) return Impl::from_callback("try_submit()");
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, options));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(payload, kFlagTry, FrameType::kSubmit, false, 0));
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->events.wait_until(lock, std::nullopt, [&] { return impl_->state_of(id) != Impl::State::kSent; });
    if (impl_->state_of(id) == Impl::State::kFull) {
      impl_->tasks.erase(id);
      return std::optional<TaskId>();
    }
    return std::optional<TaskId>(id);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status Client::cancel(TaskId id) noexcept {
  {
    std::lock_guard<std::mutex> lock(impl_->mu);
    if (impl_->closed) return impl_->disconnected();
    auto it = impl_->tasks.find(id);
    if (it == impl_->tasks.end() || it->second.state == Impl::State::kDone) return Status::ok();
  }
  return impl_->write_frame(FrameType::kCancel, 0, id, nullptr);
}

Status Client::everywhere(const Call& call) noexcept {
  try {
    if (impl_->on_reader_thread()) return Impl::from_callback("everywhere()");
    KURA_ASSIGN_OR_RETURN(auto payload, impl_->encode(call, TaskOptions{}));
    KURA_ASSIGN_OR_RETURN(TaskId id, impl_->start(payload, 0, FrameType::kEverywhere, true, 0));
    std::unique_lock<std::mutex> lock(impl_->mu);
    impl_->events.wait_until(lock, std::nullopt, [&] { return impl_->state_of(id) == Impl::State::kDone; });
    TaskResult r = impl_->take(id);
    if (r.ok()) return Status::ok();
    if (r.outcome() == Outcome::kDisconnected)
      return Status(Code::kIo, "everywhere(" + call.fn + "): " + r.message());
    return invalid_argument("everywhere(" + call.fn + ") failed on a worker: " + r.message());
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<DispatcherStatus> Client::status() noexcept {
  try {
    if (impl_->on_reader_thread()) return Impl::from_callback("status()");
    std::uint64_t id;
    {
      std::lock_guard<std::mutex> lock(impl_->mu);
      if (impl_->closed) return impl_->disconnected();
      id = impl_->next_id++;
      impl_->queries[id];
    }
    Status s = impl_->write_frame(FrameType::kStatusQuery, 0, id, nullptr);
    std::unique_lock<std::mutex> lock(impl_->mu);
    if (!s) {
      impl_->queries.erase(id);
      return s;
    }
    // Looked up each time: other queries come and go meanwhile.
    impl_->events.wait_until(lock, std::nullopt, [&] { return impl_->queries.find(id)->second.has_value(); });
    auto it = impl_->queries.find(id);
    Result<DispatcherStatus> r = std::move(*it->second);
    impl_->queries.erase(it);
    return r;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc
