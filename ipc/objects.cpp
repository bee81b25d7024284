// The dispatcher's side of objects that follow names (docs/design.md): it
// sends a remote worker the bytes behind a name of the task it runs, and
// receives the result region the worker sends back, written for the task's
// client. Everything here runs on the loop thread.
#include "dispatcher_internal.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/region.hpp"
#include "transfer_internal.hpp"

namespace kura::ipc {

using detail::TaskKey;

namespace {

// What a pull sends: the mapped region (or a rebased copy of the addressed
// sub-tree, which is removed once it is sent), kept alive while its chunks
// are written.
struct Served {
  shm::Mapped mapped;
  std::optional<shm::Shared> copy;
};

}  // namespace

void Dispatcher::Core::send_object_info(Worker& w, std::uint64_t id, const detail::ObjectInfo& info) {
  auto bytes = detail::encode_object(info);
  if (!bytes) return drop(w.conn, "cannot encode an object answer: " + bytes.status().message());
  w.conn->send(FrameType::kObject, 0, id, std::make_shared<const Bytes>(std::move(bytes).value()));
}

void Dispatcher::Core::on_pull(Worker& w, Frame&& f) {
  auto pull = detail::decode_pull(f.payload);
  if (!pull) return drop(w.conn, pull.status().message());
  const TaskKey key = f.header.id;
  // Only a name of the task the worker runs now: a worker cannot read a
  // region by guessing its name.
  if (key == 0 || w.running != key) return drop(w.conn, "pull: a name of a task it does not run");
  detail::ObjectInfo info;
  auto t = tasks.find(key);
  if (t == tasks.end()) {
    info.message = "the task ended (cancelled or timed out)";
    return send_object_info(w, key, info);
  }
  auto submit = detail::decode_submit(t->second.payload);
  bool named = false;
  if (submit)
    for (const auto& a : submit->args) named = named || (!a.value && a.name == pull->name);
  if (!named) return drop(w.conn, "pull: " + pull->name + " is not an argument of its task");
  ++pulls;
  w.sending.reset();
  auto m = shm::map(pull->name);
  if (!m) {
    info.message = m.status().to_string();
    return send_object_info(w, key, info);
  }
  info.identity = m->region().header().header_hash;
  if (pull->have != 0 && pull->have == info.identity) {
    info.unchanged = true;
    return send_object_info(w, key, info);
  }
  auto served = std::make_shared<Served>(Served{*m, std::nullopt});
  auto name = parse_name(pull->name);
  if (name && !name->path.empty()) {
    // A path-form name gets the addressed sub-tree alone, in a region of
    // its own: the worker never holds bytes of the rest of the region.
    auto value = to_value(m->node());
    auto copy = value ? shm::share(*value) : Result<shm::Shared>(value.status());
    auto mapped = copy ? copy->map() : Result<shm::Mapped>(copy.status());
    if (!mapped) {
      info.message =
          "cannot make a region of the sub-tree " + pull->name + ": " + mapped.status().to_string();
      return send_object_info(w, key, info);
    }
    served->mapped = *mapped;
    served->copy.emplace(std::move(copy).value());
  }
  const auto bytes = served->mapped.region().bytes();
  info.size = bytes.size();
  info.checksums = !served->mapped.region().hashed();
  send_object_info(w, key, info);
  pulled_bytes += bytes.size();
  w.sending = std::make_unique<detail::OutgoingTransfer>(key, bytes, served, info.checksums);
  if (Status s = w.sending->pump(*w.conn->sender()); !s) return drop(w.conn, "pull: " + s.message());
}

void Dispatcher::Core::on_worker_ack(Worker& w, const Frame& f) {
  auto received = detail::decode_ack(f.payload);
  if (!received) return drop(w.conn, received.status().message());
  if (!w.sending || w.sending->id() != f.header.id) return;  // a transfer that ended (its task did)
  if (Status s = w.sending->on_ack(*received); !s) return drop(w.conn, s.message());
  if (w.sending->done()) {
    w.sending.reset();
    return;
  }
  if (Status s = w.sending->pump(*w.conn->sender()); !s) return drop(w.conn, "pull: " + s.message());
}

void Dispatcher::Core::on_push(Worker& w, Frame&& f) {
  auto push = detail::decode_push(f.payload);
  if (!push) return drop(w.conn, push.status().message());
  const TaskKey key = f.header.id;
  if (key == 0 || w.running != key || w.push_id != 0) return drop(w.conn, "push: not for the task it runs");
  discard_pushed(w);
  w.push_id = key;
  w.push_left = push->size;
  auto lease = shm::Lease::hold(w.running_owner);
  auto in = lease ? detail::IncomingTransfer::start(key, push->size, push->checksums, &*lease)
                  : Result<detail::IncomingTransfer>(lease.status());
  if (!in) {
    // The worker sends the chunks anyway: they are counted off and
    // dropped, and the stored answer says why.
    w.push_error = "cannot write the result for the client: " + in.status().to_string();
    if (push->size == 0) finish_push(w);
    return;
  }
  w.receiving = std::make_unique<detail::IncomingTransfer>(std::move(in).value());
}

void Dispatcher::Core::on_worker_chunk(Worker& w, Frame&& f) {
  if (w.push_id == 0 || w.push_id != f.header.id) return drop(w.conn, "chunk: no push of that task");
  auto c = detail::decode_chunk(f.payload, false);
  if (!c) return drop(w.conn, c.status().message());
  if (c->data.size() > w.push_left) return drop(w.conn, "chunk: past the end of its push");
  w.push_left -= c->data.size();
  pushed_bytes += c->data.size();
  if (w.receiving) {
    if (auto r = w.receiving->on_chunk(f.payload); !r) {
      // Damaged in transit: the result is an error; the rest of the push
      // is counted off and dropped.
      w.push_error = "the result was damaged on its way: " + r.status().message();
      w.receiving.reset();
    }
  }
  const std::uint64_t received = c->offset + c->data.size();
  w.conn->send(FrameType::kAck, 0, f.header.id, std::make_shared<const Bytes>(detail::encode_ack(received)));
  if (w.push_left == 0) finish_push(w);
}

void Dispatcher::Core::finish_push(Worker& w) {
  detail::Stored stored;
  if (w.receiving) {
    auto published = std::move(*w.receiving).publish();
    w.receiving.reset();
    if (published) {
      stored.name = published->disown();
      w.pushed = stored.name;
    } else {
      stored.message = "the result received is not kept: " + published.status().to_string();
    }
  } else {
    stored.message = w.push_error;
  }
  const std::uint64_t id = w.push_id;
  w.push_id = 0;
  w.push_left = 0;
  w.push_error.clear();
  auto bytes = detail::encode_stored(stored);
  if (!bytes) return drop(w.conn, "cannot encode a stored answer: " + bytes.status().message());
  w.conn->send(FrameType::kStored, 0, id, std::make_shared<const Bytes>(std::move(bytes).value()));
}

void Dispatcher::Core::discard_pushed(Worker& w) {
  if (!w.pushed.empty()) (void)shm::remove(w.pushed);
  w.pushed.clear();
}

void Dispatcher::Core::end_transfers(Worker& w, const std::string& result) {
  w.sending.reset();
  w.receiving.reset();
  w.push_id = 0;
  w.push_left = 0;
  w.push_error.clear();
  if (w.pushed != result) discard_pushed(w);
  w.pushed.clear();
}

}  // namespace kura::ipc
