// Internal to kura_ipc: descriptors a child forked without exec must not
// keep. A socket of the client's (or the dispatcher's) held open by a forked
// child keeps the connection alive after its owner died: the dispatcher would
// go on running a dead client's tasks until the child exits. Registered
// descriptors are closed in the child right after fork() (a pthread_atfork
// handler, installed by the first registration); the parent keeps them.
#pragma once

#include "kura/core/status.hpp"

namespace kura::ipc::detail {

// Registers `fd` to be closed in every child forked from now on until it is
// forgotten. The child closes it only while it still refers to the file it
// referred to when it was registered (a number closed and reused meanwhile is
// left alone). Thread-safe. Errors: Io (fstat failed: not an open
// descriptor), OutOfMemory.
Status close_in_forked_child(int fd) noexcept;
// Forgets `fd` (no effect when it is not registered); call it before closing
// `fd`. Thread-safe.
void forget_in_forked_child(int fd) noexcept;

}  // namespace kura::ipc::detail
