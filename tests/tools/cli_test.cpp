// The real `kura` binary, run as a child process: put/get round trips,
// holding a region until a signal, exit codes, corrupt regions, ls, rm and
// prune. Every test removes what it created and checks the region directory
// for leaks.
#include <fcntl.h>
#include <signal.h>
#include <sys/file.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <catch2/catch.hpp>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>
#include <string>
#include <thread>

#include "kura/core/builder.hpp"
#include "kura/core/hash.hpp"
#include "kura/core/layout.hpp"
#include "kura/core/name.hpp"
#include "kura/shm/owner.hpp"
#include "kura/shm/region.hpp"
#include "private_shm_dir.hpp"
#include "process.hpp"
#include "sample.hpp"
#include "typed_json.hpp"

using kura::test::shm_path;
using kura::tool::Json;
using namespace std::chrono_literals;

// AddressSanitizer reserves terabytes of address space for its shadow
// memory when a process starts, so no RLIMIT_AS low enough to matter lets
// an ASan build start at all.
#if defined(__SANITIZE_ADDRESS__)
#define KURA_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define KURA_TEST_ASAN 1
#endif
#endif

namespace {

const std::string kTool = KURA_TOOL_PATH;

kura::test::RunResult kura_run(std::vector<std::string> args, std::string_view input = {}) {
  args.insert(args.begin(), kTool);
  return kura::test::run(args, input);
}

bool region_exists(const std::string& name) {
  struct stat st;
  return ::lstat(shm_path(name).c_str(), &st) == 0;
}

std::string last_line(const std::string& out) {
  std::string s = out;
  while (!s.empty() && s.back() == '\n') s.pop_back();
  auto nl = s.rfind('\n');
  return nl == std::string::npos ? s : s.substr(nl + 1);
}

std::set<std::string> shm_entries() {
  std::set<std::string> out;
  for (const auto& e : std::filesystem::directory_iterator(kura::test::shm_dir())) {
    auto f = e.path().filename().string();
    if (f.rfind("kura_", 0) == 0) out.insert(f);
  }
  return out;
}

// A lease file that nobody holds: what a process that leaked its lease leaves.
bool orphan_lease(const std::string& file) {
  if (file.size() < 5 || file.substr(file.size() - 5) != ".lock") return false;
  auto owner = kura::parse_name("/" + file.substr(0, file.size() - 5) + "_0");
  return owner.is_ok() && !kura::shm::owner_alive(owner->owner);
}

// Removes the regions a test created even when it fails half way, and at the
// end checks that the region directory holds nothing new of ours: every region named
// here is gone, and no new lease is left unheld.
class ShmScope {
 public:
  ShmScope() : before_(shm_entries()) {}
  ~ShmScope() {
    for (const auto& n : names_) ::unlink(shm_path(n).c_str());
  }
  void track(const std::string& name) { names_.push_back(name); }
  void check_clean() const {
    for (const auto& n : names_) {
      INFO("region left behind: " << n);
      CHECK_FALSE(region_exists(n));
    }
    for (const auto& f : shm_entries()) {
      if (before_.count(f)) continue;
      INFO("lease left behind: " << shm_path(f));
      CHECK_FALSE(orphan_lease(f));
    }
  }

 private:
  std::set<std::string> before_;
  std::vector<std::string> names_;
};

// A name for a kept region that does not exist yet.
std::string fresh_kept_name() {
  std::random_device rd;
  std::mt19937_64 rng((static_cast<std::uint64_t>(rd()) << 32) ^ rd());
  for (;;) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "/kura_0_%llx", static_cast<unsigned long long>(rng() | (1ull << 60)));
    if (!region_exists(buf)) return buf;
  }
}

// Writes `image` as a kept region file of mode 0400, as the shm layer would.
// When `keep_fd` is given, the descriptor (open for reading and writing) is
// left open there.
std::string write_region_file(const kura::Bytes& image, int* keep_fd = nullptr) {
  std::string name = fresh_kept_name();
  int fd = ::open(shm_path(name).c_str(), O_CREAT | O_EXCL | O_RDWR | O_CLOEXEC | O_NOFOLLOW, 0400);
  REQUIRE(fd >= 0);
  std::size_t done = 0;
  while (done < image.size()) {
    ssize_t n = ::write(fd, image.data() + done, image.size() - done);
    REQUIRE(n > 0);
    done += static_cast<std::size_t>(n);
  }
  if (keep_fd)
    *keep_fd = fd;
  else
    ::close(fd);
  return name;
}

kura::Bytes image_of(const std::string& typed_json) {
  auto v = kura::tool::parse_typed_json(typed_json);
  REQUIRE(v.is_ok());
  auto image = kura::build(*v, kura::Stamp{1, 1}, true);
  REQUIRE(image.is_ok());
  return std::move(image).value();
}

