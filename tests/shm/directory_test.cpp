// The region directory (kura/shm/directory.hpp): fixed once per process,
// checked before use, set from C++ before first use, and regions in huge
// pages where its file system offers them.
#include "kura/shm/directory.hpp"

#include <fcntl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <chrono>
#include <cstdlib>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "child.hpp"
#include "kura/shm/region.hpp"
#include "shm_guard.hpp"
#include "test_util.hpp"

using namespace kura;

namespace {

// A fresh directory under the test's region directory, removed (with what
// is in it) at the end of the scope.
struct TempDir {
  std::string path;
  explicit TempDir(mode_t mode) {
    std::string templ = test::shm_dir() + "/dirtest.XXXXXX";
    std::vector<char> buf(templ.begin(), templ.end());
    buf.push_back('\0');
    REQUIRE(::mkdtemp(buf.data()) != nullptr);
    path = buf.data();
    REQUIRE(::chmod(path.c_str(), mode) == 0);
  }
  ~TempDir() {
    (void)::chmod(path.c_str(), 0700);
    std::string cmd = "rm -rf '" + path + "'";
    (void)std::system(cmd.c_str());
  }
  bool empty() const {
    std::unique_ptr<DIR, int (*)(DIR*)> d(::opendir(path.c_str()), ::closedir);
    if (!d) return false;
    while (dirent* de = ::readdir(d.get()))
      if (std::string(de->d_name) != "." && std::string(de->d_name) != "..") return false;
    return true;
  }
};

// Runs the helper `set-dir HOW DIR` and returns its lines.
std::vector<std::string> set_dir(const std::string& how, const std::string& dir) {
  auto c = test::Child::helper({"set-dir", how, dir});
  auto lines = c.read_all();
  const int status = c.wait();
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  REQUIRE(!lines.empty());
  return lines;
}

bool starts_with(const std::string& s, const std::string& prefix) {
  return s.rfind(prefix, 0) == 0;
}

}  // namespace

TEST_CASE("the region directory is fixed at first use, and set_directory takes the same one only", "[shm]") {
  test::ShmGuard guard;
  CHECK(shm::directory() == test::shm_dir());
  CHECK(shm::check_directory().is_ok());
  CHECK(shm::set_directory(test::shm_dir()).is_ok());
  CHECK(shm::set_directory(test::shm_dir() + "//").is_ok());  // trailing slashes do not matter
  TempDir other(0700);
  Status s = shm::set_directory(other.path);
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(s.message().find("already " + test::shm_dir()) != std::string::npos);
  CHECK(s.message().find("call set_directory first") != std::string::npos);
  CHECK(shm::directory() == test::shm_dir());  // unchanged
}

TEST_CASE("set_directory before first use puts every region there and passes it to child processes",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  for (const char* how : {"set", "env"}) {
    TempDir dir(0700);
    auto lines = set_dir(how, dir.path);
    INFO("helper said: " << lines[0]);
    REQUIRE(lines.size() == 4);
    CHECK(lines[0] == "check ok: ");
    CHECK(starts_with(lines[1], "shared /kura_"));
    CHECK(lines[2] == "in-dir yes");
    CHECK(lines[3] == "env " + dir.path);
    CHECK(dir.empty());  // released, and the helper's lease removed at its exit
  }
}

TEST_CASE("a directory refused at first use because it was missing is good once set_directory names it",
          "[shm][multiprocess]") {
  test::ShmGuard guard;
  TempDir parent(0700);
  const std::string dir = parent.path + "/late";
  auto lines = set_dir("late", dir);
  INFO("helper said: " << lines[0]);
  REQUIRE(lines.size() == 6);
  CHECK(lines[0] == "first not found");
  CHECK(lines[1] == "set ok: ");
  CHECK(lines[2] == "check ok: ");
  CHECK(starts_with(lines[3], "shared /kura_"));
  CHECK(lines[4] == "in-dir yes");
  CHECK(lines[5] == "env " + dir);
}

TEST_CASE("set_directory refuses a path with a NUL byte in it", "[shm]") {
  using namespace std::string_view_literals;
  const Status s = shm::set_directory("/dev/shm\0/elsewhere"sv);
  CHECK(s.code() == Code::kInvalidArgument);
  CHECK(s.message().find("NUL") != std::string::npos);
}

