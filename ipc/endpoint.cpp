// Endpoints: parsing "unix:PATH" (or a bare PATH) and "tcp://HOST:PORT", and
// the default one.
#include <arpa/inet.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cctype>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "endpoint_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr std::string_view kUnixScheme = "unix:";
constexpr std::string_view kTcpScheme = "tcp://";
constexpr std::size_t kMaxSocketPath = sizeof(sockaddr_un::sun_path) - 1;

// The scheme of `text` ("tcp" of "tcp://h:1"), or empty when `text` starts
// with none: a scheme is a letter, then letters, digits, '+', '-' or '.',
// then ':' (RFC 3986), so "/a:b" and "./a:b" are paths.
std::string_view scheme_of(std::string_view text) {
  if (text.empty() || !std::isalpha(static_cast<unsigned char>(text[0]))) return {};
  for (std::size_t i = 1; i < text.size(); ++i) {
    const char c = text[i];
    if (c == ':') return text.substr(0, i);
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '+' && c != '-' && c != '.') return {};
  }
  return {};
}

// A printable copy of what the user wrote, cut short, for messages.
std::string quoted(std::string_view text) {
  constexpr std::size_t kShown = 80;
  std::string out = "\"";
  for (char c : text.substr(0, kShown)) out += std::isprint(static_cast<unsigned char>(c)) ? c : '?';
  if (text.size() > kShown) out += "...";
  return out + "\"";
}

// "HOST:PORT" of a tcp:// endpoint (`text` the whole endpoint, for messages).
Result<Endpoint> parse_tcp(std::string_view text, std::string_view rest) {
  const auto bad = [&](const std::string& why) {
    return invalid_argument("endpoint " + quoted(text) + ": " + why +
                            " (write tcp://HOST:PORT, HOST an IPv4 address or [an IPv6 one])");
  };
  std::string_view host;
  std::string_view port;
  bool v6 = false;
  if (!rest.empty() && rest[0] == '[') {
    const std::size_t close = rest.find(']');
    if (close == std::string_view::npos) return bad("an IPv6 address without its closing bracket");
    host = rest.substr(1, close - 1);
    if (close + 1 >= rest.size() || rest[close + 1] != ':') return bad("no :PORT after the address");
    port = rest.substr(close + 2);
    v6 = true;
  } else {
    const std::size_t colon = rest.rfind(':');
    if (colon == std::string_view::npos) return bad("no :PORT");
    host = rest.substr(0, colon);
    port = rest.substr(colon + 1);
  }
  if (host.empty()) return bad("the host is empty");
  if (host.size() >= INET6_ADDRSTRLEN) return bad("the host is too long for an address");
  const std::string h(host);
  unsigned char addr[sizeof(in6_addr)];
  if (::inet_pton(v6 ? AF_INET6 : AF_INET, h.c_str(), addr) != 1)
    return bad(v6 ? "not an IPv6 address in the brackets"
                  : "the host is not an IPv4 address (host names are not resolved)");
  if (port.empty() || port.size() > 5) return bad("the port is not a number from 0 to 65535");
  unsigned value = 0;
  for (char c : port) {
    if (c < '0' || c > '9') return bad("the port is not a number from 0 to 65535");
    value = value * 10 + static_cast<unsigned>(c - '0');
  }
  if (value > 65535) return bad("the port is not a number from 0 to 65535");
  Endpoint e;
  e.kind = Endpoint::Kind::kTcp;
  e.host = h;
  e.port = static_cast<std::uint16_t>(value);
  return e;
}

}  // namespace

std::string Endpoint::to_string() const {
  if (kind == Kind::kTcp) {
    const bool v6 = host.find(':') != std::string::npos;
    return std::string(kTcpScheme) + (v6 ? "[" + host + "]" : host) + ":" + std::to_string(port);
  }
  return std::string(kUnixScheme) + path;
}

Result<Endpoint> parse_endpoint(std::string_view text) noexcept {
  try {
    if (text.find('\0') != std::string_view::npos)
      return invalid_argument("endpoint " + quoted(text) + ": contains a NUL byte");
    std::string_view path = text;
    if (text.substr(0, kUnixScheme.size()) == kUnixScheme) {
      path = text.substr(kUnixScheme.size());
    } else if (text.substr(0, kTcpScheme.size()) == kTcpScheme) {
      return parse_tcp(text, text.substr(kTcpScheme.size()));
    } else if (std::string_view scheme = scheme_of(text); !scheme.empty()) {
      if (scheme == "tls")
        return invalid_argument(
            "endpoint " + quoted(text) +
            ": there is no tls scheme: a tcp:// endpoint is TLS whenever its address is not "
            "loopback, and on loopback when asked (kura worker --tls)");
      return invalid_argument("endpoint " + quoted(text) + ": unknown scheme \"" + std::string(scheme) +
                              "\" (use unix:PATH, or ./PATH for a relative path with a colon)");
    }
    if (path.empty()) return invalid_argument("endpoint " + quoted(text) + ": the socket path is empty");
    if (path.find('\0') != std::string_view::npos)
      return invalid_argument("endpoint " + quoted(text) + ": the socket path contains a NUL byte");
    if (path.size() > kMaxSocketPath)
      return invalid_argument("endpoint " + quoted(text) + ": the socket path is " +
                              std::to_string(path.size()) + " bytes, longer than the " +
                              std::to_string(kMaxSocketPath) + " a socket address holds");
    Endpoint e;
    e.kind = Endpoint::Kind::kUnix;
    e.path = std::string(path);
    return e;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Status check_socket_dir(const std::string& dir) noexcept {
  try {
    struct stat st;
    if (::lstat(dir.c_str(), &st) != 0) {
      if (errno == ENOENT)
        return Status(Code::kNotFound, "socket directory " + dir + " does not exist", ENOENT);
      return Status(Code::kIo, "cannot stat socket directory " + dir + ": " + std::strerror(errno), errno);
    }
    if (S_ISLNK(st.st_mode))
      return Status(Code::kPermission, "socket directory " + dir + " is a symbolic link; refusing it");
    if (!S_ISDIR(st.st_mode))
      return Status(Code::kPermission, "socket directory " + dir + " is not a directory");
    if (st.st_uid != ::geteuid())
      return Status(Code::kPermission, "socket directory " + dir + " belongs to user " +
                                           std::to_string(st.st_uid) + ", not to this user; refusing it");
    if ((st.st_mode & 077) != 0)
      return Status(Code::kPermission, "socket directory " + dir +
                                           " is open to group or other; it must be mode 0700 (chmod 700 it)");
    return Status::ok();
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<Endpoint> default_endpoint() noexcept {
  try {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    std::string dir = (xdg != nullptr && *xdg == '/') ? std::string(xdg) + "/kura"
                                                      : "/tmp/kura-" + std::to_string(::geteuid());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return Status(Code::kIo, "cannot create socket directory " + dir + ": " + std::strerror(errno), errno);
    KURA_RETURN_IF_ERROR(check_socket_dir(dir));
    return parse_endpoint(std::string(kUnixScheme) + dir + "/dispatcher.sock");
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc::detail