// Every dtype with its extremes, NA and non-finite values, strings in every
// encoding, names with NA, attributes, nested lists, bytes and null; keys in
// the order kura writes them, so that the parsed documents compare equal.
const char* kRich = R"({"type": "list", "values": [
  {"type": "u8", "values": [0, 255]},
  {"type": "i8", "values": [-128, 127]},
  {"type": "u16", "values": [0, 65535]},
  {"type": "i16", "values": [-32768, 32767]},
  {"type": "u32", "values": [0, 4294967295]},
  {"type": "i32", "values": [-2147483648, 2147483647], "names": ["na_int", "max"]},
  {"type": "u64", "values": [0, 18446744073709551615]},
  {"type": "i64", "values": [-9223372036854775808, 9223372036854775807]},
  {"type": "f32", "values": [0.1, "NaN", "Inf", "-Inf", -0.0]},
  {"type": "f64", "values": [1.5, null, "NaN", "Inf", "-Inf", 5e-324, 0.30000000000000004]},
  {"type": "c128", "values": [[1.0, -1.0], [null, 2.0], [3.0, null]]},
  {"type": "lgl", "values": [true, false, null]},
  {"type": "strings", "values": ["a", null, "caf\u00e9", {"latin1": "6Q=="}, {"bytes": "AP8="}]},
  {"type": "bytes", "tag": "json", "base64": "eyJrIjogMX0="},
  {"type": "null"},
  {"type": "list", "values": [{"type": "list", "values": [{"type": "i32", "values": [7]}]}, {"type": "list", "values": []}]}
], "names": ["u8", "i8", "u16", "i16", "u32", "i32", "u64", "i64", "f32", "f64", "c128", "lgl", "s", "blob", null, "nested"],
"attrs": {"class": {"type": "strings", "values": ["rich"]}, "dim": {"type": "i32", "values": [4, 4], "attrs": {"unit": {"type": "strings", "values": ["cm"]}}}}})";

// The owner of region name `name`, or nullopt when it is not a valid region
// name without a path.
std::optional<std::uint64_t> owner_of(const std::string& name) {
  auto n = kura::parse_name(name);
  if (!n.is_ok() || !n->path.empty()) return std::nullopt;
  return n->owner;
}

std::string lease_file(std::uint64_t owner) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "kura_%llx.lock", static_cast<unsigned long long>(owner));
  return buf;
}

}  // namespace

TEST_CASE("kura put --keep and get --json round-trip every dtype", "[tools][multiprocess]") {
  ShmScope scope;
  auto put = kura_run({"put", "--keep", "-"}, kRich);
  INFO(put.err);
  REQUIRE(put.code == 0);
  const std::string name = last_line(put.out);
  scope.track(name);
  REQUIRE(owner_of(name) == std::optional<std::uint64_t>(0));
  struct stat st;
  REQUIRE(::stat(shm_path(name).c_str(), &st) == 0);
  CHECK((st.st_mode & 0777) == 0400);

  auto get = kura_run({"get", "--json", name});
  INFO(get.err);
  REQUIRE(get.code == 0);
  CHECK(Json::parse(get.out) == Json::parse(kRich));

  auto child = kura_run({"get", "--json", name + "[16,1,1]"});
  REQUIRE(child.code == 0);
  CHECK(Json::parse(child.out) == Json::parse(R"({"type": "i32", "values": [7]})"));

  auto verify = kura_run({"verify", name});
  CHECK(verify.code == 0);
  CHECK(verify.out.find("hashes checked") != std::string::npos);

  auto plain = kura_run({"get", name});
  CHECK(plain.code == 0);
  CHECK(plain.out.find("$f64 f64[7] 1.5 NA NaN Inf -Inf 5e-324 0.30000000000000004") != std::string::npos);
  CHECK(plain.out.find("$lgl lgl[3] TRUE FALSE NA") != std::string::npos);
  CHECK(plain.out.find("attr \"class\": strings[1] \"rich\"") != std::string::npos);

  auto inspect = kura_run({"inspect", name});
  CHECK(inspect.code == 0);
  CHECK(inspect.out.find("@64 list length=16") != std::string::npos);
  CHECK(inspect.out.find("array c128 length=3") != std::string::npos);
  CHECK(inspect.out.find("tag=\"json\"") != std::string::npos);

  auto ls = kura_run({"ls", "--json"});
  REQUIRE(ls.code == 0);
  bool listed = false;
  const Json listing = Json::parse(ls.out);
  for (const auto& r : listing["regions"]) {
    if (r["name"] != name) continue;
    listed = true;
    CHECK(r["kept"] == true);
    CHECK(r["alive"] == true);
    CHECK(r["size"] == static_cast<std::uint64_t>(st.st_size));
  }
  CHECK(listed);
  CHECK(Json::parse(ls.out)["space"]["total"].get<std::uint64_t>() > 0);
  CHECK(Json::parse(ls.out)["space"]["directory"] == kura::test::shm_dir());
  auto ls_plain = kura_run({"ls"});
  CHECK(ls_plain.out.find(name) != std::string::npos);
  CHECK(ls_plain.out.find(kura::test::shm_dir() + ":") != std::string::npos);

  CHECK(kura_run({"rm", name}).code == 0);
  CHECK_FALSE(region_exists(name));
  CHECK(kura_run({"rm", name}).code == 3);
  CHECK(kura_run({"get", name}).code == 3);
  scope.check_clean();
}