TEST_CASE("a configured region directory is checked before use, with a clear error", "[shm][multiprocess]") {
  test::ShmGuard guard;
  struct Case {
    std::string what, dir, code, message;
  };
  TempDir base(0700);
  const std::string b = base.path;
  REQUIRE(::mkdir((b + "/open").c_str(), 0700) == 0);
  REQUIRE(::chmod((b + "/open").c_str(), 0777) == 0);
  REQUIRE(::mkdir((b + "/group").c_str(), 0700) == 0);
  REQUIRE(::chmod((b + "/group").c_str(), 0770) == 0);
  REQUIRE(::mkdir((b + "/sticky").c_str(), 0700) == 0);
  REQUIRE(::chmod((b + "/sticky").c_str(), 01777) == 0);
  REQUIRE(::mkdir((b + "/mine").c_str(), 0700) == 0);
  REQUIRE(::symlink((b + "/mine").c_str(), (b + "/link").c_str()) == 0);
  {
    FILE* f = std::fopen((b + "/file").c_str(), "w");
    REQUIRE(f != nullptr);
    std::fclose(f);
  }
  std::vector<Case> cases = {
      {"relative", "relative/dir", "invalid argument", "is not an absolute path"},
      {"missing", b + "/missing", "not found", "does not exist"},
      {"symlink", b + "/link", "permission denied", "is a symbolic link"},
      {"file", b + "/file", "invalid argument", "is not a directory"},
      {"open to all", b + "/open", "permission denied", "writable by group or other without the sticky bit"},
      {"open to the group", b + "/group", "permission denied", "writable by group or other"},
      {"sticky, like /dev/shm", b + "/sticky", "ok", ""},
      {"mine, 0700", b + "/mine", "ok", ""},
  };
  if (::geteuid() == 0) {
    // Another user's directory: refused unless sticky.
    REQUIRE(::mkdir((b + "/theirs").c_str(), 0755) == 0);
    REQUIRE(::chown((b + "/theirs").c_str(), 65534, 65534) == 0);
    REQUIRE(::mkdir((b + "/theirs-sticky").c_str(), 0700) == 0);
    REQUIRE(::chmod((b + "/theirs-sticky").c_str(), 01777) == 0);
    REQUIRE(::chown((b + "/theirs-sticky").c_str(), 65534, 65534) == 0);
    cases.push_back({"another user's", b + "/theirs", "permission denied", "belongs to user 65534"});
    cases.push_back({"another user's, sticky", b + "/theirs-sticky", "ok", ""});
  } else {
    WARN("SKIPPED: another user's directory (needs root to chown)");
  }
  for (const Case& c : cases) {
    for (const char* how : {"set", "env"}) {
      INFO(c.what << " through " << how);
      auto lines = set_dir(how, c.dir);
      INFO("helper said: " << lines[0]);
      const std::string expect = "check " + c.code + ": ";
      REQUIRE(starts_with(lines[0], expect));
      CHECK(lines[0].find(c.message) != std::string::npos);
      if (c.code != "ok") {
        REQUIRE(lines.size() == 2);
        if (std::string(how) == "env") {
          CHECK(lines[1] == "share " + c.code);
        } else {
          CHECK(lines[1] == "share ok in " + test::shm_dir());  // nothing changed
        }
      } else {
        REQUIRE(lines.size() == 4);
        CHECK(lines[2] == "in-dir yes");
      }
    }
  }
}

TEST_CASE("regions lie in huge pages exactly where the directory's file system offers them", "[shm]") {
  test::ShmGuard guard;
  auto info = shm::directory_info();
  REQUIRE(info.is_ok());
  CHECK(info->path == test::shm_dir());
  INFO("directory: " << info->fs_type << " " << info->mount_options << " (" << info->reason << ")");
  // kura_shm_tests_huge_pages (tests/shm/huge_pages.sh) runs this suite on a
  // tmpfs mounted huge=always and says so here.
  const char* expect = std::getenv("KURA_TEST_HUGE_PAGES");
  const bool huge_run = expect != nullptr && std::string(expect) == "always";
  if (huge_run) {
    CHECK(info->fs_type == "tmpfs");
    CHECK(info->huge == shm::HugePages::kAlways);
    CHECK(info->page_size == 2u << 20);
  }

  // 5 MiB and a bit: two whole huge pages and a tail of about 1 MiB.
  constexpr std::size_t n = (5u << 20) / 8;
  Value v = Value::array_in_place(Dtype::kF64, n);
  auto pending = shm::Pending::create(v, {.hashed = false});
  REQUIRE(pending.is_ok());
  auto xs = pending->array<double>(v);
  for (std::size_t i = 0; i < n; ++i) xs[i] = static_cast<double>(i);
  auto shared = std::move(*pending).publish();
  REQUIRE(shared.is_ok());
  auto pages = shm::region_pages(shared->name());
  REQUIRE(pages.is_ok());
  CHECK(pages->size == shared->size());
  switch (info->huge) {
    case shm::HugePages::kNever: CHECK(pages->huge_bytes == 0); break;
    case shm::HugePages::kAlways:
      // The kernel falls back to 4 KiB pages when it has no free 2 MiB
      // block; on a machine with free memory every page is huge.
      CHECK(pages->huge_bytes == pages->size);
      break;
    case shm::HugePages::kWithinSize:
    case shm::HugePages::kAdvise: CHECK(pages->huge_bytes == (4u << 20)); break;
  }
  auto m = shm::map(shared->name());
  REQUIRE(m.is_ok());
  auto read = m->node().array<Dtype::kF64>();
  REQUIRE(read.is_ok());
  CHECK((*read)[n - 1] == static_cast<double>(n - 1));

  CHECK(shm::region_pages(shared->name() + "[1]").status().code() == Code::kInvalidName);
  CHECK(shm::region_pages("/kura_1_1").status().code() == Code::kNotFound);
}

