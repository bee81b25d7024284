// The built-in functions of every worker (worker.hpp lists them).
#include <cmath>
#include <cstdlib>
#include <string>

#include "kura/ipc/worker.hpp"

namespace kura::ipc {

namespace {

Status wrong_args(const char* fn, const std::string& what) {
  return invalid_argument(std::string(fn) + ": " + what);
}

Result<std::span<const double>> f64_arg(const char* fn, const TaskContext& ctx, std::size_t i) {
  if (ctx.args().size() <= i) return wrong_args(fn, "argument " + std::to_string(i + 1) + " is missing");
  auto xs = ctx.args()[i].array<Dtype::kF64>();
  if (!xs)
    return wrong_args(fn,
                      "argument " + std::to_string(i + 1) + " is " + ctx.args()[i].describe() + ", not f64");
  return *xs;
}

Result<double> scalar_arg(const char* fn, const TaskContext& ctx, std::size_t i) {
  KURA_ASSIGN_OR_RETURN(auto xs, f64_arg(fn, ctx, i));
  if (xs.size() != 1) return wrong_args(fn, "argument " + std::to_string(i + 1) + " is not a single number");
  return xs[0];
}

Result<Output> echo(TaskContext& ctx) {
  auto args = ctx.args();
  if (args.empty()) return Output(Value::null());
  if (args.size() == 1) {
    KURA_ASSIGN_OR_RETURN(Value v, to_value(args[0]));
    return Output(std::move(v));
  }
  std::vector<Value> out;
  for (const NodeView& a : args) {
    KURA_ASSIGN_OR_RETURN(Value v, to_value(a));
    out.push_back(std::move(v));
  }
  return Output(Value::list(std::move(out)));
}

Result<Output> length(TaskContext& ctx) {
  if (ctx.args().size() != 1) return wrong_args("length", "takes one argument");
  return Output(Value::array<Dtype::kU64>({ctx.args()[0].length()}));
}

Result<Output> sum(TaskContext& ctx) {
  KURA_ASSIGN_OR_RETURN(auto xs, f64_arg("sum", ctx, 0));
  double total = 0;
  for (double x : xs) total += x;
  return Output(Value::f64({total}));
}

Result<Output> colmeans(TaskContext& ctx) {
  if (ctx.args().size() != 1) return wrong_args("colmeans", "takes one list of f64 columns");
  const NodeView& list = ctx.args()[0];
  if (list.kind() != Kind::kList)
    return wrong_args("colmeans", "argument 1 is " + list.describe() + ", not a list");
  std::vector<double> means;
  for (std::uint64_t i = 0; i < list.length(); ++i) {
    KURA_ASSIGN_OR_RETURN(NodeView col, list.child(i));
    auto xs = col.array<Dtype::kF64>();
    if (!xs) return wrong_args("colmeans", "column " + std::to_string(i + 1) + " is " + col.describe());
    double total = 0;
    for (double x : *xs) total += x;
    means.push_back(xs->empty() ? std::nan("") : total / static_cast<double>(xs->size()));
  }
  Value out = Value::array<Dtype::kF64>(std::span<const double>(means));
  KURA_ASSIGN_OR_RETURN(auto names, list.names());
  if (names) {
    KURA_ASSIGN_OR_RETURN(Value n, to_value(*names));
    out.names = std::move(n.strings);
  }
  return Output(std::move(out));
}

// f(x) for every x of `xs`, as an f64 array: written in place into the
// client's result region, or built in memory when the client wants the
// result inline (the copy mode of pipelines).
template <class F>
Result<Output> elementwise(TaskContext& ctx, std::span<const double> xs, F f) {
  if (ctx.wants_inline()) {
    std::vector<double> out(xs.size());
    for (std::size_t i = 0; i < xs.size(); ++i) out[i] = f(xs[i]);
    return Output(Value::array<Dtype::kF64>(std::span<const double>(out)));
  }
  Value layout = Value::array_in_place(Dtype::kF64, xs.size());
  KURA_ASSIGN_OR_RETURN(shm::Pending p, ctx.result_region(layout));
  auto out = p.array<double>(layout);
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if ((i & 0xFFFFF) == 0 && ctx.cancelled()) return Status(Code::kIo, "cancelled");
    out[i] = f(xs[i]);
  }
  KURA_ASSIGN_OR_RETURN(shm::Shared s, std::move(p).publish());
  return Output(std::move(s));
}

Result<Output> scale(TaskContext& ctx) {
  KURA_ASSIGN_OR_RETURN(auto xs, f64_arg("scale", ctx, 0));
  KURA_ASSIGN_OR_RETURN(double k, scalar_arg("scale", ctx, 1));
  return elementwise(ctx, xs, [k](double x) { return x * k; });
}

Result<Output> sleep(TaskContext& ctx) {
  KURA_ASSIGN_OR_RETURN(double seconds, scalar_arg("sleep", ctx, 0));
  if (!(seconds >= 0) || seconds > 86400) return wrong_args("sleep", "seconds must be in 0..86400");
  if (ctx.sleep_for(std::chrono::milliseconds(static_cast<std::int64_t>(seconds * 1000))))
    return Status(Code::kIo, "cancelled");
  return Output(Value::null());
}

Result<Output> fail(TaskContext& ctx) {
  std::string message = "failed on purpose";
  if (!ctx.args().empty()) {
    auto s = ctx.args()[0].string(0);
    if (s && !s->na) message = std::string(s->bytes);
  }
  return Status(Code::kInvalidArgument, message);
}

Result<Output> crash(TaskContext&) {
  std::abort();
}

// Mean and sample standard deviation in one pass (Welford).
struct Moments {
  double mean = 0, m2 = 0, min = 0, max = 0;
  std::uint64_t n = 0;
  void add(double x) {
    ++n;
    const double d = x - mean;
    mean += d / static_cast<double>(n);
    m2 += d * (x - mean);
    if (n == 1 || x < min) min = x;
    if (n == 1 || x > max) max = x;
  }
  double sd() const { return n > 1 ? std::sqrt(m2 / static_cast<double>(n - 1)) : std::nan(""); }
};

Result<Moments> moments(const char* fn, const TaskContext& ctx, std::span<const double> xs) {
  Moments m;
  for (std::size_t i = 0; i < xs.size(); ++i) {
    if ((i & 0xFFFFF) == 0 && ctx.cancelled()) return Status(Code::kIo, "cancelled");
    m.add(xs[i]);
  }
  if (m.n == 0) return wrong_args(fn, "an empty array has no mean");
  return m;
}

// (x - mean) / sd, as a new region written in place.
Result<Output> standardise(TaskContext& ctx) {
  KURA_ASSIGN_OR_RETURN(auto xs, f64_arg("standardise", ctx, 0));
  KURA_ASSIGN_OR_RETURN(Moments m, moments("standardise", ctx, xs));
  const double sd = m.sd();
  if (!(sd > 0)) return wrong_args("standardise", "the values do not vary (sd is 0 or undefined)");
  const double mean = m.mean;
  return elementwise(ctx, xs, [mean, sd](double x) { return (x - mean) / sd; });
}

constexpr const char* kSummaryNames[] = {"n", "mean", "sd", "min", "max"};

// n, mean, sd, min, max of an f64 array, named.
Result<Output> summary(TaskContext& ctx) {
  KURA_ASSIGN_OR_RETURN(auto xs, f64_arg("summary", ctx, 0));
  KURA_ASSIGN_OR_RETURN(Moments m, moments("summary", ctx, xs));
  Value out = Value::f64({static_cast<double>(m.n), m.mean, m.sd(), m.min, m.max});
  std::vector<String> names;
  for (const char* n : kSummaryNames) names.push_back(String{n, Encoding::kUtf8, false});
  return Output(std::move(out).with_names(std::move(names)));
}

// Summaries (one per argument) stacked into a table: a list of five f64
// columns (n, mean, sd, min, max), one row per argument.
Result<Output> combine(TaskContext& ctx) {
  std::vector<std::vector<double>> cols(std::size(kSummaryNames));
  for (std::size_t i = 0; i < ctx.args().size(); ++i) {
    KURA_ASSIGN_OR_RETURN(auto s, f64_arg("combine", ctx, i));
    if (s.size() != cols.size())
      return wrong_args("combine", "argument " + std::to_string(i + 1) + " is not a summary");
    for (std::size_t c = 0; c < cols.size(); ++c) cols[c].push_back(s[c]);
  }
  std::vector<Value> columns;
  std::vector<String> names;
  for (std::size_t c = 0; c < cols.size(); ++c) {
    columns.push_back(Value::array<Dtype::kF64>(std::span<const double>(cols[c])));
    names.push_back(String{kSummaryNames[c], Encoding::kUtf8, false});
  }
  return Output(Value::list(std::move(columns)).with_names(std::move(names)));
}

}  // namespace

void register_builtins(Registry& registry) {
  registry.add("echo", echo);
  registry.add("length", length);
  registry.add("sum", sum);
  registry.add("colmeans", colmeans);
  registry.add("scale", scale);
  registry.add("sleep", sleep);
  registry.add("fail", fail);
  registry.add("crash", crash);
  registry.add("standardise", standardise);
  registry.add("summary", summary);
  registry.add("combine", combine);
}

}  // namespace kura::ipc