TEST_CASE("kura put holds its region until SIGINT or SIGTERM", "[tools][multiprocess]") {
  const int sig = GENERATE(SIGTERM, SIGINT);
  ShmScope scope;
  kura::test::Process put({kTool, "put", "-"});
  put.send(
      R"({"type": "list", "values": [{"type": "f64", "values": [1.5]}, {"type": "strings", "values": ["held", null]}]})");
  auto line = put.read_line(20s);
  INFO("stderr: " << put.err());
  REQUIRE(line);
  const std::string name = *line;
  scope.track(name);
  const auto owner = owner_of(name);
  REQUIRE(owner);
  REQUIRE(*owner != 0);
  const std::string lease = shm_path(lease_file(*owner));
  CHECK(region_exists(name));

  auto get = kura_run({"get", name + "[2]"});
  INFO(get.err);
  CHECK(get.code == 0);
  CHECK(get.out == "strings[2] \"held\" NA\n");
  auto json = kura_run({"get", "--json", name + "[2]"});
  CHECK(Json::parse(json.out) == Json::parse(R"({"type": "strings", "values": ["held", null]})"));

  auto ls = kura_run({"ls", "--json"});
  bool alive = false;
  const Json listing = Json::parse(ls.out);
  for (const auto& r : listing["regions"])
    if (r["name"] == name) alive = r["alive"] == true && r["kept"] == false;
  CHECK(alive);

  // Still held: nothing releases it but the signal.
  CHECK_FALSE(put.wait(100ms));
  put.signal(sig);
  auto code = put.wait(20s);
  REQUIRE(code);
  CHECK(*code == 0);
  CHECK(put.err().empty());
  CHECK_FALSE(region_exists(name));
  struct stat st;
  CHECK(::stat(lease.c_str(), &st) != 0);
  scope.check_clean();
}

TEST_CASE("kura exit codes: usage, invalid name, not found, out of range", "[tools][multiprocess]") {
  ShmScope scope;
  auto help = kura_run({"--help"});
  CHECK(help.code == 0);
  for (const char* cmd : {"put", "get", "inspect", "verify", "ls", "rm", "prune"}) {
    INFO(cmd);
    CHECK(help.out.find(cmd) != std::string::npos);
    auto sub = kura_run({cmd, "--help"});
    CHECK(sub.code == 0);
    CHECK(sub.out.find(cmd) != std::string::npos);
  }
  CHECK(kura_run({}).code == 2);
  CHECK(kura_run({"frobnicate"}).code == 2);
  CHECK(kura_run({"get"}).code == 2);
  CHECK(kura_run({"get", "--bogus", "/kura_0_1"}).code == 2);

  for (const char* bad : {"kura_0_1", "/kura_0_01", "/kura_0_1[0]", "/kura_0_1[]", "/kura_0_1[1,]",
                          "/KURA_0_1", "/kura_0_1 ", "/kura_0_1/..", "/kura_0_1[9223372036854775808]"}) {
    INFO(bad);
    auto r = kura_run({"get", bad});
    CHECK(r.code == 2);
    CHECK(r.err.rfind("kura: ", 0) == 0);
  }
  const std::string missing = fresh_kept_name();
  auto nf = kura_run({"get", missing});
  CHECK(nf.code == 3);
  CHECK(nf.err.rfind("kura: ", 0) == 0);
  CHECK(kura_run({"verify", missing}).code == 3);
  CHECK(kura_run({"inspect", missing + "[1]"}).code == 3);

  auto bad_json = kura_run({"put", "--keep", "-"},
                           R"({"type": "list", "values": [{"type": "i32", "values": [1, null]}]})");
  CHECK(bad_json.code == 2);
  CHECK(bad_json.err.find("$.values[0].values[1]") != std::string::npos);
  CHECK(kura_run({"put", "--keep", "-"}, "not json").code == 2);
  CHECK(kura_run({"put", "--keep", "/nonexistent/file.json"}).code == 1);

  auto put = kura_run({"put", "--keep", "-"},
                      R"({"type": "list", "values": [{"type": "f64", "values": [1.0]}, {"type": "null"}]})");
  REQUIRE(put.code == 0);
  const std::string name = last_line(put.out);
  scope.track(name);
  auto oor = kura_run({"get", name + "[3]"});
  CHECK(oor.code == 5);
  CHECK(oor.err.find("past the end") != std::string::npos);
  CHECK(kura_run({"get", name + "[1,1]"}).code == 5);  // f64 is not a list
  CHECK(kura_run({"inspect", name + "[2,1]"}).code == 5);
  CHECK(kura_run({"rm", name + "[1]"}).code == 2);
  CHECK(kura_run({"rm", name}).code == 0);
  scope.check_clean();
}

