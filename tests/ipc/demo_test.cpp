// kura demo end to end, and interrupted.
#include <catch2/catch.hpp>
#include <nlohmann/json.hpp>
#include <regex>

#include "ipc_util.hpp"
#include "shm_guard.hpp"

using namespace kura::test;
using namespace std::chrono_literals;
using Json = nlohmann::json;

TEST_CASE("kura demo: both pipelines give the same table, the names one with far fewer socket bytes",
          "[ipc][multiprocess]") {
  ShmGuard guard;
  auto r = run({kKura, "demo", "--rows", "100000", "--json"}, {}, 120s);
  INFO(r.err);
  REQUIRE(r.code == 0);
  Json j = Json::parse(r.out);
  CHECK(j["identical"] == true);
  CHECK(j["rows"] == 100000);
  CHECK(j["cols"] == 8);
  REQUIRE(j["table"].size() == 8);
  for (const auto& row : j["table"]) {
    CHECK(row["n"] == 100000.0);
    CHECK(std::abs(row["mean"].get<double>()) < 1e-9);
    CHECK(row["sd"].get<double>() == Approx(1.0));
  }
  const auto by_name = j["by_name"]["socket_bytes"].get<std::uint64_t>();
  const auto copied = j["copied"]["socket_bytes"].get<std::uint64_t>();
  CHECK(by_name < 256 * 1024);
  CHECK(copied > 8 * 100000 * 8 * 2);  // every column there and back at least
  CHECK(j["copied"]["peak_region_bytes"] == 0);
  CHECK(j["by_name"]["peak_region_bytes"].get<std::uint64_t>() >= 100000 * 8);
  CHECK(j["workers"].size() == 2);
}

TEST_CASE("kura demo interrupted: exits at once and leaves no region and no process", "[ipc][multiprocess]") {
  ShmGuard guard;
  Process demo({kKura, "demo", "--rows", "2000000"});
  // The first line comes once the data set is built; the pipelines follow.
  auto built = demo.read_line(120s);
  REQUIRE(built);
  CHECK(built->find("built in place") != std::string::npos);
  demo.signal(SIGINT);
  const auto start = std::chrono::steady_clock::now();
  auto code = demo.wait(30s);
  REQUIRE(code);
  CHECK(std::chrono::steady_clock::now() - start < 20s);
  INFO(demo.err());
  CHECK(*code == 130);
  // Its workers are gone too.
  std::smatch m;
  const std::string err = demo.err();
  REQUIRE(std::regex_search(err, m, std::regex("workers ([0-9]+) and ([0-9]+)")));
  for (int i = 1; i <= 2; ++i) {
    const pid_t pid = static_cast<pid_t>(std::stol(m[i].str()));
    eventually([&] { return !process_alive(pid); }, 10s, "worker " + m[i].str() + " to exit");
  }
  // ShmGuard checks that no region, temporary or lease is left.
}
