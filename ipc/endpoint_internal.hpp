// Internal to kura_ipc: where a dispatcher listens and its peers connect.
// An endpoint is written `unix:PATH`; a bare PATH (absolute or relative)
// means a Unix socket too. `tcp://HOST:PORT` is a TCP endpoint, HOST an
// IPv4 address or an IPv6 one in brackets (`tcp://[::1]:PORT`). This is the one place endpoints are parsed
// and the one place the default endpoint is built. No libuv here (the fuzz target builds this file alone).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "kura/core/status.hpp"

namespace kura::ipc::detail {

struct Endpoint {
  enum class Kind : std::uint8_t { kUnix, kTcp };
  Kind kind = Kind::kUnix;
  std::string path;        // kUnix: the socket file
  std::string host;        // kTcp: a numeric address, without brackets
  std::uint16_t port = 0;  // kTcp: 0 when listening means "pick a free one"
  // "unix:/run/user/1000/kura/dispatcher.sock", "tcp://127.0.0.1:4000",
  // "tcp://[::1]:4000". Parses back to the same endpoint.
  std::string to_string() const;
};

// Parses an endpoint. "unix:PATH" and a bare PATH are a Unix socket at PATH
// (which must be non-empty, contain no NUL byte and fit a socket address).
// "tcp://HOST:PORT": HOST a numeric IPv4 address, or an IPv6 one in
// brackets (host names are not resolved), PORT 0 to 65535. Errors:
// InvalidArgument ("tls://..." is refused, saying when tcp:// is TLS; any
// other scheme is named in the message), OutOfMemory. Pure.
Result<Endpoint> parse_endpoint(std::string_view text) noexcept;

// The default endpoint: unix:$XDG_RUNTIME_DIR/kura/dispatcher.sock, else
// unix:/tmp/kura-<uid>/dispatcher.sock. Creates the directory (0700) when
// missing. Errors: as check_socket_dir.
Result<Endpoint> default_endpoint() noexcept;

// Checks that `dir` is a directory (not a symlink) owned by this user with
// no group or other permission bits. Errors: Permission, NotFound, Io.
Status check_socket_dir(const std::string& dir) noexcept;

}  // namespace kura::ipc::detail
