// libFuzzer target for the endpoint parser (what a user writes after
// --socket or --connect): any bytes give an endpoint or InvalidArgument
// (OutOfMemory at worst), never a crash or undefined behaviour. An endpoint
// that parses prints as text that parses back to the same endpoint.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "endpoint_internal.hpp"

namespace {

void require(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "endpoint_fuzz: %s\n", what);
    std::abort();
  }
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string_view text(reinterpret_cast<const char*>(data), size);
  auto e = kura::ipc::detail::parse_endpoint(text);
  if (!e) {
    require(
        e.status().code() == kura::Code::kInvalidArgument || e.status().code() == kura::Code::kOutOfMemory,
        "an unexpected error code");
    return 0;
  }
  using Kind = kura::ipc::detail::Endpoint::Kind;
  require(e->kind == Kind::kTcp ? !e->host.empty() : !e->path.empty(),
          "an endpoint with an empty path or host");
  auto again = kura::ipc::detail::parse_endpoint(e->to_string());
  require(again.is_ok(), "a printed endpoint does not parse");
  require(
      again->kind == e->kind && again->path == e->path && again->host == e->host && again->port == e->port,
      "a printed endpoint parses to another");
  return 0;
}
