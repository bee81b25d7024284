// The hand-off benchmark's parts (handoff_bench.cpp: the producer, the
// dispatcher's workers and the benchmark; handoff_consumer.cpp: the consumer
// processes it starts) and what they say to each other.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <cstdint>
#include <vector>

namespace kura::bench::handoff {

constexpr std::size_t kMiB = std::size_t{1} << 20;

enum class Method { kInPlace, kShare, kDispatcher, kDispatcherInline, kSocket, kBoost, kFile };

struct MethodInfo {
  Method method;
  const char* name;
};
constexpr MethodInfo kMethods[] = {
    {Method::kInPlace, "kura_in_place"},
    {Method::kShare, "kura_share"},
    {Method::kDispatcher, "kura_dispatcher"},
    {Method::kDispatcherInline, "dispatcher_inline"},
    {Method::kSocket, "unix_socket"},
    {Method::kBoost, "boost"},
    {Method::kFile, "shm_file"},
};

// What the producer sends a consumer (one SOCK_SEQPACKET message): a
// hand-off; after every consumer has answered, "measure" (the consumer
// reports its PSS while every consumer still holds the data); after every
// consumer has measured, "release" (it lets the data go and answers).
enum class Step { kHandOff, kMeasure, kRelease };
struct Go {
  Step step;
  Method method;
  bool boost_file;     // managed_mapped_file at `name`, else managed_shared_memory named `name`
  std::uint64_t size;  // bytes of the array
  char name[512];      // the kura name, file path or segment name
};

// What a consumer answers: "ready" (its idle PSS), then for each hand-off
// its times and sum, and after "measure" its PSS.
struct Report {
  std::int64_t first_ns = 0;  // when it had read the first element
  std::int64_t done_ns = 0;   // when it had the sum
  double sum = 0;
  std::int64_t pss = 0;  // idle (ready), or while every consumer holds the data (measure)
};

// A named Boost array of doubles that construct() leaves uninitialised (the
// producer copies the data in right after; a double would be zeroed first).
struct Raw {
  double v;
  Raw() {}  // NOLINT: deliberately leaves v uninitialised
};

// Writes all `n` bytes at `p` to `fd`, or dies.
void send_all(int fd, const void* p, std::size_t n);

// `handoff_bench consumer`: control socket on fd 3, data socket on fd 4.
int consumer_main();

struct Consumer {
  pid_t pid = -1;
  int ctl = -1;
  int data = -1;
  std::int64_t idle_pss = 0;
};

// `count` consumer processes, started and idle (their PSS read).
std::vector<Consumer> start_consumers(int count);
// One report from a consumer's control socket, or dies.
Report read_report(int ctl);
// Closes the consumers' sockets and waits for them; dies if one failed.
void stop_consumers(std::vector<Consumer>& cs);

}  // namespace kura::bench::handoff
