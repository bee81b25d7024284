// The consumer processes of the hand-off benchmark: each waits for a
// hand-off, reads the array the way its method hands it over, sums it and
// reports when (handoff.hpp).
#include <fcntl.h>
#include <spawn.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <cerrno>
#include <cstring>
#include <memory>
#include <optional>
#include <string>

#include "bench_util.hpp"
#include "handoff.hpp"
#include "kura/shm/region.hpp"

extern char** environ;

namespace kura::bench::handoff {

namespace bip = boost::interprocess;

void send_all(int fd, const void* p, std::size_t n) {
  auto* c = static_cast<const char*>(p);
  while (n > 0) {
    ssize_t w = ::write(fd, c, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) die(std::string("write: ") + std::strerror(errno));
    c += w;
    n -= static_cast<std::size_t>(w);
  }
}

namespace {

// Reads up to n bytes; returns how many (0 at EOF).
std::size_t read_some(int fd, void* p, std::size_t n) {
  for (;;) {
    ssize_t r = ::read(fd, p, n);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) die(std::string("read: ") + std::strerror(errno));
    return static_cast<std::size_t>(r);
  }
}

// Fresh memory, as a process that receives an array allocates it.
double* fresh_buffer(std::size_t bytes) {
  void* p = ::mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED) die("mmap of a consumer buffer");
  return static_cast<double*>(p);
}

// Reads `bytes` from `fd` into fresh memory; `first` is set at the first data.
double* receive(int fd, std::size_t bytes, std::int64_t& first) {
  double* buf = fresh_buffer(bytes);
  auto* p = reinterpret_cast<char*>(buf);
  std::size_t got = 0;
  while (got < bytes) {
    std::size_t r = read_some(fd, p + got, bytes - got);
    if (r == 0) die("consumer: the data ended early");
    if (got == 0) first = now_ns();
    got += r;
  }
  return buf;
}

// The data a consumer holds until the producer has measured everyone.
struct Held {
  std::optional<shm::Mapped> mapped;
  std::unique_ptr<bip::managed_shared_memory> boost_shm;
  std::unique_ptr<bip::managed_mapped_file> boost_file;
  double* buf = nullptr;  // received into fresh memory
  std::size_t buf_size = 0;
  void release() {
    mapped.reset();
    boost_shm.reset();
    boost_file.reset();
    if (buf != nullptr) ::munmap(buf, buf_size);
    buf = nullptr;
  }
};

template <class Segment>
void consume_boost(const Go& go, Report& r, std::unique_ptr<Segment>& seg) {
  seg = std::make_unique<Segment>(bip::open_only, go.name);
  auto found = seg->template find<Raw>("data");
  if (found.first == nullptr || found.second * sizeof(double) != go.size) die("consumer: boost find failed");
  const double* xs = &found.first->v;
  volatile double x0 = xs[0];
  (void)x0;
  r.first_ns = now_ns();
  r.sum = sum(xs, go.size / sizeof(double));
  r.done_ns = now_ns();
}

}  // namespace

// `handoff_bench consumer`: control socket on fd 3, data socket on fd 4.
int consumer_main() {
  const int ctl = 3, data = 4;
  Report ready;
  ready.pss = pss_bytes();
  send_all(ctl, &ready, sizeof ready);
  Held held;
  for (;;) {
    Go go;
    ssize_t n = ::recv(ctl, &go, sizeof go, 0);
    if (n == 0) return 0;  // the producer is done with us
    if (n != sizeof go) die("consumer: bad message");
    Report r;
    if (go.step != Step::kHandOff) {
      if (go.step == Step::kMeasure) r.pss = pss_bytes();
      if (go.step == Step::kRelease) held.release();
      send_all(ctl, &r, sizeof r);
      continue;
    }
    const std::size_t count = go.size / sizeof(double);
    switch (go.method) {
      case Method::kInPlace:
      case Method::kShare: {
        auto m = shm::map(go.name);
        if (!m) die("consumer: map: " + m.status().to_string());
        auto xs = m->node().array<Dtype::kF64>();
        if (!xs || xs->size() != count) die("consumer: not the array");
        volatile double x0 = (*xs)[0];
        (void)x0;
        r.first_ns = now_ns();
        r.sum = sum(xs->data(), count);
        r.done_ns = now_ns();
        held.mapped.emplace(std::move(*m));
        break;
      }
      case Method::kSocket:
        held.buf = receive(data, go.size, r.first_ns);
        held.buf_size = go.size;
        r.sum = sum(held.buf, count);
        r.done_ns = now_ns();
        break;
      case Method::kFile: {
        int fd = ::open(go.name, O_RDONLY | O_CLOEXEC);
        if (fd < 0) die(std::string("consumer: open ") + go.name);
        held.buf = receive(fd, go.size, r.first_ns);
        held.buf_size = go.size;
        ::close(fd);
        r.sum = sum(held.buf, count);
        r.done_ns = now_ns();
        break;
      }
      case Method::kBoost:
        if (go.boost_file) {
          consume_boost(go, r, held.boost_file);
        } else {
          consume_boost(go, r, held.boost_shm);
        }
        break;
      default: die("consumer: unexpected method");
    }
    send_all(ctl, &r, sizeof r);
  }
}

namespace {

// A descriptor numbered 10 or above (so that dup2 to 3 and 4 always copies).
int high_fd(int fd) {
  int h = ::fcntl(fd, F_DUPFD_CLOEXEC, 10);
  if (h < 0) die("fcntl F_DUPFD_CLOEXEC");
  ::close(fd);
  return h;
}

}  // namespace

Report read_report(int ctl) {
  Report r;
  ssize_t n = ::recv(ctl, &r, sizeof r, 0);
  if (n != sizeof r) die("a consumer did not answer (it died?)");
  return r;
}

std::vector<Consumer> start_consumers(int count) {
  std::vector<Consumer> out;
  const std::string exe = self_exe();
  for (int i = 0; i < count; ++i) {
    int ctl[2], data[2];
    if (::socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, ctl) != 0) die("socketpair");
    if (::socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, data) != 0) die("socketpair");
    ctl[1] = high_fd(ctl[1]);
    data[1] = high_fd(data[1]);
    posix_spawn_file_actions_t fa;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, ctl[1], 3);
    posix_spawn_file_actions_adddup2(&fa, data[1], 4);
    std::string arg1 = "consumer";
    char* argv[] = {const_cast<char*>(exe.c_str()), arg1.data(), nullptr};
    Consumer c;
    if (::posix_spawn(&c.pid, exe.c_str(), &fa, nullptr, argv, environ) != 0) die("posix_spawn");
    posix_spawn_file_actions_destroy(&fa);
    ::close(ctl[1]);
    ::close(data[1]);
    c.ctl = ctl[0];
    c.data = data[0];
    out.push_back(c);
  }
  for (Consumer& c : out) c.idle_pss = read_report(c.ctl).pss;  // "ready": started, before the clock
  return out;
}

void stop_consumers(std::vector<Consumer>& cs) {
  for (Consumer& c : cs) {
    ::close(c.ctl);
    ::close(c.data);
  }
  for (Consumer& c : cs) {
    int status = 0;
    ::waitpid(c.pid, &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) die("a consumer failed");
  }
  cs.clear();
}

}  // namespace kura::bench::handoff