TEST_CASE("a full huge-page directory is NoSpace at create time, never a SIGBUS", "[shm][multiprocess]") {
  test::ShmGuard guard;
  for (const char* mode : {"always", "advise"}) {
    INFO("huge=" << mode);
    // A 4 MiB tmpfs over the region directory.
    auto run = test::helper_on_private_tmpfs("tmpfs", std::string("huge=") + mode + ",size=4m",
                                             {"nospace-huge", mode}, std::string("huge=") + mode);
    if (!run) return;
    const auto& lines = run->lines;
    const int status = run->status;
    INFO("helper said: " << lines[0]);
    REQUIRE(starts_with(lines[0], "nospace "));
    CHECK(WIFEXITED(status));
    CHECK(WEXITSTATUS(status) == 0);
    CHECK(lines[0].find("cannot create region of 6.0 MiB") != std::string::npos);
  }
}

TEST_CASE("region_pages allocates nothing in the holes of a sparse region", "[shm]") {
  test::ShmGuard guard;
  Value v = Value::array_in_place(Dtype::kU8, 4096);
  auto shared = shm::share(v);
  REQUIRE(shared.is_ok());
  // The owner's own file grown to 64 MiB of holes (as a buggy or hostile
  // process of the same user could): measuring it must not fill the holes,
  // which would take up to 64 MiB of the directory (and SIGBUS once it is full).
  const std::string path = test::shm_path(shared->name());
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  REQUIRE(::ftruncate(fd, 64 << 20) == 0);
  struct stat before;
  REQUIRE(::fstat(fd, &before) == 0);
  auto pages = shm::region_pages(shared->name());
  struct stat after;
  REQUIRE(::fstat(fd, &after) == 0);
  ::close(fd);
  REQUIRE(pages.is_ok());
  CHECK(pages->size == (64u << 20));
  CHECK(after.st_blocks == before.st_blocks);
}

TEST_CASE("region_pages survives a region truncated while it measures it (no SIGBUS)", "[shm]") {
  test::ShmGuard guard;
  constexpr off_t kSize = 16 << 20;
  Value v = Value::array_in_place(Dtype::kU8, static_cast<std::size_t>(kSize));
  auto shared = shm::share(v);
  REQUIRE(shared.is_ok());
  const std::string path = test::shm_path(shared->name());
  const int fd = ::open(path.c_str(), O_RDWR | O_CLOEXEC);
  REQUIRE(fd >= 0);
  // The child measures the region again and again while this process keeps
  // cutting it to nothing and filling it again.
  const pid_t child = ::fork();
  REQUIRE(child >= 0);
  if (child == 0) {
    for (int i = 0; i < 3000; ++i) (void)shm::region_pages(shared->name());
    ::_exit(0);
  }
  int status = 0;
  pid_t done = 0;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
  while ((done = ::waitpid(child, &status, WNOHANG)) == 0 && std::chrono::steady_clock::now() < deadline) {
    // Half of the time whole, half of the time empty (busy waits: this is
    // load, not synchronisation).
    (void)::ftruncate(fd, kSize);
    for (auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
         std::chrono::steady_clock::now() < until;) {
    }
    (void)::ftruncate(fd, 0);
    for (auto until = std::chrono::steady_clock::now() + std::chrono::microseconds(50);
         std::chrono::steady_clock::now() < until;) {
    }
  }
  (void)::ftruncate(fd, kSize);
  if (done == 0) {
    ::kill(child, SIGKILL);
    (void)::waitpid(child, &status, 0);
    FAIL("region_pages did not finish 3000 measurements in 60 s");
  }
  ::close(fd);
  INFO("child status " << status);
  CHECK(WIFEXITED(status));
  CHECK((WIFEXITED(status) && WEXITSTATUS(status) == 0));
}

TEST_CASE("huge pages are detected on a tmpfs mounted with an empty source", "[shm][multiprocess]") {
  test::ShmGuard guard;
  // /proc/self/mountinfo then shows "- tmpfs  rw,huge=always": an empty
  // field between two spaces, which must not shift the super options.
  auto run = test::helper_on_private_tmpfs("", "huge=always,size=4m", {"nospace-huge", "always"},
                                           "a mount with an empty source");
  if (!run) return;
  const auto& lines = run->lines;
  const int status = run->status;
  INFO("helper said: " << lines[0]);
  CHECK(starts_with(lines[0], "nospace "));
  CHECK(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
}
