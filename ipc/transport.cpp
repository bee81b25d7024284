// listen() and connect(): each kind of endpoint to its transport, and the
// secret a TCP one needs.
#include <new>
#include <string>

#include "kura/ipc/secret.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

Result<std::string> tcp_secret(const Endpoint& e, const std::string& secret_file) {
  if (secret_file.empty())
    return invalid_argument(
        e.to_string() +
        " needs a shared secret (--secret-file FILE; kura secret FILE makes one): without one, "
        "anyone who can reach the port, on this machine too, could run tasks");
  return read_secret_file(secret_file);
}

}  // namespace

Result<std::unique_ptr<Listener>> listen(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept, LogFn log,
                                         const std::string& secret_file) noexcept {
  try {
    if (at.kind == Endpoint::Kind::kUnix) return listen_unix(loop, at, std::move(on_accept), std::move(log));
    KURA_ASSIGN_OR_RETURN(std::string secret, tcp_secret(at, secret_file));
    return listen_tcp(loop, at, std::move(on_accept), std::move(log), std::move(secret), secret_file);
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void connect(uv_loop_t* loop, const Endpoint& to, ConnectFn done, const TcpCredentials& cred) {
  if (to.kind == Endpoint::Kind::kUnix) return connect_unix(loop, to, std::move(done));
  auto secret = tcp_secret(to, cred.secret_file);
  if (!secret) return done(secret.status());
  TcpCredentials checked = cred;
  if (!cred.fingerprint.empty()) {
    auto fp = parse_fingerprint(cred.fingerprint);
    if (!fp) return done(fp.status());
    checked.fingerprint = std::move(fp).value();
  }
  connect_tcp(loop, to, std::move(done), std::move(secret).value(), checked);
}

}  // namespace kura::ipc::detail
