#include "plan.hpp"

#include <cinttypes>
#include <cstdio>
#include <sstream>

namespace kura::soak {

namespace {

std::uint64_t mix(std::uint64_t x) {  // splitmix64's finaliser
  x += 0x9E3779B97F4A7C15ull;
  x = (x ^ (x >> 30)) * 0xBF58476D1CE4E5B9ull;
  x = (x ^ (x >> 27)) * 0x94D049BB133111EBull;
  return x ^ (x >> 31);
}

// Per mille of the tasks of each kind, in Kind order. Sleeping kinds are few:
// the four workers must keep up with about 1,700 tasks a second.
constexpr int kPerMille[kKinds] = {295, 140, 120, 40, 40, 100, 30, 150, 30, 30, 5, 20};
static_assert(kPerMille[0] + kPerMille[1] + kPerMille[2] + kPerMille[3] + kPerMille[4] + kPerMille[5] +
                  kPerMille[6] + kPerMille[7] + kPerMille[8] + kPerMille[9] + kPerMille[10] + kPerMille[11] ==
              1000);

}  // namespace

const char* kind_name(TaskKind k) noexcept {
  static const char* const names[kKinds] = {"echo inline", "echo name",   "sum name",   "scale name",
                                            "echo 64 KiB", "fail",        "unknown fn", "sleep 1-2 ms",
                                            "cancel",      "race cancel", "timeout",    "120 s timeout"};
  return names[static_cast<int>(k)];
}

const char* got_name(Got g) noexcept {
  static const char* const names[kGots] = {
      "ok", "error", "timeout", "cancelled", "worker-lost", "disconnected", "no-space", "abandoned", "LOST"};
  return names[static_cast<int>(g)];
}

Task plan(int client, std::uint64_t index) noexcept {
  Task t{};
  t.token = (static_cast<std::uint64_t>(client) << 40) | index;
  const std::uint64_t r = mix(t.token);
  int pick = static_cast<int>(r % 1000);
  int k = 0;
  while (pick >= kPerMille[k]) pick -= kPerMille[k++];
  t.kind = static_cast<TaskKind>(k);
  static const unsigned kRetries[4] = {0, 0, 1, 3};
  t.retries = kRetries[(r >> 10) & 3];
  const std::uint64_t r2 = mix(r);
  switch (t.kind) {
    case TaskKind::kEchoInline: t.n = 1 + r2 % 16; break;
    case TaskKind::kEchoName: t.n = 1 + r2 % 64; break;
    case TaskKind::kSumName: t.n = 100 + r2 % 1900; break;
    case TaskKind::kScaleName:
      t.n = 16384;
      t.param = 1.0 + static_cast<double>(r2 % 7);
      break;
    case TaskKind::kEchoBig: t.n = 8192; break;
    case TaskKind::kSleepShort: t.param = 0.001 + 0.001 * static_cast<double>(r2 % 2); break;
    case TaskKind::kCancel: t.param = static_cast<double>(r2 % 6); break;
    case TaskKind::kTimeout: t.param = 50.0 + static_cast<double>(r2 % 51); break;
    default: break;
  }
  return t;
}

std::string format_record(const Record& r) {
  std::string msg = r.message.substr(0, 120);
  for (char& c : msg)
    if (c == '\n' || c == '\r') c = ' ';
  char head[200];
  std::snprintf(head, sizeof head, "R %d %" PRIu64 " %d %d %d %" PRId64 " %" PRId64 " %" PRId64 " ", r.client,
                r.index, static_cast<int>(r.got), r.submitted ? 1 : 0, r.verified ? 1 : 0, r.t0, r.t1,
                r.conn_t);
  return head + msg + "\n";
}

bool parse_record(const std::string& line, Record& r) {
  std::istringstream in(line);
  int got = 0, submitted = 0, verified = 0;
  if (!(in >> r.client >> r.index >> got >> submitted >> verified >> r.t0 >> r.t1 >> r.conn_t)) return false;
  if (got < 0 || got >= kGots) return false;
  r.got = static_cast<Got>(got);
  r.submitted = submitted != 0;
  r.verified = verified != 0;
  std::getline(in, r.message);
  if (!r.message.empty() && r.message[0] == ' ') r.message.erase(0, 1);
  return true;
}

}  // namespace kura::soak