TEST_CASE("kura get summarises long arrays and lists unless --all", "[tools][multiprocess]") {
  ShmScope scope;
  std::string doc = R"({"type": "list", "values": [{"type": "i32", "values": [)";
  for (int i = 1; i <= 1000; ++i) doc += (i > 1 ? ", " : "") + std::to_string(i);
  doc += "]}";
  for (int i = 0; i < 30; ++i) doc += R"(, {"type": "null"})";
  doc += "]}";
  auto put = kura_run({"put", "--keep", "-"}, doc);
  REQUIRE(put.code == 0);
  const std::string name = last_line(put.out);
  scope.track(name);

  auto summary = kura_run({"get", name + "[1]"});
  CHECK(summary.out == "i32[1000] 1 2 3 4 5 ... (990 more) ... 996 997 998 999 1000\n");
  auto all = kura_run({"get", "--all", name + "[1]"});
  CHECK(all.out.find(" 499 500 501 ") != std::string::npos);
  auto list = kura_run({"get", name});
  CHECK(list.out.find("list[31]") != std::string::npos);
  CHECK(list.out.find("(21 more children)") != std::string::npos);
  auto json = kura_run({"get", "--json", name});
  CHECK(Json::parse(json.out)["values"][0]["values"].size() == 1000);
  CHECK(kura_run({"rm", name}).code == 0);
  scope.check_clean();
}

TEST_CASE("kura on corrupt regions exits 4", "[tools][multiprocess]") {
  ShmScope scope;
  SECTION("verify finds a flipped data byte") {
    kura::Bytes image = image_of(R"({"type": "list", "values": [{"type": "f64", "values": [1.5, 2.5]}]})");
    image[image.size() - 64] ^= std::byte{0x01};  // inside the f64 data block, the last piece
    const std::string name = write_region_file(image);
    scope.track(name);
    CHECK(kura_run({"get", name}).code == 0);  // mapping does not hash
    auto v = kura_run({"verify", name});
    CHECK(v.code == 4);
    CHECK(v.err.find("verify") != std::string::npos);
    CHECK(kura_run({"verify", name + "[1]"}).code == 4);
    CHECK(kura_run({"rm", name}).code == 0);
  }
  SECTION("two links to one node (a DAG, not a tree)") {
    std::string values;
    for (int i = 0; i < 512; ++i) values += (i ? ",1" : "1");
    kura::Bytes image = image_of(R"({"type": "list", "values": [{"type": "f64", "values": [)" + values +
                                 R"(]}, {"type": "f64", "values": [2]}]})");
    // The second child offset of the root (at 64) is made to repeat the first.
    std::uint64_t block = 0, first = 0;
    std::memcpy(&block, image.data() + 64 + 16, 8);
    std::memcpy(&first, image.data() + block, 8);
    std::memcpy(image.data() + block + 8, &first, 8);
    const std::string name = write_region_file(image);
    scope.track(name);
    CHECK(kura_run({"get", name + "[2]"}).code == 0);  // one step is fine
    auto json = kura_run({"get", "--json", name});
    CHECK(json.code == 4);
    CHECK(json.err.find("shared link") != std::string::npos);
    CHECK(kura_run({"get", name}).code == 4);
    CHECK(kura_run({"inspect", name}).code == 4);
    CHECK(kura_run({"rm", name}).code == 0);
  }
  SECTION("an unsupported version") {
    kura::Bytes image = image_of(R"({"type": "null"})");
    image[4] = std::byte{2};
    std::uint64_t h = kura::region_header_hash(std::span<const std::byte>(image.data(), 56));
    std::memcpy(image.data() + 56, &h, 8);
    const std::string name = write_region_file(image);
    scope.track(name);
    auto r = kura_run({"get", name});
    CHECK(r.code == 4);
    CHECK(r.err.find("version") != std::string::npos);
    CHECK(kura_run({"rm", name}).code == 0);
  }
  SECTION("an lgl value other than 0, 1 and NA") {
    kura::Bytes image = image_of(R"({"type": "lgl", "values": [true]})");
    image[128] = std::byte{2};  // the root's data block
    const std::string name = write_region_file(image);
    scope.track(name);
    auto r = kura_run({"get", "--json", name});
    CHECK(r.code == 4);
    CHECK(r.err.find("lgl element 1 holds 2") != std::string::npos);
    CHECK(kura_run({"get", name}).code == 4);
    CHECK(kura_run({"verify", name}).code == 4);  // and its hash no longer matches
    CHECK(kura_run({"rm", name}).code == 0);
  }
  SECTION("a bad region header") {
    kura::Bytes image = image_of(R"({"type": "null"})");
    image[0] = std::byte{'X'};
    const std::string name = write_region_file(image);
    scope.track(name);
    CHECK(kura_run({"inspect", name}).code == 4);
    CHECK(kura_run({"rm", name}).code == 0);
  }
  scope.check_clean();
}

