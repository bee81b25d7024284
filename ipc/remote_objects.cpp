// A worker on another host: the bytes behind its tasks' names, pulled from
// the dispatcher and cached, and its results pushed back
// (worker_internal.hpp).
#include <string>

#include "transfer_internal.hpp"
#include "worker_internal.hpp"

namespace kura::ipc::detail {

namespace {

// Chunks the loop may hold for the executor: the dispatcher keeps at most
// kTransferWindow bytes unacknowledged, so more is a broken peer.
constexpr std::size_t kMaxQueuedChunks = kTransferWindow / kChunkData + 2;

Status cancelled_or_lost(bool lost) {
  return Status(Code::kIo, lost ? "the connection to the dispatcher was lost" : "cancelled");
}

}  // namespace

void RemoteObjects::attach(std::shared_ptr<Sender> sender) {
  std::lock_guard<std::mutex> lock(mu_);
  sender_ = std::move(sender);
  lost_ = false;
}

void RemoteObjects::wake() {
  std::lock_guard<std::mutex> lock(mu_);
  cv_.notify_all();
}

void RemoteObjects::lost() {
  std::lock_guard<std::mutex> lock(mu_);
  lost_ = true;
  cv_.notify_all();
}

std::uint64_t RemoteObjects::pulled() const {
  std::lock_guard<std::mutex> lock(mu_);
  return pulled_;
}

Status RemoteObjects::on_frame(Frame&& f) {
  std::lock_guard<std::mutex> lock(mu_);
  const std::uint64_t id = f.header.id;
  switch (f.header.type) {
    case FrameType::kObject: {
      if (id == 0 || id != pull_task_ || info_) return corrupt("an object answer to no pull");
      KURA_ASSIGN_OR_RETURN(info_, decode_object(f.payload));
      break;
    }
    case FrameType::kChunk: {
      // The chunks of a pull the executor gave up (its task was cancelled,
      // or a chunk was damaged) still arrive, up to the window: dropped.
      if (id == 0 || id != pull_task_ || !info_) return Status::ok();
      if (chunks_.size() >= kMaxQueuedChunks) return corrupt("chunks beyond the transfer window");
      chunks_.push_back(std::move(f));
      break;
    }
    case FrameType::kAck: {
      KURA_ASSIGN_OR_RETURN(std::uint64_t received, decode_ack(f.payload));
      if (id == 0 || id != push_task_) return Status::ok();
      acked_ = received;
      break;
    }
    case FrameType::kStored: {
      if (id == 0 || id != push_task_ || stored_) return corrupt("a stored answer to no push");
      KURA_ASSIGN_OR_RETURN(stored_, decode_stored(f.payload));
      break;
    }
    default: return corrupt("not a frame of an object transfer");
  }
  cv_.notify_all();
  return Status::ok();
}

template <class Pred>
bool RemoteObjects::wait(std::unique_lock<std::mutex>& lock, std::uint64_t task, Pred ready) {
  cv_.wait(lock, [&] { return ready() || lost_ || cancelled_before_start(task); });
  return ready();
}

Result<std::shared_ptr<Sender>> RemoteObjects::connected() const {
  std::lock_guard<std::mutex> lock(mu_);
  if (!sender_) return Status(Code::kIo, "not connected to the dispatcher");
  return sender_;
}

Status RemoteObjects::send(Sender& sender, FrameType type, std::uint64_t id, Result<Bytes> payload) {
  if (!payload) return payload.status();
  return sender.send(type, 0, id, std::make_shared<const Bytes>(std::move(payload).value()));
}

Result<shm::Mapped> RemoteObjects::fetch(std::uint64_t task, const std::string& name, std::string* local) {
  // Whatever happens below, the pull ends with this call: later frames of
  // it are dropped. (Made before the lock, so that it ends after it.)
  struct End {
    RemoteObjects* self;
    ~End() {
      std::lock_guard<std::mutex> l(self->mu_);
      self->pull_task_ = 0;
      self->info_.reset();
      self->chunks_.clear();
    }
  } end{this};
  KURA_ASSIGN_OR_RETURN(std::shared_ptr<Sender> sender, connected());
  std::unique_lock<std::mutex> lock(mu_);
  auto cached = cache_.find(name);
  const std::uint64_t have = cached != cache_.end() ? cached->second.identity : 0;
  pull_task_ = task;
  info_.reset();
  chunks_.clear();
  lock.unlock();
  KURA_RETURN_IF_ERROR(send(*sender, FrameType::kPull, task, encode_pull(Pull{name, have})));
  lock.lock();
  if (!wait(lock, task, [&] { return info_.has_value(); })) return cancelled_or_lost(lost_);
  const ObjectInfo info = *info_;
  if (!info.message.empty())
    return Status(Code::kNotFound, "the dispatcher cannot send " + name + ": " + info.message);
  if (info.unchanged) {
    cached = cache_.find(name);
    if (cached == cache_.end() || !cached->second.copy)
      return corrupt("the dispatcher called a copy current that is not here");
    cached->second.last_use = ++clock_;
    *local = cached->second.copy->name();
    return cached->second.copy->map();
  }
  lock.unlock();
  auto started = IncomingTransfer::start(task, info.size, info.checksums, nullptr);
  if (!started)
    return Status(started.status().code(), "this host's copy of " + name + ": " + started.status().message(),
                  started.status().sys_errno());
  IncomingTransfer in = std::move(started).value();
  while (!in.complete()) {
    lock.lock();
    if (!wait(lock, task, [&] { return !chunks_.empty(); })) return cancelled_or_lost(lost_);
    Frame f = std::move(chunks_.front());
    chunks_.pop_front();
    lock.unlock();
    auto received = in.on_chunk(f.payload);
    if (!received)
      return Status(Code::kCorrupt,
                    "the bytes of " + name + " were damaged on their way: " + received.status().message());
    KURA_RETURN_IF_ERROR(send(*sender, FrameType::kAck, task, encode_ack(*received)));
  }
  KURA_ASSIGN_OR_RETURN(shm::Shared copy, std::move(in).publish());
  KURA_ASSIGN_OR_RETURN(shm::Mapped mapped, copy.map());
  *local = copy.name();
  lock.lock();
  pulled_ += info.size;
  remember(name, info.identity, std::move(copy));
  return mapped;
}

// REQUIRES: mu_ held.
void RemoteObjects::remember(const std::string& name, std::uint64_t identity, shm::Shared copy) {
  if (auto old = cache_.find(name); old != cache_.end()) {
    used_ -= old->second.copy ? old->second.copy->size() : 0;
    cache_.erase(old);
  }
  used_ += copy.size();
  Entry& e = cache_[name];
  e.identity = identity;
  e.copy.emplace(std::move(copy));
  e.last_use = ++clock_;
  // Least recently used out, never the copy just made (its task maps it;
  // one over the bound alone is dropped at the next pull).
  while (used_ > cache_bytes_ && cache_.size() > 1) {
    auto oldest = cache_.end();
    for (auto it = cache_.begin(); it != cache_.end(); ++it)
      if (it->first != name && (oldest == cache_.end() || it->second.last_use < oldest->second.last_use))
        oldest = it;
    used_ -= oldest->second.copy->size();
    cache_.erase(oldest);
  }
}

Result<std::string> RemoteObjects::push(std::uint64_t task, const shm::Mapped& region) {
  const auto bytes = region.region().bytes();
  const bool checksums = !region.region().hashed();
  {
    std::lock_guard<std::mutex> lock(mu_);
    push_task_ = task;
    acked_ = 0;
    stored_.reset();
  }
  struct End {
    RemoteObjects* self;
    ~End() {
      std::lock_guard<std::mutex> l(self->mu_);
      self->push_task_ = 0;
      self->stored_.reset();
    }
  } end{this};
  KURA_ASSIGN_OR_RETURN(std::shared_ptr<Sender> sender, connected());
  KURA_RETURN_IF_ERROR(send(*sender, FrameType::kPush, task, encode_push(PushInfo{bytes.size(), checksums})));
  OutgoingTransfer out(task, bytes, std::make_shared<shm::Mapped>(region), checksums);
  KURA_RETURN_IF_ERROR(out.pump(*sender));
  std::unique_lock<std::mutex> lock(mu_);
  while (!out.done()) {
    std::uint64_t seen = acked_;
    KURA_RETURN_IF_ERROR(out.on_ack(seen));
    if (out.done()) break;
    lock.unlock();
    KURA_RETURN_IF_ERROR(out.pump(*sender));
    lock.lock();
    if (!wait(lock, task, [&] { return acked_ != seen; })) return cancelled_or_lost(lost_);
  }
  if (!wait(lock, task, [&] { return stored_.has_value(); })) return cancelled_or_lost(lost_);
  if (!stored_->message.empty())
    return Status(Code::kIo, "the dispatcher did not keep the result: " + stored_->message);
  return stored_->name;
}

}  // namespace kura::ipc::detail
