// Internal to kura_ipc: the files behind a TCP listener's credentials (the
// shared secret, the TLS key and certificate of kura/ipc/secret.hpp),
// written once and never replaced, and read only when they are this user's
// and closed to others where they must be. Pure: no libuv.
#pragma once

#include <sys/types.h>

#include <cstddef>
#include <string>
#include <string_view>

#include "kura/core/status.hpp"

namespace kura::ipc::detail {

// A Status for errno `err` after `what`: NotFound, Exists, Permission or Io.
Status errno_status(const std::string& what, int err);

// Creates `path` with `mode` (not masked by the umask) holding `text`, and
// syncs it. Never replaces anything at `path` (not a symbolic link either);
// on an error the file is removed. `what` names the file in messages
// ("secret file"). Errors: Exists, Permission, NotFound, Io.
Status write_new_file(const std::string& path, std::string_view text, mode_t mode, const std::string& what);

// Reads `path`, at most `limit` bytes, refusing a symbolic link, a file that
// is not regular and a file of another user; with `private_only`, also one
// readable or writable by group or other. Errors: Permission (the message
// says why and how to fix it), InvalidArgument (over `limit` bytes),
// NotFound, Io, OutOfMemory. The bytes are the caller's to cleanse.
Result<std::string> read_checked_file(const std::string& path, const std::string& what, std::size_t limit,
                                      bool private_only) noexcept;

}  // namespace kura::ipc::detail
