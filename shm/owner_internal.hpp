// Internal to kura_shm: what region.cpp needs of owners and leases.
#pragma once

#include <string>

#include "kura/shm/owner.hpp"

namespace kura::shm {

struct LeaseAccess {
  static int fd(const Lease& lease) noexcept { return lease.fd_; }
};

namespace detail {

// Records that this process's region `region_name` ("/kura_<o>_<c>") was
// disown()ed: the clean exit leaves it.
void disowned(const std::string& region_name) noexcept;

// The descriptor holding `lease` (valid in the process that holds it).
int lease_fd(const Lease& lease) noexcept;

}  // namespace detail
}  // namespace kura::shm
