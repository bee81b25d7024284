// One soak client: submits its share of the plan (plan.hpp) at a steady
// pace through an ipc::Client, keeps a window of tasks in flight, cancels
// the ones meant to be cancelled, checks every result against the plan, and
// when the dispatcher goes away takes the disconnected results, connects a
// new Client and goes on. The same code runs on a thread of the soak or in
// a process of its own (the soak re-executed with --client).
#pragma once

#include <cstdint>
#include <functional>
#include <string>

namespace kura::soak {

struct ClientConfig {
  int id = 0;
  std::string socket;
  std::uint64_t first = 0;  // runs tasks [first, count) of the plan
  std::uint64_t count = 0;
  std::int64_t start_ns = 0;  // task i is due at start_ns + i * span_ns / count
  std::int64_t span_ns = 0;
  std::int64_t give_up_ns = 0;  // absolute: tasks still pending then are reported lost
  bool hold_results = false;    // keep the last 32 result regions (the client the soak kills)
  // Where the client's lines (plan.hpp) go; called from the client's thread.
  std::function<void(const std::string&)> out;
};

// Runs the client to the end of its tasks. Returns 0, or 1 after writing an
// E line (it could not connect before give_up_ns).
int run_client(const ClientConfig& config) noexcept;

}  // namespace kura::soak
