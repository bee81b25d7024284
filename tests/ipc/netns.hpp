// A worker on "another host" for the tests of issue 16: the dispatcher in a
// network namespace of its own, the worker in another, the two joined by a
// veth pair (10.88.0.1/24 and 10.88.0.2/24), and the worker also in a mount
// namespace of its own whose region directory is a private tmpfs (and
// whose view of the test's region directory is an empty one), so it sees
// none of the dispatcher's regions. Made with iproute2 (`ip netns`, `ip
// link`) and util-linux (`unshare`).
//
// Where this process may not make namespaces (not root, or a container that
// forbids them) the host falls back to loopback: the dispatcher listens on
// 127.0.0.1 and the worker gets a private region directory of its own
// (KURA_SHM_DIR), and why_not() says why; the network cannot be cut then.
// Setting KURA_TEST_NO_NAMESPACES in the environment takes that path too.
//
// Everything it makes goes when it is destroyed, the test failed or not;
// namespaces left by a test process that was killed (their names carry its
// pid) go when the next one starts. Destroy the processes run in it first.
#pragma once

#include <string>
#include <vector>

namespace kura::test {

class RemoteHost {
 public:
  RemoteHost();
  ~RemoteHost();
  RemoteHost(const RemoteHost&) = delete;
  RemoteHost& operator=(const RemoteHost&) = delete;

  // True when the worker runs in namespaces of its own; else why_not() says
  // why it runs over loopback.
  bool isolated() const { return isolated_; }
  const std::string& why_not() const { return why_not_; }

  // The address the dispatcher listens on for the worker: 10.88.0.1 or
  // 127.0.0.1.
  std::string dispatcher_host() const { return isolated_ ? "10.88.0.1" : "127.0.0.1"; }

  // `argv` (argv[0] an absolute path) run in the dispatcher's namespace.
  std::vector<std::string> in_dispatcher(const std::vector<std::string>& argv) const;
  // `argv` run as the worker: in its namespaces with KURA_SHM_DIR its
  // private tmpfs, or on loopback with KURA_SHM_DIR a private directory.
  std::vector<std::string> in_worker(const std::vector<std::string>& argv) const;

  // Takes the worker's end of the link down (no reset reaches either side:
  // the network goes silent), and up again. REQUIRES: isolated().
  void cut();
  void heal();

 private:
  bool isolated_ = false;
  std::string why_not_;
  std::string dispatcher_ns_, worker_ns_;
  std::string region_dir_;  // the worker's: a mount point, or a private directory
};

}  // namespace kura::test
