// Credential files: written once, read only when they are this user's
// (private_file.hpp).
#include "private_file.hpp"

#include <fcntl.h>
#include <openssl/crypto.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <new>

namespace kura::ipc::detail {

Status errno_status(const std::string& what, int err) {
  Code code = Code::kIo;
  if (err == ENOENT) code = Code::kNotFound;
  if (err == EEXIST) code = Code::kExists;
  if (err == EACCES || err == EPERM || err == ELOOP) code = Code::kPermission;
  return Status(code, what + ": " + std::strerror(err), err);
}

Status write_new_file(const std::string& path, std::string_view text, mode_t mode, const std::string& what) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode);
  if (fd < 0) {
    if (errno == EEXIST)
      return Status(Code::kExists, what + " " + path + " exists already; refusing to replace it", EEXIST);
    return errno_status("cannot create " + what + " " + path, errno);
  }
  // The mode of open() is masked by the umask; `mode` is meant, no less.
  Status s = ::fchmod(fd, mode) == 0 ? Status::ok() : errno_status("cannot chmod " + path, errno);
  std::size_t done = 0;
  while (s && done < text.size()) {
    const ssize_t n = ::write(fd, text.data() + done, text.size() - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) s = errno_status("cannot write " + what + " " + path, errno);
    if (n > 0) done += static_cast<std::size_t>(n);
  }
  if (s && ::fsync(fd) != 0) s = errno_status("cannot sync " + what + " " + path, errno);
  ::close(fd);
  if (!s) ::unlink(path.c_str());
  return s;
}

Result<std::string> read_checked_file(const std::string& path, const std::string& what, std::size_t limit,
                                      bool private_only) noexcept {
  try {
    const int fd = ::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ELOOP)
        return Status(Code::kPermission, what + " " + path + " is a symbolic link; refusing it", ELOOP);
      return errno_status("cannot open " + what + " " + path, errno);
    }
    struct stat st;
    Status s = ::fstat(fd, &st) == 0 ? Status::ok() : errno_status("cannot stat " + what + " " + path, errno);
    if (s && !S_ISREG(st.st_mode))
      s = Status(Code::kPermission, what + " " + path + " is not a regular file; refusing it");
    if (s && st.st_uid != ::geteuid())
      s = Status(Code::kPermission, what + " " + path + " belongs to user " + std::to_string(st.st_uid) +
                                        ", not to this user; refusing it");
    if (s && private_only && (st.st_mode & 077) != 0)
      s = Status(Code::kPermission,
                 what + " " + path + " is open to group or other; it must be mode 0600 (chmod 600 it)");
    std::string bytes;
    if (s) bytes.resize(limit + 1);
    std::size_t len = 0;
    while (s && len < bytes.size()) {
      const ssize_t n = ::read(fd, bytes.data() + len, bytes.size() - len);
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) s = errno_status("cannot read " + what + " " + path, errno);
      if (n <= 0) break;
      len += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (s && len > limit)
      s = invalid_argument(what + " " + path + " is longer than " + std::to_string(limit) +
                           " bytes: not what kura secret writes");
    if (!s) {
      OPENSSL_cleanse(bytes.data(), bytes.size());
      return s;
    }
    bytes.resize(len);
    return bytes;
  } catch (const std::bad_alloc&) {
    return Status::out_of_memory();
  }
}

}  // namespace kura::ipc::detail
