// The credentials of workers connecting over TCP (docs/design.md "Workers
// over TCP"). `kura secret F` writes three files:
//   F      the shared secret that the dispatcher and its workers prove to
//          each other: 32 random bytes as 64 hex digits and a newline;
//   F.key  the private key of the dispatcher's TLS certificate (Ed25519,
//          PEM);
//   F.crt  that certificate, self-signed (PEM): public; a worker pins its
//          fingerprint (WorkerOptions::fingerprint).
// F and F.key must be regular files (not symbolic links) owned by this user
// with mode 0600 or stricter: whoever reads F can run as a worker (and so
// receive tasks and pull what the dispatcher serves); whoever reads F and
// F.key can also pose as the dispatcher to a worker that pins F.crt.
#pragma once

#include <string>
#include <string_view>

#include "kura/core/status.hpp"

namespace kura::ipc {

// Creates `path` (mode 0600) holding a new secret from getrandom(2), and
// beside it a new key (key_path, mode 0600) and its self-signed certificate
// (certificate_path, mode 0644). Refuses to replace anything: if any of the
// three exists, nothing is written (Exists); on another error nothing is
// left. Errors: Exists, Permission, NotFound (no such directory), Io,
// OutOfMemory. Thread-safe.
Status write_secret_file(const std::string& path) noexcept;

// Reads the secret at `path`: its 32 bytes. Errors: Permission (a symbolic
// link, not a regular file, another user's, or readable or writable by
// group or other: chmod 600 it), InvalidArgument (not 64 hex digits),
// NotFound, Io, OutOfMemory. Thread-safe.
Result<std::string> read_secret_file(const std::string& path) noexcept;

// Where write_secret_file puts the certificate and the key of the secret
// file `secret_file`: `secret_file` + ".crt" and + ".key".
std::string certificate_path(const std::string& secret_file);
std::string key_path(const std::string& secret_file);

// The fingerprint of the PEM certificate in the file at `path`: "sha256:"
// and the 64 lowercase hex digits of SHA-256 over the certificate's DER
// bytes, what a worker pins. Errors: NotFound, Permission (a symbolic link,
// not a regular file, another user's), InvalidArgument (no PEM certificate
// there), Io, OutOfMemory. Thread-safe.
Result<std::string> certificate_fingerprint(const std::string& path) noexcept;

// Checks that `text` is a fingerprint ("sha256:" and 64 hex digits of either
// case) and returns it as certificate_fingerprint writes it (lowercase).
// Errors: InvalidArgument. Thread-safe.
Result<std::string> parse_fingerprint(std::string_view text) noexcept;

}  // namespace kura::ipc
