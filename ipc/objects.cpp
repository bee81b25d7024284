// The dispatcher's side of objects that follow names (docs/design.md): it
// sends a remote worker the bytes behind a name of the task it runs, and
// receives the result region the worker sends back, written for the task's
// client. Everything here runs on the loop thread but the work of size
// O(region) (rebasing a sub-tree, checking a pushed region), which runs on
// libuv's thread pool while the loop serves everyone else (off_loop).
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

void Dispatcher::Core::off_loop(std::function<void()> work, std::function<void()> done) {
  struct Job {
    uv_work_t req{};
    Core* core = nullptr;
    std::function<void()> work;
    std::function<void()> done;
  };
  auto job = std::make_unique<Job>();
  job->core = this;
  job->work = std::move(work);
  job->done = std::move(done);
  job->req.data = job.get();
  // uv_queue_work fails only without a work callback; the loop waits for
  // the job before it ends, whatever stops meanwhile.
  KURA_CHECK(uv_queue_work(
                 &loop, &job->req, [](uv_work_t* req) { static_cast<Job*>(req->data)->work(); },
                 [](uv_work_t* req, int) {
                   std::unique_ptr<Job> j(static_cast<Job*>(req->data));
                   j->core->guarded([&] { j->done(); });
                 }) == 0);
  (void)job.release();
}

void Dispatcher::Core::on_pull(Worker& w, Frame&& f) {
  auto pull = detail::decode_pull(f.payload);
  if (!pull) return drop(w.conn, pull.status().message());
  const TaskKey key = f.header.id;
  // Only a name of the task the worker runs now: a worker cannot read a
  // region by guessing its name.
  if (key == 0 || w.running() != key) return drop(w.conn, "pull: a name of a task it does not run");
  // A worker waits for the answer before it pulls again.
  if (w.preparing != 0) return drop(w.conn, "pull: another pull before the answer to the last");
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
  auto name = parse_name(pull->name);
  if (!name || name->path.empty()) {
    auto served = std::make_shared<const Served>(Served{*m, std::nullopt});
    return start_sending(w, key, served->mapped, served, info);
  }
  // A path-form name gets the addressed sub-tree alone, in a region of its
  // own: the worker never holds bytes of the rest of the region. The copy
  // is made off the loop; a task that ends meanwhile (w.preparing is
  // reset) drops it, and with it the region.
  struct Rebase {
    shm::Mapped source;
    std::shared_ptr<Served> served;
    std::string error;
  };
  auto job = std::make_shared<Rebase>(Rebase{*m, nullptr, {}});
  const std::uint64_t peer = w.conn->id;
  const std::uint64_t ticket = next_job++;
  w.preparing = ticket;
  off_loop(
      [job] {
        try {
          auto value = to_value(job->source.node());
          auto copy = value ? shm::share(*value) : Result<shm::Shared>(value.status());
          auto mapped = copy ? copy->map() : Result<shm::Mapped>(copy.status());
          if (!mapped) {
            job->error = mapped.status().to_string();
            return;
          }
          job->served = std::make_shared<Served>(Served{*mapped, std::move(copy).value()});
        } catch (const std::bad_alloc&) {
          job->error = Status::out_of_memory().to_string();
        }
      },
      [this, job, peer, ticket, key, name = pull->name, info]() mutable {
        auto it = workers.find(peer);
        if (it == workers.end() || it->second.preparing != ticket || stopping) return;
        Worker& wk = it->second;
        wk.preparing = 0;
        if (!job->error.empty() || tasks.find(key) == tasks.end()) {
          info.message = !job->error.empty()
                             ? "cannot make a region of the sub-tree " + name + ": " + job->error
                             : "the task ended (cancelled or timed out)";
          return send_object_info(wk, key, info);
        }
        start_sending(wk, key, job->served->mapped, job->served, info);
      });
}

void Dispatcher::Core::start_sending(Worker& w, TaskKey key, const shm::Mapped& mapped,
                                     std::shared_ptr<const void> keep, detail::ObjectInfo info) {
  const auto bytes = mapped.region().bytes();
  info.size = bytes.size();
  info.checksums = !mapped.region().hashed();
  send_object_info(w, key, info);
  w.sending = std::make_unique<detail::OutgoingTransfer>(key, bytes, std::move(keep), info.checksums);
  pump_pull(w);
}

void Dispatcher::Core::pump_pull(Worker& w) {
  const std::uint64_t before = w.sending->sent();
  const Status s = w.sending->pump(*w.conn->sender());
  pulled_bytes += w.sending->sent() - before;
  if (!s) drop(w.conn, "pull: " + s.message());
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
  pump_pull(w);
}

void Dispatcher::Core::on_push(Worker& w, Frame&& f) {
  auto push = detail::decode_push(f.payload);
  if (!push) return drop(w.conn, push.status().message());
  const TaskKey key = f.header.id;
  if (key == 0 || w.running() != key || w.push_id != 0 || w.checking != 0)
    return drop(w.conn, "push: not for the task it runs");
  discard_pushed(w);
  w.push_id = key;
  w.push_left = push->size;
  auto lease = shm::Lease::hold(w.running_task_owner());
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
  const std::uint64_t id = w.push_id;
  const std::string error = std::move(w.push_error);
  std::unique_ptr<detail::IncomingTransfer> in = std::move(w.receiving);
  w.push_id = 0;
  w.push_left = 0;
  w.push_error.clear();
  if (!in) {
    detail::Stored stored;
    stored.message = error;
    return send_stored(w, id, stored);
  }
  // The whole region is checked off the loop. Until the check ends the
  // worker may not push again (w.checking); a task that ends meanwhile
  // (w.checking is reset) or a worker that leaves has the region removed
  // when the check ends, so that it is either named to the worker or gone.
  struct Check {
    std::unique_ptr<detail::IncomingTransfer> in;
    Result<shm::Shared> published = Status(Code::kIo, "not checked");
  };
  auto job = std::make_shared<Check>(Check{std::move(in), Status(Code::kIo, "not checked")});
  const std::uint64_t peer = w.conn->id;
  const std::uint64_t owner = w.running_task_owner();
  const std::uint64_t ticket = next_job++;
  w.checking = ticket;
  off_loop(
      [job] {
        job->published = std::move(*job->in).publish();
        job->in.reset();
      },
      [this, job, peer, owner, ticket, id] {
        std::string name = job->published ? job->published->disown() : "";
        auto it = workers.find(peer);
        if (it == workers.end() || it->second.checking != ticket || stopping) {
          if (!name.empty()) (void)shm::remove(name);
          // A client that left while its result was checked could not be
          // pruned while the check held its lease.
          if (owner != 0 && clients_of_owner(owner) == 0 && !stopping) prune_owner(owner, 0);
          return;
        }
        Worker& wk = it->second;
        wk.checking = 0;
        detail::Stored stored;
        if (!name.empty()) {
          stored.name = name;
          wk.pushed = name;
        } else {
          stored.message = "the result received is not kept: " + job->published.status().to_string();
        }
        send_stored(wk, id, stored);
      });
}

void Dispatcher::Core::send_stored(Worker& w, std::uint64_t id, const detail::Stored& stored) {
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
  w.preparing = 0;
  w.checking = 0;
  w.push_id = 0;
  w.push_left = 0;
  w.push_error.clear();
  if (w.pushed != result) discard_pushed(w);
  w.pushed.clear();
}

}  // namespace kura::ipc
