// One task on a worker: decode it, map its arguments, call the function, and
// write its result inline or as a region for the client (worker_internal.hpp).
#include <string_view>

#include "kura/core/builder.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/owner.hpp"
#include "worker_internal.hpp"

namespace kura::ipc::detail {

// An error's message can be anything a function says (fail() returns its
// argument): cut to half the frame limit, so that the frame stays under
// the dispatcher's limit, which would otherwise close this connection.
std::shared_ptr<const Bytes> TaskRunner::error_result(Outcome o, const std::string& message) const {
  const std::size_t room = frame_limit_ > 8192 ? frame_limit_ / 2 : 2048;
  std::string_view text = message;
  std::string cut;
  if (text.size() > room) {
    std::size_t n = room;
    while (n > 0 && (static_cast<unsigned char>(text[n]) & 0xC0) == 0x80) --n;  // a whole UTF-8 character
    cut = std::string(text.substr(0, n)) + "... (" + std::to_string(text.size() - n) + " bytes more)";
    text = cut;
  }
  auto p = encode_result(o, text, "", nullptr, timed_ ? &timing_ : nullptr);
  if (!p) p = encode_result(Outcome::kError, "out of memory", "", nullptr);
  return p ? std::make_shared<const Bytes>(std::move(p).value()) : nullptr;
}

Result<std::string> TaskRunner::deliver(std::uint64_t id, shm::Shared region) {
  if (remote_ == nullptr) return region.disown();
  // The region is this worker's, on this host: its bytes go to the
  // dispatcher, which writes them for the client; this copy goes with the
  // handle.
  KURA_ASSIGN_OR_RETURN(shm::Mapped mapped, region.map());
  return remote_->push(id, mapped);
}

std::shared_ptr<const Bytes> TaskRunner::run(std::uint64_t id, const std::shared_ptr<const Bytes>& payload,
                                             bool setup) noexcept {
  try {
    timed_ = false;
    auto s = decode_submit(payload);
    if (!s) return error_result(Outcome::kError, "cannot read the task: " + s.status().message());
    // A traced task reports when it ran (Timing): nothing is measured for
    // any other.
    timed_ = !s->traceparent.empty();
    if (timed_) timing_ = {};
    Function fn = functions().find(s->fn);
    if (!fn)
      return error_result(Outcome::kError, "no function \"" + s->fn +
                                               "\" in this worker (it has: " + functions().names() + ")");
    std::vector<NodeView> args;
    std::vector<std::string> names;
    std::vector<std::string> origins;
    args.reserve(s->args.size());
    names.reserve(s->args.size());
    origins.reserve(s->args.size());
    for (std::size_t i = 0; i < s->args.size(); ++i) {
      const auto& a = s->args[i];
      names.push_back(a.name);
      origins.push_back(a.name);
      if (a.value) {
        args.push_back(*a.value);
        continue;
      }
      auto m = remote_ != nullptr ? remote_->fetch(id, a.name, &names.back()) : shm::map(a.name);
      if (!m)
        return error_result(Outcome::kError,
                            "argument " + std::to_string(i + 1) + ": " + m.status().to_string());
      args.push_back(m->node());
    }
    std::optional<shm::Lease> lease;
    TaskContext::Internals in{&lease, remote_ != nullptr};
    TaskContext ctx = TaskContext::Internals::make(std::move(args), std::move(names), std::move(origins),
                                                   s->owner, s->inline_result, &in);
    Result<Output> out = Status(Code::kIo, "not run");
    if (timed_) timing_.started_ns = wall_ns();
    try {
      out = fn(ctx);
    } catch (const std::bad_alloc&) {
      out = Status::out_of_memory();
    } catch (const std::exception& e) {
      out = Status(Code::kIo, std::string("the function threw: ") + e.what());
    } catch (...) {
      out = Status(Code::kIo, "the function threw an exception of unknown type");
    }
    if (timed_) timing_.returned_ns = timing_.written_ns = wall_ns();
    if (ctx.cancelled()) {
      // Nobody takes the result: a region the function published for the
      // client is removed here (the Shared of another owner never unlinks).
      if (out && out->is_region()) (void)shm::remove(out->region().disown());
      return error_result(Outcome::kCancelled, "cancelled");
    }
    if (!out) return error_result(Outcome::kError, out.status().message());
    if (out->is_region()) {
      // Only a region written for the client is its result. Another one
      // (the worker's own, from shm::share) is refused and left to its
      // handle, which removes it if it is this process's.
      auto n = parse_name(out->region().name());
      // A remote worker's results are its own until they are pushed (and
      // only then does it hold an owner of its own).
      std::uint64_t expected = s->owner;
      if (remote_ != nullptr) {
        auto own = shm::process_owner();
        expected = own ? *own : 0;
      }
      if (!n || n->owner != expected)
        return error_result(Outcome::kError, "the function returned the region " + out->region().name() +
                                                 " of another owner than the client's (write results "
                                                 "with TaskContext::result_region)");
      if (remote_ == nullptr) return make_result(out->region().disown(), nullptr);
      auto name = deliver(id, std::move(out->region()));
      if (!name) return error_result(Outcome::kError, "cannot send the result: " + name.status().message());
      return make_result(*name, nullptr);
    }
    const Value& v = out->value();
    if (setup) return make_result("", nullptr);  // a set-up call's value is not kept
    auto layout = Layout::plan(v);
    if (!layout)
      return error_result(Outcome::kError, "the result cannot be laid out: " + layout.status().message());
    const std::uint64_t room = frame_limit_ > 4096 ? frame_limit_ - 4096 : 0;
    const std::uint64_t limit = s->inline_result ? room : std::min<std::uint64_t>(inline_limit_, room);
    if (layout->size() <= limit) return make_result("", &v);
    if (remote_ != nullptr) {
      auto shared = shm::share(v);
      if (!shared)
        return error_result(Outcome::kError, "cannot write the result: " + shared.status().to_string());
      auto name = deliver(id, std::move(shared).value());
      if (!name) return error_result(Outcome::kError, "cannot send the result: " + name.status().message());
      return make_result(*name, nullptr);
    }
    auto held = TaskContext::Internals::lease_of(ctx);
    if (!held)
      return error_result(Outcome::kError, "cannot hold the client's lease: " + held.status().message());
    auto shared = shm::share(**held, v);
    if (!shared)
      return error_result(Outcome::kError, "cannot write the result: " + shared.status().to_string());
    return make_result(shared->disown(), nullptr);
  } catch (...) {
    return error_result(Outcome::kError, "out of memory");
  }
}

std::shared_ptr<const Bytes> TaskRunner::make_result(const std::string& name, const Value* v) {
  if (timed_) timing_.written_ns = wall_ns();
  auto p = encode_result(Outcome::kOk, "", name, v, timed_ ? &timing_ : nullptr);
  if (!p) return error_result(Outcome::kError, "cannot encode the result: " + p.status().message());
  return std::make_shared<const Bytes>(std::move(p).value());
}

}  // namespace kura::ipc::detail
