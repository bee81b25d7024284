// Multi-stage pipelines that pass names between stages (DESIGN.md section
// 7). A pipeline is a list of stages, each a function of the workers'
// registry:
//
//   map     runs once per input: task i of a map stage takes output i of the
//           stage before (the pipeline's input i for the first stage);
//   reduce  runs once over all the outputs of the stage before.
//
// A map stage has no barrier: task i of the next stage is submitted as soon
// as task i of this one has ended. An intermediate result is released (its
// region unlinked) as soon as the stage that reads it has run; the outputs
// of the last stage belong to the caller. A task that does not end ok stops
// the pipeline: every other task is cancelled, every intermediate released,
// and the failure says which stage, which input and what went wrong. (A
// cancelled task ends at once for the pipeline; its worker may need a moment
// to stop, and removes what it was writing when it does.)
//
//   ipc::Pipeline p;
//   p.map("standardise", "standardise").map("summary", "summary").reduce("combine", "combine");
//   auto columns = ipc::elements_of(table_name);          // /kura_..[1], /kura_..[2], ...
//   auto r = p.run(client, *columns, {.progress = ipc::ProgressDisplay(stderr)});
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "kura/core/status.hpp"
#include "kura/ipc/client.hpp"
#include "kura/ipc/task.hpp"

namespace kura::ipc {

struct StageProgress {
  std::string name;
  std::size_t done = 0;   // tasks of this stage that ended
  std::size_t total = 0;  // tasks this stage will run
};

struct PipelineOptions {
  // Pass every input and intermediate value inline, copied through the
  // sockets both ways, instead of by name (to measure what copying costs).
  bool copy = false;
  // Called after each task ends, on the thread that runs the pipeline.
  std::function<void(const std::vector<StageProgress>& stages, std::chrono::steady_clock::duration elapsed)>
      progress = {};
  // When set and it becomes true, the pipeline stops as if a task had failed
  // (looked at least every 100 ms).
  const std::atomic<bool>* stop = nullptr;
  // The trace context given to every task of the run whose stage's
  // TaskOptions has none (TaskOptions::traceparent): the run's tasks then
  // appear in one trace, as children of the caller's span.
  std::string traceparent = {};
};

struct PipelineFailure {
  std::string stage;       // the stage's name
  std::size_t input = 0;   // the pipeline input (0-based) whose task failed; for a reduce, 0
  std::string input_name;  // that input's name, when it was one
  Outcome outcome = Outcome::kError;
  std::string message;
};

struct PipelineResult {
  // The last stage's results: one per input after a map, one after a reduce.
  // Empty when the pipeline failed.
  std::vector<TaskResult> outputs;
  std::optional<PipelineFailure> failure;
  std::vector<StageProgress> stages;
  // The most bytes of result regions the pipeline held at once (its
  // intermediates and outputs in shared memory; inputs are the caller's).
  std::uint64_t peak_region_bytes = 0;
};

class Pipeline {
 public:
  Pipeline& map(std::string name, std::string fn, std::vector<Arg> extra = {}, TaskOptions options = {});
  Pipeline& reduce(std::string name, std::string fn, std::vector<Arg> extra = {}, TaskOptions options = {});

  // Runs the stages over `inputs` (names or inline values) on `client`. A
  // task that fails is reported in the result's `failure`, not as an error.
  // Its tasks are reserved for this run: no other wait on the client takes
  // their results. Errors: InvalidArgument (no stage, no input, an input that
  // cannot be mapped in copy mode; called from the client's completion
  // callback), Io (the client is disconnected), OutOfMemory. Not thread-safe
  // for one Pipeline object; any number may run at once on one client.
  Result<PipelineResult> run(Client& client, const std::vector<Arg>& inputs,
                             const PipelineOptions& options = {}) const noexcept;

 private:
  struct StageSpec {
    bool reduce = false;
    std::string name;
    std::string fn;
    std::vector<Arg> extra;
    TaskOptions options;
  };
  std::vector<StageSpec> stages_;
};

// The elements of the list at `name` (a region or path name), as path-form
// names: name[1], name[2], ... Errors: as shm::map, and NotAList.
Result<std::vector<Arg>> elements_of(const std::string& name) noexcept;

// A progress display for PipelineOptions::progress. On a terminal it redraws
// one line ("standardise 5/8 | summary 3/8 | combine 0/1 | 1.2 s, 6.7
// tasks/s"); elsewhere it prints a plain line at most once a second and one
// when everything has ended.
class ProgressDisplay {
 public:
  explicit ProgressDisplay(std::FILE* out);
  void operator()(const std::vector<StageProgress>& stages, std::chrono::steady_clock::duration elapsed);

 private:
  std::FILE* out_;
  bool terminal_;
  std::chrono::steady_clock::duration last_{};
  bool printed_ = false;
};

}  // namespace kura::ipc