TEST_CASE("kura prune removes the regions of a dead owner", "[tools][multiprocess]") {
  ShmScope scope;
  std::string name, lease;
  {
    kura::test::Process put({kTool, "put", "-"});
    put.send(R"({"type": "i32", "values": [1, 2, 3]})");
    auto line = put.read_line(20s);
    INFO("stderr: " << put.err());
    REQUIRE(line);
    name = *line;
    scope.track(name);
    const auto owner = owner_of(name);
    REQUIRE(owner);
    REQUIRE(*owner != 0);
    lease = lease_file(*owner);
    put.signal(SIGKILL);
    auto code = put.wait(20s);
    REQUIRE(code);
    CHECK(*code == 128 + SIGKILL);
  }
  REQUIRE(region_exists(name));  // killed: nothing cleaned up
  auto ls = kura_run({"ls", "--json"});
  bool orphan = false;
  const Json listing = Json::parse(ls.out);
  for (const auto& r : listing["regions"])
    if (r["name"] == name) orphan = r["alive"] == false;
  CHECK(orphan);
  CHECK(kura_run({"ls"}).out.find("orphan") != std::string::npos);

  auto prune = kura_run({"prune"});
  CHECK(prune.code == 0);
  CHECK(prune.out.find(name) != std::string::npos);
  CHECK_FALSE(region_exists(name));
  CHECK_FALSE(std::filesystem::exists(shm_path(lease)));
  scope.check_clean();
}

TEST_CASE("kura exits 4 when a region is truncated while it reads it (SIGBUS)", "[tools][multiprocess]") {
  ShmScope scope;
  // 8 MiB of doubles: far more text than a pipe holds, so `kura get --json`
  // blocks on its stdout, mapping in hand, until the test reads.
  std::vector<double> xs(1 << 20, 1.5);
  kura::Value v = kura::Value::array<kura::Dtype::kF64>(std::span<const double>(xs));
  auto image = kura::build(v, kura::Stamp{1, 1}, true);
  REQUIRE(image.is_ok());
  int fd = -1;
  const std::string name = write_region_file(*image, &fd);
  scope.track(name);

  kura::test::Process get({kTool, "get", "--json", name});
  get.close_stdin();
  // The first bytes of output mean the region is mapped and being read.
  REQUIRE(get.read_some(20s));
  REQUIRE(::ftruncate(fd, 4096) == 0);
  ::close(fd);
  auto code = get.wait(60s);
  REQUIRE(code);
  INFO(get.err());
  CHECK(*code == 4);
  CHECK(get.err().find("SIGBUS") != std::string::npos);
  CHECK(kura_run({"rm", name}).code == 0);
  scope.check_clean();
}

TEST_CASE("kura reads a region that a C++ process shared, whole and by path", "[tools][multiprocess]") {
  kura::Value sample = kura::test::sample_value();
  auto shared = kura::shm::share(sample);
  REQUIRE(shared.is_ok());
  const std::string name = shared->name();

  auto whole = kura_run({"get", "--json", name});
  REQUIRE(whole.code == 0);
  auto value = kura::tool::parse_typed_json(whole.out);
  REQUIRE(value.is_ok());
  CHECK(*value == sample);

  auto part = kura_run({"get", "--json", name + kura::test::kSamplePath});
  REQUIRE(part.code == 0);
  auto part_value = kura::tool::parse_typed_json(part.out);
  REQUIRE(part_value.is_ok());
  CHECK(*part_value == kura::test::sample_at_path());

  auto verify = kura_run({"verify", name});
  CHECK(verify.code == 0);
  REQUIRE(shared->release().is_ok());
  CHECK(kura_run({"get", name}).code == 3);
}

namespace {

kura::NodeHeader header_at(const kura::Bytes& b, std::uint64_t offset) {
  kura::NodeHeader h;
  std::memcpy(&h, b.data() + offset, sizeof h);
  return h;
}

template <class T>
void poke(kura::Bytes& b, std::uint64_t offset, T v) {
  std::memcpy(b.data() + offset, &v, sizeof v);
}

// Recomputes the hash of the node at `offset` after its header or block was
// changed, so that only the damage under test is wrong.
void rehash(kura::Bytes& b, std::uint64_t offset) {
  const kura::NodeHeader h = header_at(b, offset);
  poke<std::uint64_t>(b, offset + offsetof(kura::NodeHeader, hash),
                      kura::node_hash(std::span<const std::byte>(b.data() + offset, 64),
                                      std::span<const std::byte>(b.data() + h.data_offset, h.data_size)));
}

// Points entries 2.. of the strings node at `strings` at the bytes of entry
// 1, `nbytes` long: every entry then lies inside the block (all FORMAT.md 4.2
// asks), and the node holds far more string bytes than the region.
void share_string_bytes(kura::Bytes& b, std::uint64_t strings, std::int32_t nbytes) {
  const kura::NodeHeader h = header_at(b, strings);
  for (std::uint64_t i = 1; i < h.length; ++i) {
    poke<std::uint64_t>(b, h.data_offset + 16 * i, 0);
    poke<std::int32_t>(b, h.data_offset + 16 * i + 8, nbytes);
  }
  rehash(b, strings);
}

std::vector<std::string> put_argv(bool keep) {
  std::vector<std::string> argv = {kTool, "put"};
  if (keep) argv.push_back("--keep");
  argv.push_back("-");
  return argv;
}

}  // namespace

