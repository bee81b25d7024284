// Pipelines over real workers: values against a plain computation, no
// barrier between map stages, failures that stop everything and leave
// nothing behind, and the copy mode giving the same values.
#include "kura/ipc/pipeline.hpp"

#include <catch2/catch.hpp>
#include <cmath>
#include <random>

#include "ipc_util.hpp"
#include "shm_guard.hpp"

using namespace kura;
using namespace kura::test;
using namespace std::chrono_literals;

namespace {

// A table of `cols` f64 columns of `rows` values, shared.
struct Table {
  std::vector<std::vector<double>> columns;
  Value value;
  std::optional<shm::Shared> shared;
};

Table make_table(std::size_t cols, std::size_t rows, std::uint32_t seed) {
  Table t;
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> noise(0, 1);
  std::vector<Value> children;
  for (std::size_t c = 0; c < cols; ++c) {
    std::vector<double> xs(rows);
    for (double& x : xs) x = static_cast<double>(c + 1) * 10 + noise(rng) * static_cast<double>(c + 1);
    children.push_back(Value::array<Dtype::kF64>(std::span<const double>(xs)));
    t.columns.push_back(std::move(xs));
  }
  t.value = Value::list(std::move(children));
  auto s = shm::share(t.value);
  REQUIRE(s.is_ok());
  t.shared.emplace(std::move(s).value());
  return t;
}

// What standardise -> summary computes, done here in one process, two-pass.
std::vector<double> expected_summary(const std::vector<double>& xs) {
  double mean = 0;
  for (double x : xs) mean += x;
  mean /= static_cast<double>(xs.size());
  double ss = 0;
  for (double x : xs) ss += (x - mean) * (x - mean);
  const double sd = std::sqrt(ss / static_cast<double>(xs.size() - 1));
  double zmin = INFINITY, zmax = -INFINITY, zmean = 0, zss = 0;
  std::vector<double> z(xs.size());
  for (std::size_t i = 0; i < xs.size(); ++i) {
    z[i] = (xs[i] - mean) / sd;
    zmin = std::min(zmin, z[i]);
    zmax = std::max(zmax, z[i]);
    zmean += z[i];
  }
  zmean /= static_cast<double>(z.size());
  for (double v : z) zss += (v - zmean) * (v - zmean);
  return {static_cast<double>(xs.size()), zmean, std::sqrt(zss / static_cast<double>(z.size() - 1)), zmin,
          zmax};
}

std::vector<double> column_of(const NodeView& table, std::size_t c) {
  auto col = table.child(c);
  REQUIRE(col.is_ok());
  auto xs = col->array<Dtype::kF64>();
  REQUIRE(xs.is_ok());
  return {xs->begin(), xs->end()};
}

ipc::Pipeline three_stages() {
  ipc::Pipeline p;
  p.map("standardise", "standardise").map("summary", "summary").reduce("combine", "combine");
  return p;
}

}  // namespace

TEST_CASE("a three-stage pipeline computes what one process computes, passing names", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  Table t = make_table(6, 50000, 1);
  auto inputs = ipc::elements_of(t.shared->name());
  REQUIRE(inputs.is_ok());
  REQUIRE(inputs->size() == 6);
  CHECK((*inputs)[2].name == t.shared->name() + "[3]");
  const auto before = shm_entries();
  std::vector<ipc::StageProgress> last;
  auto r = three_stages().run(*c, *inputs, {.progress = [&](const auto& stages, auto) { last = stages; }});
  REQUIRE(r.is_ok());
  INFO((r->failure ? r->failure->message : std::string()));
  REQUIRE_FALSE(r->failure);
  REQUIRE(r->outputs.size() == 1);
  const NodeView& table = r->outputs[0].value();
  REQUIRE(table.length() == 5);  // n, mean, sd, min, max
  for (std::size_t col = 0; col < 6; ++col) {
    const auto want = expected_summary(t.columns[col]);
    for (std::size_t k = 0; k < 5; ++k) {
      INFO("column " << col + 1 << ", statistic " << k);
      CHECK(column_of(table, k)[col] == Approx(want[k]).margin(1e-9));
    }
  }
  // Progress counted every task; intermediates are gone, only the inline
  // table is left; the standardised columns were regions, held at once at
  // most as many as ran together.
  REQUIRE(last.size() == 3);
  CHECK(last[0].done == 6);
  CHECK(last[1].done == 6);
  CHECK(last[2].done == 1);
  CHECK(r->peak_region_bytes >= 50000 * sizeof(double));
  CHECK(r->peak_region_bytes <= 6 * (50000 * sizeof(double) + 4096));
  CHECK(shm_entries() == before);
}

TEST_CASE("a map stage has no barrier: a fast input moves on while a slow one runs", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  // Stage 1 sleeps for the input's number of seconds, stage 2 echoes.
  ipc::Pipeline p;
  p.map("nap", "sleep").map("echo", "echo");
  bool overlapped = false;
  auto r = p.run(*c, {num(0.0), num(2.0)}, {.progress = [&](const auto& s, auto) {
    if (s[1].done >= 1 && s[0].done < 2) overlapped = true;
  }});
  REQUIRE(r.is_ok());
  REQUIRE_FALSE(r->failure);
  CHECK(overlapped);  // the fast input's second task ended before the slow one's first
}

