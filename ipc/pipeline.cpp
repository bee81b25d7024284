#include "kura/ipc/pipeline.hpp"

#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <new>
#include <unordered_map>

#include "kura/core/name.hpp"
#include "kura/shm/region.hpp"

namespace kura::ipc {

namespace {

using Clock = std::chrono::steady_clock;
constexpr std::size_t kReduce = SIZE_MAX;  // `running` marks a reduce task with this

// One input's way through the map stages.
struct Lane {
  std::size_t input = 0;            // the pipeline input it started from
  std::size_t next = 0;             // the next stage to run for it
  std::optional<TaskResult> value;  // its latest result; the input itself before the first
};

}  // namespace

Pipeline& Pipeline::map(std::string name, std::string fn, std::vector<Arg> extra, TaskOptions options) {
  stages_.push_back(StageSpec{false, std::move(name), std::move(fn), std::move(extra), options});
  return *this;
}

Pipeline& Pipeline::reduce(std::string name, std::string fn, std::vector<Arg> extra, TaskOptions options) {
  stages_.push_back(StageSpec{true, std::move(name), std::move(fn), std::move(extra), options});
  return *this;
}

Result<PipelineResult> Pipeline::run(Client& client, const std::vector<Arg>& inputs,
                                     const PipelineOptions& o) const noexcept {
  try {
    if (stages_.empty()) return invalid_argument("a pipeline needs a stage");
    if (inputs.empty()) return invalid_argument("a pipeline needs an input");
    if (client.on_reader_thread())
      return invalid_argument(
          "Pipeline::run cannot be called from the completion callback (it runs on the client's reader "
          "thread)");
    // The pipeline's tasks are reserved for it: no other wait on the client
    // takes their results. However it ends, it lets go of them.
    struct Reservation {
      Client& client;
      const std::uint64_t id;
      ~Reservation() { client.release(id); }
    } reservation{client, client.reserve()};
    const auto start = Clock::now();
    PipelineResult out;
    std::size_t width = inputs.size();
    for (const StageSpec& st : stages_) {
      if (st.reduce) width = 1;
      out.stages.push_back(StageProgress{st.name, 0, width});
    }
    std::vector<Lane> lanes(inputs.size());
    for (std::size_t i = 0; i < lanes.size(); ++i) lanes[i].input = i;
    std::unordered_map<TaskId, std::size_t> running;  // task -> its lane, or kReduce
    std::size_t reduce_stage = 0;                     // the stage of the reduce that runs
    std::uint64_t held = 0;                           // bytes of result regions held

    auto take = [&](Lane& l, std::optional<TaskResult> v) {
      if (l.value) held -= l.value->region_size();
      l.value = std::move(v);
      if (l.value) held += l.value->region_size();
      out.peak_region_bytes = std::max(out.peak_region_bytes, held);
    };
    // What a stage gets of a lane: a name, or (copy mode, inline results) a copy.
    auto arg_of = [&](const Lane& l) -> Result<Arg> {
      if (!l.value) {
        const Arg& a = inputs[l.input];
        if (!o.copy || a.name.empty()) return a;
        KURA_ASSIGN_OR_RETURN(shm::Mapped m, shm::map(a.name));
        KURA_ASSIGN_OR_RETURN(Value v, to_value(m.node()));
        return Arg::copy(std::move(v));
      }
      if (!o.copy && !l.value->name().empty()) return Arg::ref(l.value->name());
      KURA_ASSIGN_OR_RETURN(Value v, to_value(l.value->value()));
      return Arg::copy(std::move(v));
    };
    auto submit = [&](const StageSpec& st, std::vector<Arg> args) -> Result<TaskId> {
      args.insert(args.end(), st.extra.begin(), st.extra.end());
      TaskOptions options = st.options;
      if (o.copy) options.inline_result = true;
      if (options.traceparent.empty()) options.traceparent = o.traceparent;
      return client.submit_reserved(reservation.id, Call{st.fn, std::move(args)}, options);
    };
    // Moves lane `i` on: submits its next map task, or, at a reduce that every
    // lane has reached, the reduce over all of them.
    auto advance = [&](std::size_t i) -> Status {
      Lane& l = lanes[i];
      if (l.next == stages_.size()) return Status::ok();
      const StageSpec& st = stages_[l.next];
      if (!st.reduce) {
        KURA_ASSIGN_OR_RETURN(Arg a, arg_of(l));
        KURA_ASSIGN_OR_RETURN(TaskId id, submit(st, {std::move(a)}));
        running[id] = i;
        return Status::ok();
      }
      for (const Lane& other : lanes)
        if (other.next != l.next) return Status::ok();  // not everyone is there yet
      // Everyone is there from the start when the first stage is a reduce:
      // only the first lane to look submits it.
      for (const auto& [id, where] : running)
        if (where == kReduce) return Status::ok();
      std::vector<Arg> args;
      for (const Lane& other : lanes) {
        KURA_ASSIGN_OR_RETURN(Arg a, arg_of(other));
        args.push_back(std::move(a));
      }
      KURA_ASSIGN_OR_RETURN(TaskId id, submit(st, std::move(args)));
      running[id] = kReduce;
      reduce_stage = l.next;
      return Status::ok();
    };
    // Cancels whatever runs and waits for it to end, so no result of the
    // pipeline's stays behind; releases every intermediate.
    auto abandon = [&] {
      std::vector<TaskId> ids;
      for (const auto& [id, lane] : running) {
        ids.push_back(id);
        (void)client.cancel(id);
      }
      for (TaskId id : ids) (void)client.wait_reserved(reservation.id, id);
      running.clear();
      for (Lane& l : lanes) take(l, std::nullopt);
    };
    auto fail = [&](PipelineFailure f) -> Result<PipelineResult> {
      abandon();
      out.failure = std::move(f);
      return std::move(out);
    };

    for (std::size_t i = 0; i < lanes.size(); ++i) {
      Status s = advance(i);
      if (!s) {
        abandon();
        return s;
      }
    }
    std::vector<TaskId> ids;
    while (!running.empty()) {
      ids.clear();
      for (const auto& [id, lane] : running) ids.push_back(id);
      auto got = client.wait_any_reserved_for(reservation.id, ids, std::chrono::milliseconds(100));
      if (!got) {
        if (o.stop != nullptr && o.stop->load())
          return fail(PipelineFailure{"", 0, "", Outcome::kCancelled, "interrupted"});
        continue;
      }
      auto [id, r] = std::move(*got);
      auto it = running.find(id);
      if (it == running.end()) {
        // None of its tasks is pending any more: only the pipeline takes
        // them, so the client lost track of them.
        abandon();
        return Status(Code::kIo, "the pipeline's tasks are no longer pending: " + r.message());
      }
      const std::size_t where = it->second;
      running.erase(it);
      const std::size_t stage = where == kReduce ? reduce_stage : lanes[where].next;
      ++out.stages[stage].done;
      if (o.progress) o.progress(out.stages, Clock::now() - start);
      if (!r.ok()) {
        const std::size_t input = where == kReduce ? 0 : lanes[where].input;
        return fail(PipelineFailure{stages_[stage].name, input, where == kReduce ? "" : inputs[input].name,
                                    r.outcome(), r.message()});
      }
      if (o.stop != nullptr && o.stop->load())
        return fail(PipelineFailure{stages_[stage].name, 0, "", Outcome::kCancelled, "interrupted"});
      Status s;
      if (where == kReduce) {
        // Every lane's value has been read: they go, and one lane carries on.
        for (Lane& l : lanes) take(l, std::nullopt);
        lanes.clear();
        lanes.emplace_back();
        lanes[0].next = stage + 1;
        take(lanes[0], std::move(r));
        s = advance(0);
      } else {
        lanes[where].next = stage + 1;
        take(lanes[where], std::move(r));  // the value it replaces is released
        s = advance(where);
      }
      if (!s) {
        abandon();
        return s;
      }
    }
    for (Lane& l : lanes) out.outputs.push_back(std::move(*l.value));
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::vector<Arg>> elements_of(const std::string& name) noexcept {
  try {
    KURA_ASSIGN_OR_RETURN(Name n, parse_name(name));
    KURA_ASSIGN_OR_RETURN(shm::Mapped m, shm::map(name));
    if (m.node().kind() != Kind::kList)
      return Status(Code::kNotAList, name + " is " + m.node().describe() + ", not a list");
    std::vector<Arg> out;
    for (std::uint64_t i = 1; i <= m.node().length(); ++i) {
      Name element = n;
      element.path.push_back(i);
      out.push_back(Arg::ref(format_name(element)));
    }
    return out;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

ProgressDisplay::ProgressDisplay(std::FILE* out) : out_(out), terminal_(::isatty(::fileno(out)) == 1) {}

void ProgressDisplay::operator()(const std::vector<StageProgress>& stages,
                                 std::chrono::steady_clock::duration elapsed) {
  std::size_t done = 0, total = 0;
  std::string line;
  for (const StageProgress& s : stages) {
    if (!line.empty()) line += " | ";
    line += s.name + " " + std::to_string(s.done) + "/" + std::to_string(s.total);
    done += s.done;
    total += s.total;
  }
  const double secs = std::chrono::duration<double>(elapsed).count();
  char tail[64];
  std::snprintf(tail, sizeof tail, " | %.1f s, %.1f tasks/s", secs,
                secs > 0 ? static_cast<double>(done) / secs : 0.0);
  line += tail;
  const bool finished = done == total;
  if (terminal_) {
    std::fprintf(out_, "\r%s\x1b[K%s", line.c_str(), finished ? "\n" : "");
  } else if (finished || !printed_ || elapsed - last_ >= std::chrono::seconds(1)) {
    std::fprintf(out_, "%s\n", line.c_str());
    last_ = elapsed;
    printed_ = true;
  }
  std::fflush(out_);
}

}  // namespace kura::ipc