TEST_CASE("kura put refuses to start when standard output is closed, and creates nothing",
          "[tools][multiprocess]") {
  for (bool keep : {true, false}) {
    INFO("--keep " << keep);
    const auto before = shm_entries();
    kura::test::Process put(put_argv(keep), kura::test::Stdout::kClosed);
    put.send(R"({"type": "i32", "values": [1, 2]})");
    auto code = put.wait(20s);
    REQUIRE(code);
    INFO(put.err());
    CHECK(*code == 1);
    CHECK(put.err().find("standard output is closed") != std::string::npos);
    CHECK(shm_entries() == before);
  }
}

TEST_CASE("kura put removes the region whose name it cannot print (stdout on /dev/full)",
          "[tools][multiprocess]") {
  for (bool keep : {true, false}) {
    INFO("--keep " << keep);
    const auto before = shm_entries();
    kura::test::Process put(put_argv(keep), kura::test::Stdout::kDevFull);
    put.send(R"({"type": "i32", "values": [1, 2]})");
    auto code = put.wait(20s);
    REQUIRE(code);
    INFO(put.err());
    CHECK(*code == 1);
    CHECK(put.err().find("cannot write the name") != std::string::npos);
    CHECK(shm_entries() == before);
  }
}

TEST_CASE("kura put of a document larger than its memory limit exits 1 saying out of memory",
          "[tools][multiprocess]") {
#ifdef KURA_TEST_ASAN
  WARN("skipped: an AddressSanitizer build cannot start under a memory limit (RLIMIT_AS)");
#else
  // 12 million f64 zeros: 24 MB of text, 96 MB of values, under a 64 MiB
  // limit on the address space.
  const auto before = shm_entries();
  std::string doc = R"({"type": "list", "values": [{"type": "f64", "values": [0)";
  doc.reserve(24'000'100);
  for (int i = 1; i < 12'000'000; ++i) doc += ",0";
  doc += "]}]}";
  auto r = kura::test::run(
      {"/usr/bin/prlimit", "--as=" + std::to_string(64 << 20), "--core=0", "--", kTool, "put", "--keep", "-"},
      doc, 120s);
  INFO(r.err);
  CHECK(r.code == 1);  // not 128 + SIGABRT
  CHECK(r.err.find("kura: put: standard input: out of memory") != std::string::npos);
  CHECK(r.out.empty());
  CHECK(shm_entries() == before);
#endif
}

TEST_CASE("kura on a bytes tag that is not printable ASCII exits 4 and prints no raw byte of it",
          "[tools][multiprocess]") {
  ShmScope scope;
  // Each replaces all four bytes of "json"; the other four stay zero.
  for (const std::string& tag :
       {std::string("js\xffn"), std::string("\xff\0\0\0", 4), std::string("js\0n", 4)}) {
    kura::Bytes image =
        image_of(R"({"type": "list", "values": [{"type": "bytes", "tag": "json", "base64": "e30="}]})");
    std::uint64_t blob = 0;
    std::memcpy(&blob, image.data() + header_at(image, 64).data_offset, 8);  // the list's one child
    std::memcpy(image.data() + blob + offsetof(kura::NodeHeader, tag), tag.data(), 4);
    const std::string name = write_region_file(image);
    scope.track(name);
    for (const auto& args : std::vector<std::vector<std::string>>{{"get", "--json", name},
                                                                  {"get", name},
                                                                  {"get", "--json", name + "[1]"},
                                                                  {"inspect", name},
                                                                  {"verify", name}}) {
      auto r = kura_run(args);
      INFO(args[0] << " " << args[1] << ": " << r.err);
      CHECK(r.code == 4);
      CHECK(r.out.find('\xff') == std::string::npos);
      CHECK(r.err.find('\xff') == std::string::npos);
      CHECK(r.err.find("tag") != std::string::npos);
    }
    CHECK(kura_run({"rm", name}).code == 0);
  }
  scope.check_clean();
}

