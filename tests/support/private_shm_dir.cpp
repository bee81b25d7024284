#include "private_shm_dir.hpp"

#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <vector>

namespace kura::test {

namespace {

// True when some process holds the alive byte of the lease at `path` (the
// lock protocol of shm/fs_internal.hpp).
bool lease_held(const std::string& path) {
  int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
  if (fd < 0) return false;
  struct flock fl {};
  fl.l_type = F_WRLCK;
  fl.l_whence = SEEK_SET;
  fl.l_start = 0;
  fl.l_len = 1;
  bool held = ::fcntl(fd, F_OFD_GETLK, &fl) == 0 && fl.l_type != F_UNLCK;
  ::close(fd);
  return held;
}

bool ends_with(const std::string& s, const char* suffix) {
  std::size_t n = std::strlen(suffix);
  return s.size() >= n && s.compare(s.size() - n, n, suffix) == 0;
}

}  // namespace

std::string make_private_shm_dir() {
  const char* env = std::getenv("KURA_SHM_DIR");
  std::string base = (env != nullptr && *env != '\0') ? env : "/dev/shm";
  std::string templ = base + "/kura-test.XXXXXX";
  std::vector<char> buf(templ.begin(), templ.end());
  buf.push_back('\0');
  if (::mkdtemp(buf.data()) == nullptr) {
    std::fprintf(stderr, "test: cannot create a private region directory under %s: %s\n", base.c_str(),
                 std::strerror(errno));
    std::exit(2);
  }
  std::string dir = buf.data();
  // Like /dev/shm: sticky and open to all, so tests can plant other users' files.
  ::chmod(dir.c_str(), 01777);
  ::setenv("KURA_SHM_DIR", dir.c_str(), 1);
  return dir;
}

bool check_and_remove_private_shm_dir(const std::string& dir) {
  bool clean = true;
  std::vector<std::string> files;
  if (DIR* d = ::opendir(dir.c_str())) {
    while (dirent* de = ::readdir(d)) {
      std::string f = de->d_name;
      if (f != "." && f != "..") files.push_back(f);
    }
    ::closedir(d);
  }
  for (const std::string& f : files) {
    const std::string path = dir + "/" + f;
    if (!(ends_with(f, ".lock") && lease_held(path))) {
      std::fprintf(stderr, "test: left behind in the region directory: %s\n", path.c_str());
      clean = false;
    }
    ::unlink(path.c_str());
  }
  ::rmdir(dir.c_str());
  return clean;
}

const std::string& shm_dir() {
  static const std::string dir = [] {
    const char* env = std::getenv("KURA_SHM_DIR");
    return std::string((env != nullptr && *env != '\0') ? env : "/dev/shm");
  }();
  return dir;
}

std::string shm_path(const std::string& name) {
  if (!name.empty() && name.front() == '/') return shm_dir() + name;
  return shm_dir() + "/" + name;
}

}  // namespace kura::test
