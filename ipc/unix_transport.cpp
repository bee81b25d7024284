// Unix domain sockets: listening with a peer-uid check, and connecting (the
// stream is socket_stream.cpp's).
#include <fcntl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>
#include <string>

#include "fork_guard.hpp"
#include "transport_internal.hpp"

namespace kura::ipc::detail {

namespace {

constexpr int kBacklog = 128;
// How long a listener that ran out of descriptors waits before it tries to
// accept again (the connections wait in the backlog meanwhile).
constexpr std::uint64_t kAcceptRetryMs = 100;

Status errno_status(const std::string& what, int err) {
  return uv_status(what, -err);
}

struct PeerCred {
  bool ok = false;
  uid_t uid = 0;
  pid_t pid = 0;
};

PeerCred peer_of(int fd) {
  PeerCred out;
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) return out;
  out.ok = true;
  out.uid = cred.uid;
  out.pid = cred.pid;
  return out;
}

sockaddr_un address_of(const std::string& path) {
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  std::memcpy(addr.sun_path, path.data(), path.size());
  return addr;
}

// True when something accepts connections at `path` now.
bool someone_listens(const std::string& path) {
  int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return false;
  sockaddr_un addr = address_of(path);
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

template <typename Handle>
void close_and_free(Handle* h) {
  uv_close(reinterpret_cast<uv_handle_t*>(h), [](uv_handle_t* x) { delete reinterpret_cast<Handle*>(x); });
}

PeerInfo peer_info(const PeerCred& cred, const std::string& path) {
  PeerInfo p;
  p.transport = "unix";
  p.pid = cred.pid;
  p.uid = cred.uid;
  p.address = "unix:" + path;
  return p;
}

// --- the listener -----------------------------------------------------------------

// Accepts with accept4 on a uv_poll_t rather than uv_listen: when the
// process runs out of descriptors, libuv would accept and drop the waiting
// connections (its reserve-descriptor trick) without telling the owner;
// here they wait in the backlog while the listener pauses, and the owner's
// log hears of it once per burst.
class UnixListener final : public Listener {
 public:
  UnixListener(std::string path, AcceptFn on_accept, LogFn log)
      : path_(std::move(path)), on_accept_(std::move(on_accept)), log_(std::move(log)) {}
  ~UnixListener() override { close(); }

  Status open(uv_loop_t* loop) {
    fd_ = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd_ < 0) return errno_status("cannot create a socket for " + path_, errno);
    // A forked child must not keep the listening socket: the socket would
    // look alive after this process died, and no dispatcher could replace it.
    if (Status guarded = close_in_forked_child(fd_); !guarded) {
      ::close(fd_);
      fd_ = -1;
      return guarded;
    }
    sockaddr_un addr = address_of(path_);
    if (::bind(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
      Status s = errno_status("cannot bind the socket " + path_, errno);
      close();
      return s;
    }
    struct stat st;
    if (::lstat(path_.c_str(), &st) == 0) {
      bound_ = true;
      dev_ = st.st_dev;
      ino_ = st.st_ino;
    }
    // The directory is 0700 already; the socket itself is the user's only too.
    ::chmod(path_.c_str(), 0600);
    if (::listen(fd_, kBacklog) != 0) {
      Status s = errno_status("cannot listen on " + path_, errno);
      close();
      return s;
    }
    poll_ = new (std::nothrow) uv_poll_t;
    retry_ = new (std::nothrow) uv_timer_t;
    if (poll_ == nullptr || retry_ == nullptr) {
      delete poll_;
      delete retry_;
      poll_ = nullptr;
      retry_ = nullptr;
      close();
      return Status::out_of_memory();
    }
    uv_timer_init(loop, retry_);
    retry_->data = this;
    if (int rc = uv_poll_init(loop, poll_, fd_); rc != 0) {
      delete poll_;
      poll_ = nullptr;
      close();
      return uv_status("cannot poll the socket " + path_, rc);
    }
    poll_->data = this;
    uv_poll_start(poll_, UV_READABLE, &UnixListener::on_readable);
    return Status::ok();
  }

  void close() override {
    if (poll_ != nullptr) {
      close_and_free(poll_);  // stops polling the descriptor at once
      poll_ = nullptr;
    }
    if (retry_ != nullptr) {
      close_and_free(retry_);
      retry_ = nullptr;
    }
    if (fd_ >= 0) {
      forget_in_forked_child(fd_);
      ::close(fd_);
      fd_ = -1;
    }
    // Only the socket this listener bound: another listener may have
    // replaced it since (a second dispatcher that found it stale).
    struct stat st;
    if (bound_ && ::lstat(path_.c_str(), &st) == 0 && S_ISSOCK(st.st_mode) && st.st_dev == dev_ &&
        st.st_ino == ino_)
      ::unlink(path_.c_str());
    bound_ = false;
  }

  std::string address() const override { return "unix:" + path_; }

 private:
  static void on_readable(uv_poll_t* p, int status, int) {
    auto* self = static_cast<UnixListener*>(p->data);
    if (status < 0) return self->pause_accepting(std::string("polling failed: ") + uv_strerror(status));
    // A bounded number per loop turn, so that a flood of connections does
    // not starve the rest of the loop.
    for (int i = 0; i < kBacklog && self->fd_ >= 0; ++i) {
      const int fd = ::accept4(self->fd_, nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        const int err = errno;
        if (err == EINTR || err == ECONNABORTED) continue;
        if (err == EAGAIN || err == EWOULDBLOCK) return;
        if (err == EMFILE || err == ENFILE)
          return self->pause_accepting("out of file descriptors (" + std::string(std::strerror(err)) +
                                       "); new connections wait until some close");
        return self->pause_accepting(std::string("accept failed: ") + std::strerror(err));
      }
      if (self->troubled_) {
        self->troubled_ = false;
        self->log_("accepting connections on " + self->path_ + " again");
      }
      self->adopt(fd, p->loop);
    }
  }

  // Stops polling for a moment (the waiting connections stay in the
  // backlog) and says so once per burst of failures.
  void pause_accepting(const std::string& why) {
    if (!troubled_) log_("accept on " + path_ + ": " + why);
    troubled_ = true;
    uv_poll_stop(poll_);
    uv_timer_start(
        retry_,
        [](uv_timer_t* t) {
          auto* self = static_cast<UnixListener*>(t->data);
          if (self->poll_ != nullptr) uv_poll_start(self->poll_, UV_READABLE, &UnixListener::on_readable);
        },
        kAcceptRetryMs, 0);
  }

  void adopt(int fd, uv_loop_t* loop) {
    const PeerCred cred = peer_of(fd);
    if (!cred.ok || cred.uid != ::geteuid()) {
      log_("refused a connection on " + path_ + ": the peer " +
           (cred.ok ? "is user " + std::to_string(cred.uid) + " (pid " + std::to_string(cred.pid) + ")"
                    : std::string("has no credentials")) +
           ", not this user (" + std::to_string(::geteuid()) + ")");
      ::close(fd);
      return;
    }
    auto* pipe = new (std::nothrow) uv_pipe_t;
    if (pipe == nullptr) {
      log_("accept on " + path_ + ": out of memory");
      ::close(fd);
      return;
    }
    uv_pipe_init(loop, pipe, 0);
    if (int rc = uv_pipe_open(pipe, fd); rc != 0) {
      log_("accept on " + path_ + ": " + uv_strerror(rc));
      ::close(fd);
      close_and_free(pipe);
      return;
    }
    std::unique_ptr<Stream> stream =
        make_socket_stream(reinterpret_cast<uv_stream_t*>(pipe), peer_info(cred, path_));
    if (!stream) {
      log_("accept on " + path_ + ": out of memory");
      close_and_free(pipe);
      return;
    }
    on_accept_(std::move(stream));
  }

  std::string path_;
  AcceptFn on_accept_;
  LogFn log_;
  int fd_ = -1;
  uv_poll_t* poll_ = nullptr;
  uv_timer_t* retry_ = nullptr;
  bool troubled_ = false;  // the last accept failed (logged once)
  bool bound_ = false;
  dev_t dev_ = 0;
  ino_t ino_ = 0;
};

}  // namespace

Result<std::unique_ptr<Listener>> listen_unix(uv_loop_t* loop, const Endpoint& at, AcceptFn on_accept,
                                              LogFn log) noexcept {
  try {
    const std::string& path = at.path;
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

void connect_unix(uv_loop_t* loop, const Endpoint& to, ConnectFn done) {
  struct Request {
    uv_connect_t req;
    uv_pipe_t* pipe;
    std::string path;
    std::function<void(Result<std::unique_ptr<Stream>>)> done;
  };
  auto* r = new Request{{}, new uv_pipe_t, to.path, std::move(done)};
  uv_pipe_init(loop, r->pipe, 0);
  r->req.data = r;
  uv_pipe_connect(&r->req, r->pipe, r->path.c_str(), [](uv_connect_t* req, int status) {
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
    uv_os_fd_t fd = -1;
    PeerCred cred;
    if (uv_fileno(reinterpret_cast<uv_handle_t*>(pipe), &fd) == 0) cred = peer_of(fd);
    if (!cred.ok || cred.uid != ::geteuid()) {
      close_and_free(pipe);
      done(Status(Code::kPermission, "the process listening on " + path + " is not this user's"));
      return;
    }
    std::unique_ptr<Stream> stream =
        make_socket_stream(reinterpret_cast<uv_stream_t*>(pipe), peer_info(cred, path));
    if (!stream) {
      close_and_free(pipe);
      done(Status::out_of_memory());
      return;
    }
    done(std::move(stream));
  });
}

}  // namespace kura::ipc::detail