TEST_CASE("kura output stays O(region size) when string entries share their bytes", "[tools][multiprocess]") {
  ShmScope scope;
  // 3000 strings (or names) of 3000 bytes each, all the same bytes: a region
  // of about 250 KB that would print 9 MB.
  constexpr int kCount = 3000;
  const std::string long_text(3000, 'x');
  std::string strings = R"({"type": "strings", "values": [")" + long_text + "\"";
  std::string names = R"({"type": "list", "values": [{"type": "null"})";
  std::string name_list = R"(, "names": [")" + long_text + "\"";
  for (int i = 1; i < kCount; ++i) {
    strings += R"(, "")";
    names += R"(, {"type": "null"})";
    name_list += R"(, "")";
  }
  strings += "]}";
  names += "]" + name_list + "]}";

  struct Case {
    std::string doc;
    bool names;
  };
  for (const Case& c : {Case{strings, false}, Case{names, true}}) {
    kura::Bytes image = image_of(c.doc);
    const std::uint64_t node = c.names ? header_at(image, 64).names_offset : 64;
    share_string_bytes(image, node, 3000);
    const std::string name = write_region_file(image);
    scope.track(name);
    INFO((c.names ? "names" : "strings") << " of a region of " << image.size() << " bytes");
    CHECK(kura_run({"verify", name}).code == 0);  // structure and hashes: fine
    for (const auto& args : std::vector<std::vector<std::string>>{
             {"get", "--json", name}, {"get", "--all", name}, {"inspect", "--all", name}}) {
      if (!c.names && args[0] == "inspect") continue;  // inspect prints no strings of a strings node
      auto r = kura_run(args);
      INFO(args[0] << " " << args[1] << ": " << r.err);
      CHECK(r.code == 4);
      CHECK(r.err.find("share their bytes") != std::string::npos);
      CHECK(r.out.size() < 2 * image.size());
    }
    // Summaries read only the strings they show.
    auto summary = kura_run({"get", name});
    CHECK(summary.code == 0);
    CHECK(summary.out.size() < 64 * 1024);
    CHECK(kura_run({"rm", name}).code == 0);
  }
  scope.check_clean();
}

TEST_CASE("kura verify exits 4 on a node reached by two links, which no count notices",
          "[tools][multiprocess]") {
  ShmScope scope;
  kura::Bytes image = image_of(
      R"({"type": "list", "values": [{"type": "f64", "values": [1]}, {"type": "f64", "values": [2]}]})");
  const kura::NodeHeader list = header_at(image, 64);
  std::uint64_t first = 0;
  std::memcpy(&first, image.data() + list.data_offset, 8);
  poke<std::uint64_t>(image, list.data_offset + 8, first);
  rehash(image, 64);  // only the tree rule is broken
  const std::string name = write_region_file(image);
  scope.track(name);
  CHECK(kura_run({"get", "--json", name}).code == 0);
  auto v = kura_run({"verify", name});
  INFO(v.err);
  CHECK(v.code == 4);
  CHECK(v.err.find("reached by two links") != std::string::npos);
  CHECK(kura_run({"rm", name}).code == 0);
  scope.check_clean();
}

