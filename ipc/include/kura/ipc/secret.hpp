// The shared secret that workers connecting over TCP and their dispatcher
// prove to each other (docs/design.md "Workers over TCP"). A secret file
// holds 32 random bytes as 64 hex digits and a newline; it must be a
// regular file (not a symbolic link) owned by this user with mode 0600 or
// stricter, since whoever reads it can run tasks on the workers and pull
// what the dispatcher serves.
#pragma once

#include <string>

#include "kura/core/status.hpp"

namespace kura::ipc {

// Creates `path` (mode 0600) holding a new secret from getrandom(2).
// Refuses to replace anything already at `path`. Errors: Exists, Permission,
// NotFound (no such directory), Io.
Status write_secret_file(const std::string& path) noexcept;

// Reads the secret at `path`: its 32 bytes. Errors: Permission (a symbolic
// link, not a regular file, another user's, or readable or writable by
// group or other: chmod 600 it), InvalidArgument (not 64 hex digits),
// NotFound, Io, OutOfMemory.
Result<std::string> read_secret_file(const std::string& path) noexcept;

}  // namespace kura::ipc