TEST_CASE("a failing task stops the pipeline, says where, and leaves nothing behind", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);

  SECTION("the other inputs' tasks are cancelled") {
    ipc::Pipeline p;
    p.map("nap", "sleep").map("echo", "echo");
    const auto start = std::chrono::steady_clock::now();
    auto r = p.run(*c, {num(30.0), num(-1.0), num(30.0)});
    REQUIRE(r.is_ok());
    REQUIRE(r->failure);
    CHECK(r->failure->stage == "nap");
    CHECK(r->failure->input == 1);
    CHECK(r->failure->outcome == ipc::Outcome::kError);
    CHECK(r->failure->message.find("seconds must be") != std::string::npos);
    CHECK(r->outputs.empty());
    CHECK(std::chrono::steady_clock::now() - start < 20s);  // nobody waited out a 30 s sleep
    wait_workers(*c, 2);                                    // and the workers are free again
  }
  SECTION("a region input: the standardised columns made so far are released") {
    Table t = make_table(4, 20000, 2);
    // Column 3 does not vary: standardise fails on it.
    Value constant = Value::list({Value::array<Dtype::kF64>(std::span<const double>(t.columns[0])),
                                  Value::array<Dtype::kF64>(std::span<const double>(t.columns[1])),
                                  Value::f64({5, 5, 5, 5}),
                                  Value::array<Dtype::kF64>(std::span<const double>(t.columns[3]))});
    auto shared = shm::share(constant);
    REQUIRE(shared.is_ok());
    auto inputs = ipc::elements_of(shared->name());
    REQUIRE(inputs.is_ok());
    const auto before = shm_entries();
    auto r = three_stages().run(*c, *inputs);
    REQUIRE(r.is_ok());
    REQUIRE(r->failure);
    CHECK(r->failure->stage == "standardise");
    CHECK(r->failure->input == 2);
    CHECK(r->failure->input_name == shared->name() + "[3]");
    CHECK(r->failure->message.find("do not vary") != std::string::npos);
    // No standardised column is left. A cancelled task resolves at once
    // while its worker may still be stopping; what it was writing goes when
    // it stops: first both workers are idle again (a worker still writing
    // could otherwise create a region after the count below looked right).
    wait_workers(*c, 2);
    eventually([&] { return shm_entries() == before; }, 20s,
               "the cancelled tasks' partial regions to be removed");
  }
}

TEST_CASE("the copy mode gives the same table, through the sockets", "[ipc][multiprocess]") {
  ShmGuard guard;
  SocketDir dir;
  EmbeddedDispatcher d(dir, 2);
  auto c = connect(d.socket());
  wait_workers(*c, 2);
  Table t = make_table(3, 10000, 3);
  auto inputs = ipc::elements_of(t.shared->name());
  REQUIRE(inputs.is_ok());
  const auto s0 = status_of(*c);
  auto by_name = three_stages().run(*c, *inputs);
  const auto s1 = status_of(*c);
  auto copied = three_stages().run(*c, *inputs, {.copy = true});
  const auto s2 = status_of(*c);
  REQUIRE(by_name.is_ok());
  REQUIRE(copied.is_ok());
  REQUIRE_FALSE(by_name->failure);
  REQUIRE_FALSE(copied->failure);
  auto a = to_value(by_name->outputs[0].value());
  auto b = to_value(copied->outputs[0].value());
  REQUIRE(a.is_ok());
  REQUIRE(b.is_ok());
  CHECK(*a == *b);  // bit for bit
  const auto names_bytes = (s1.bytes_in + s1.bytes_out) - (s0.bytes_in + s0.bytes_out);
  const auto copy_bytes = (s2.bytes_in + s2.bytes_out) - (s1.bytes_in + s1.bytes_out);
  INFO("socket bytes: by name " << names_bytes << ", copied " << copy_bytes);
  CHECK(copy_bytes > 4 * 3 * 10000 * sizeof(double));  // each column and each standardised column, both ways
  CHECK(names_bytes < 64 * 1024);
  CHECK(copied->peak_region_bytes == 0);  // nothing in shared memory on the way
  // A pipeline with no stage, or no input, does not run.
  CHECK(ipc::Pipeline().run(*c, *inputs).status().code() == Code::kInvalidArgument);
  CHECK(three_stages().run(*c, {}).status().code() == Code::kInvalidArgument);
}

TEST_CASE("elements_of names each element of a list, and refuses a non-list", "[ipc]") {
  ShmGuard guard;
  Value v = Value::list({Value::f64({1}), Value::list({Value::f64({2}), Value::f64({3})})});
  auto s = shm::share(v);
  REQUIRE(s.is_ok());
  auto top = ipc::elements_of(s->name());
  REQUIRE(top.is_ok());
  REQUIRE(top->size() == 2);
  auto inner = ipc::elements_of((*top)[1].name);
  REQUIRE(inner.is_ok());
  CHECK((*inner)[1].name == s->name() + "[2,2]");
  auto leaf = ipc::elements_of((*top)[0].name);
  REQUIRE_FALSE(leaf.is_ok());
  CHECK(leaf.status().code() == Code::kNotAList);
}