TEST_CASE("kura get --json prints valid JSON while another process rewrites the strings it reads",
          "[tools][multiprocess]") {
  ShmScope scope;
  // 2000 strings of 128 bytes, each valid UTF-8 ("é" 64 times) or not
  // (0xFF 0xA9 ...) depending on when it is read.
  std::string doc = R"({"type": "strings", "values": [)";
  std::string e_acute;
  for (int i = 0; i < 64; ++i) e_acute += "\u00e9";
  for (int i = 0; i < 2000; ++i) doc += (i ? ", \"" : "\"") + e_acute + "\"";
  doc += "]}";
  kura::Bytes image = image_of(doc);
  const kura::NodeHeader h = header_at(image, 64);
  const std::uint64_t packed = h.data_offset + kura::align64(16 * h.length);
  int fd = -1;
  const std::string name = write_region_file(image, &fd);
  scope.track(name);
  void* map = ::mmap(nullptr, image.size(), PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  ::close(fd);
  REQUIRE(map != MAP_FAILED);
  volatile unsigned char* bytes = static_cast<unsigned char*>(map);

  // Flips the lead byte of every "é" between 0xC3 (valid) and 0xFF (never
  // valid UTF-8), one string after another, until told to stop.
  std::atomic<bool> stop{false};
  std::thread flipper([&] {
    for (unsigned char lead = 0xFF; !stop.load(std::memory_order_relaxed); lead ^= 0xC3 ^ 0xFF)
      for (std::uint64_t s = 0; s < h.length; ++s)
        for (std::uint64_t k = 0; k < 128; k += 2) bytes[packed + 129 * s + k] = lead;
  });
  int runs = 0, with_bytes_form = 0;
  for (; runs < 20; ++runs) {
    auto r = kura_run({"get", "--json", name});
    INFO("run " << runs << ": " << r.err);
    CHECK(r.code == 0);
    Json j;
    CHECK_NOTHROW(j = Json::parse(r.out));
    if (r.out.find("\"bytes\"") != std::string::npos) ++with_bytes_form;
  }
  stop = true;
  flipper.join();
  ::munmap(map, image.size());
  INFO(with_bytes_form << " of " << runs << " outputs held strings read while invalid");
  CHECK(runs == 20);
  CHECK(kura_run({"rm", name}).code == 0);
  scope.check_clean();
}

TEST_CASE("kura never blocks on a FIFO planted as a region or as a lease", "[tools][multiprocess]") {
  ShmScope scope;
  // A FIFO under a region-shaped name, and a region whose owner's lease is a
  // FIFO. Each command runs with a bounded wait (kura_run fails the test if
  // it does not finish within 30 s): opening a FIFO for reading would block.
  const std::string fifo_region = "/kura_0_f1f0f1f0";
  REQUIRE(::mkfifo(shm_path(fifo_region).c_str(), 0600) == 0);
  kura::Value v = kura::Value::i32({7});
  auto image = kura::build(v, kura::Stamp{}, true);
  REQUIRE(image.is_ok());
  const std::string owned = "/kura_abcdef_1";
  {
    int fd = ::open(shm_path(owned).c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, 0400);
    REQUIRE(fd >= 0);
    REQUIRE(::write(fd, image->data(), image->size()) == static_cast<ssize_t>(image->size()));
    ::close(fd);
  }
  const std::string fifo_lease = shm_path("kura_abcdef.lock");
  REQUIRE(::mkfifo(fifo_lease.c_str(), 0600) == 0);

  for (const char* cmd : {"get", "inspect", "verify"}) {
    auto r = kura_run({cmd, fifo_region});
    INFO(cmd << ": " << r.err);
    CHECK(r.code == 1);  // permission: not a regular file
    CHECK(r.err.find("not a regular file") != std::string::npos);
  }
  auto ls = kura_run({"ls", "--json"});
  REQUIRE(ls.code == 0);
  const Json listing = Json::parse(ls.out);
  bool listed = false;
  for (const auto& r : listing["regions"]) {
    if (r["name"] != owned) continue;
    listed = true;
    CHECK(r["alive"] == true);  // a FIFO proves nothing: the owner counts as alive
  }
  CHECK(listed);
  auto prune = kura_run({"prune"});
  CHECK(prune.code == 0);
  CHECK(region_exists(owned));  // not removed: its owner could not be proved dead
  CHECK(kura_run({"get", owned}).code == 0);
  ::unlink(shm_path(fifo_region).c_str());
  ::unlink(shm_path(owned).c_str());
  ::unlink(fifo_lease.c_str());
}

TEST_CASE("kura --dir works in that directory alone, shows its pages, and refuses an unsafe one",
          "[tools][multiprocess]") {
  ShmScope scope;
  const std::string other = kura::test::shm_dir() + "/other";
  REQUIRE(::mkdir(other.c_str(), 0700) == 0);
  struct Remove {
    std::string dir;
    ~Remove() { std::filesystem::remove_all(dir); }
  } remove{other};

  auto put = kura_run({"--dir", other, "put", "--keep", "-"}, R"({"type": "f64", "values": [1.5, 2.5]})");
  INFO("stderr: " << put.err);
  REQUIRE(put.code == 0);
  const std::string name = put.out.substr(0, put.out.find('\n'));
  REQUIRE(owner_of(name));
  CHECK(std::filesystem::exists(other + name));  // the name starts with '/'
  CHECK_FALSE(region_exists(name));              // not in the default directory

  // Readers find it only in that directory.
  CHECK(kura_run({"--dir", other, "get", name}).out == "f64[2] 1.5 2.5\n");
  CHECK(kura_run({"get", name}).code == 3);

  // ls names it, with a PAGES column that agrees with the JSON and with
  // the directory's page size.
  auto ls = kura_run({"--dir", other, "ls"});
  REQUIRE(ls.code == 0);
  CHECK(ls.out.find("PAGES") != std::string::npos);
  const auto row_at = ls.out.find(name);
  REQUIRE(row_at != std::string::npos);
  const std::string row = ls.out.substr(row_at, ls.out.find('\n', row_at) - row_at);
  const Json listing = Json::parse(kura_run({"--dir", other, "ls", "--json"}).out);
  CHECK(listing["space"]["directory"] == other);
  REQUIRE(listing["regions"].size() == 1);
  if (listing["space"]["page_size"] == 4096) {
    CHECK(listing["regions"][0]["huge_page_bytes"] == 0);
    CHECK(row.substr(row.size() - 2) == "4K");
  }

  CHECK(kura_run({"--dir", other, "rm", name}).code == 0);
  CHECK_FALSE(std::filesystem::exists(other + name));

  // Unsafe directories: refused with the reason, nothing created in them.
  const std::string link = kura::test::shm_dir() + "/link";
  REQUIRE(::symlink(other.c_str(), link.c_str()) == 0);
  const std::string open_dir = kura::test::shm_dir() + "/open";
  REQUIRE(::mkdir(open_dir.c_str(), 0700) == 0);
  REQUIRE(::chmod(open_dir.c_str(), 0777) == 0);  // writable by all, not sticky
  struct RemoveAll {
    std::string a, b;
    ~RemoveAll() {
      ::unlink(a.c_str());
      ::rmdir(b.c_str());
    }
  } remove_all{link, open_dir};
  const std::string doc = R"({"type": "i32", "values": [1]})";
  for (const auto& [dir, why] : std::vector<std::pair<std::string, std::string>>{
           {link, "symbolic link"}, {open_dir, "writable by group or other"}, {"relative/dir", "absolute"}}) {
    auto r = kura_run({"--dir", dir, "put", "--keep", "-"}, doc);
    INFO(dir << ": " << r.err);
    CHECK(r.code != 0);
    CHECK(r.out.empty());
    CHECK(r.err.find(why) != std::string::npos);
  }
  CHECK(std::filesystem::is_empty(other));
  CHECK(std::filesystem::is_empty(open_dir));
  scope.check_clean();
}
