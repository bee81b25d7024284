// Unix domain sockets: the socket directory, listening with a peer-uid
// check, and connecting.
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>

#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

Status uv_status(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == UV_ENOENT || err == UV_ECONNREFUSED) code = Code::kNotFound;
  if (err == UV_EACCES || err == UV_EPERM) code = Code::kPermission;
  if (err == UV_EADDRINUSE) code = Code::kExists;
  return Status(code, what + ": " + uv_strerror(err));
}

struct PeerCred {
  bool ok = false;
  uid_t uid = 0;
  pid_t pid = 0;
};

PeerCred peer_of(uv_stream_t* s) {
  PeerCred out;
  uv_os_fd_t fd = -1;
  if (uv_fileno(reinterpret_cast<uv_handle_t*>(s), &fd) != 0) return out;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return out;
  out.ok = true;
  out.uid = cred.uid;
  out.pid = cred.pid;
  return out;
}

void close_and_free(uv_pipe_t* p) {
  uv_close(reinterpret_cast<uv_handle_t*>(p), [](uv_handle_t* h) { delete reinterpret_cast<uv_pipe_t*>(h); });
}

// True when something accepts connections at `path` now.
bool someone_listens(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  const bool live = ::connect(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) == 0;
  ::close(fd);
  return live;
}

std::string parent_of(const std::string& path) {
  auto slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

class UnixListener final : public Listener {
 public:
  UnixListener(std::string path, AcceptFn on_accept, LogFn log)
      : path_(std::move(path)), on_accept_(std::move(on_accept)), log_(std::move(log)) {}
  ~UnixListener() override { close(); }

  Status open(uv_loop_t* loop) {
    pipe_ = new (std::nothrow) uv_pipe_t;
    if (pipe_ == nullptr) return Status::out_of_memory();
    uv_pipe_init(loop, pipe_, 0);
    pipe_->data = this;
    if (int rc = uv_pipe_bind(pipe_, path_.c_str()); rc != 0) {
      close_and_free(pipe_);
      pipe_ = nullptr;
      return uv_status("cannot bind the socket " + path_, rc);
    }
    bound_ = true;
    // The directory is 0700 already; the socket itself is the user's only too.
    ::chmod(path_.c_str(), 0600);
    if (int rc = uv_listen(reinterpret_cast<uv_stream_t*>(pipe_), 128, &UnixListener::on_connection);
        rc != 0) {
      Status s = uv_status("cannot listen on " + path_, rc);
      close();
      return s;
    }
    return Status::ok();
  }

  void close() override {
    if (pipe_ != nullptr) {
      close_and_free(pipe_);
      pipe_ = nullptr;
    }
    if (bound_) {
      ::unlink(path_.c_str());
      bound_ = false;
    }
  }

 private:
  static void on_connection(uv_stream_t* server, int status) {
    auto* self = static_cast<UnixListener*>(server->data);
    if (status != 0) {
      self->log_("accept on " + self->path_ + " failed: " + uv_strerror(status));
      return;
    }
    auto* client = new (std::nothrow) uv_pipe_t;
    if (client == nullptr) {
      self->log_("accept on " + self->path_ + ": out of memory");
      return;
    }
    uv_pipe_init(server->loop, client, 0);
    if (uv_accept(server, reinterpret_cast<uv_stream_t*>(client)) != 0) {
      close_and_free(client);
      return;
    }
    PeerCred cred = peer_of(reinterpret_cast<uv_stream_t*>(client));
    if (!cred.ok || cred.uid != ::geteuid()) {
      self->log_("refused a connection on " + self->path_ + ": the peer " +
                 (cred.ok ? "is user " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) + ")"
                          : std::string("has no credentials")) +
                 ", not this user (" + std::to_string(::geteuid()) + ")");
      close_and_free(client);
      return;
    }
    self->on_accept_(reinterpret_cast<uv_stream_t*>(client), cred.pid);
  }

  std::string path_;
  AcceptFn on_accept_;
  LogFn log_;
  uv_pipe_t* pipe_ = nullptr;
  bool bound_ = false;
};

}  // namespace

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

Result<std::string> default_socket_dir() noexcept {
  try {
    const char* xdg = std::getenv("XDG_RUNTIME_DIR");
    std::string dir = (xdg != nullptr && *xdg == '/') ? std::string(xdg) + "/kura"
                                                      : "/tmp/kura-" + std::to_string(::geteuid());
    if (::mkdir(dir.c_str(), 0700) != 0 && errno != EEXIST)
      return Status(Code::kIo, "cannot create socket directory " + dir + ": " + std::strerror(errno), errno);
    KURA_RETURN_IF_ERROR(check_socket_dir(dir));
    return dir;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

Result<std::unique_ptr<Listener>> listen_unix(uv_loop_t* loop, const std::string& path, AcceptFn on_accept,
                                              LogFn log) noexcept {
  try {
    if (path.empty() || path.size() >= sizeof(sockaddr_un::sun_path))
      return invalid_argument("socket path \"" + path + "\" is empty or longer than " +
                              std::to_string(sizeof(sockaddr_un::sun_path) - 1) + " bytes");
    KURA_RETURN_IF_ERROR(check_socket_dir(parent_of(path)));
    struct stat st;
    if (::lstat(path.c_str(), &st) == 0) {
      if (!S_ISSOCK(st.st_mode))
        return Status(Code::kExists, path + " exists and is not a socket; refusing it");
      if (someone_listens(path)) return Status(Code::kExists, "a dispatcher already listens on " + path);
      ::unlink(path.c_str());  // stale: left by a dispatcher that died
    }
    auto listener = std::make_unique<UnixListener>(path, std::move(on_accept), std::move(log));
    KURA_RETURN_IF_ERROR(listener->open(loop));
    return std::unique_ptr<Listener>(std::move(listener));
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

void connect_unix(uv_loop_t* loop, const std::string& path, std::function<void(Result<uv_stream_t*>)> done) {
  struct Request {
    uv_connect_t req;
    uv_pipe_t* pipe;
    std::string path;
    std::function<void(Result<uv_stream_t*>)> done;
  };
  auto* r = new Request{{}, new uv_pipe_t, path, std::move(done)};
  uv_pipe_init(loop, r->pipe, 0);
  r->req.data = r;
  uv_pipe_connect(&r->req, r->pipe, path.c_str(), [](uv_connect_t* req, int status) {
    auto* r = static_cast<Request*>(req->data);
    auto done = std::move(r->done);
    uv_pipe_t* pipe = r->pipe;
    const std::string path = std::move(r->path);
    delete r;
    if (status != 0) {
      close_and_free(pipe);
      done(uv_status("cannot connect to " + path, status));
      return;
    }
    PeerCred cred = peer_of(reinterpret_cast<uv_stream_t*>(pipe));
    if (!cred.ok || cred.uid != ::geteuid()) {
      close_and_free(pipe);
      done(Status(Code::kPermission, "the process listening on " + path + " is not this user's"));
      return;
    }
    done(reinterpret_cast<uv_stream_t*>(pipe));
  });
}

}  // namespace kura::ipc::detail
