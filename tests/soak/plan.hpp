// The soak's tasks: what each client submits, what it expects back, and the
// one line a client writes per event for the soak's accounting.
//
// The plan is a pure function of (client, index): a client process that is
// killed and started again goes on with the same plan, and the soak knows
// what every task should have ended in without asking the client.
#pragma once

#include <time.h>

#include <cstdint>
#include <string>

namespace kura::soak {

// What a task is, and so what it should end in when nothing goes wrong.
enum class TaskKind : std::uint8_t {
  kEchoInline,   // echo(small f64 inline): ok, the same value
  kEchoName,     // echo(name of a small f64 region): ok, the value, inline
  kSumName,      // sum(name of an f64 region): ok, its sum
  kScaleName,    // scale(name of a 16384-element region, k): ok, a result region
  kEchoBig,      // echo(a 64 KiB f64 inline): ok, back as a region (past the inline limit)
  kFail,         // fail(message): error with that message
  kUnknown,      // a function no worker has: error "unknown function"
  kSleepShort,   // sleep(1-4 ms): ok
  kCancel,       // sleep(30 s), cancelled 0-10 ms after submit: cancelled
  kRaceCancel,   // echo, cancelled at once: ok or cancelled
  kTimeout,      // sleep(30 s) with a 50-150 ms timeout: timeout
  kLongTimeout,  // echo with a 120 s timeout: ok
};
inline constexpr int kKinds = 12;

const char* kind_name(TaskKind k) noexcept;

// How a task ended, from the client's side: the five outcomes of
// ipc::Outcome plus what only the soak sees.
enum class Got : std::uint8_t {
  kOk = 0,
  kError = 1,
  kTimeout = 2,
  kCancelled = 3,
  kWorkerLost = 4,
  kDisconnected = 5,  // the result, or the submit itself (never reached the dispatcher)
  kNoSpace = 6,       // its argument region could not be made: the region directory was full
  kAbandoned = 7,     // submitted by a client process that was SIGKILLed before the result came
  kLost = 8,          // no result within the soak's bound: a defect
};
inline constexpr int kGots = 9;

const char* got_name(Got g) noexcept;

struct Task {
  TaskKind kind;
  unsigned retries;     // 0, 1 or 3
  std::uint64_t n;      // elements of its array argument
  double param;         // sleep seconds, scale factor, timeout ms, cancel delay ms
  std::uint64_t token;  // unique per (client, index): in its values and messages
};

// The task at `index` of client `client`.
Task plan(int client, std::uint64_t index) noexcept;

// Element j of the array argument of `t`.
inline double element(const Task& t, std::uint64_t j) noexcept {
  return static_cast<double>(t.token % 1000003) * 0.5 + static_cast<double>(j);
}

// CLOCK_MONOTONIC in nanoseconds: the same clock in every process of the soak.
inline std::int64_t now_ns() noexcept {
  timespec ts{};
  ::clock_gettime(CLOCK_MONOTONIC, &ts);
  return static_cast<std::int64_t>(ts.tv_sec) * 1000000000 + ts.tv_nsec;
}

// One task's end, as a client reports it.
struct Record {
  int client = 0;
  std::uint64_t index = 0;
  Got got = Got::kLost;
  bool submitted = false;   // the dispatcher accepted it (submit returned an id)
  bool verified = false;    // value or message as expected (ok and error results)
  std::int64_t t0 = 0;      // before submit
  std::int64_t t1 = 0;      // when the result was taken
  std::int64_t conn_t = 0;  // when the connection it was submitted on was made
  std::string message;      // the result's message (first 120 bytes, one line)
};

// Lines a client writes (one write each, so lines from many writers do not
// interleave):
//   O <owner hex>              its process owner
//   S <index>                  about to submit task <index>
//   R <record fields> <msg>    a task ended
//   H <n>                      result regions it now holds
//   E <message>                a fatal error of the client
std::string format_record(const Record& r);
// Parses an R line (without the "R "); false when malformed.
bool parse_record(const std::string& line, Record& r);

}  // namespace kura::soak
