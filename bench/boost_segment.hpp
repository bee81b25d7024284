// Where a benchmark program puts its Boost.Interprocess segment: a
// managed_shared_memory object in /dev/shm when kura's regions are in
// /dev/shm with 4 KiB pages, else a managed_mapped_file in the region
// directory, so that Boost's memory comes from the same file system as
// kura's regions. --boost=shm|file overrides the choice.
#pragma once

#include <unistd.h>

#include <boost/interprocess/managed_mapped_file.hpp>
#include <boost/interprocess/managed_shared_memory.hpp>
#include <string>

#include "bench_util.hpp"
#include "kura/shm/directory.hpp"

namespace kura::bench {

struct BoostSegment {
  bool file = false;  // managed_mapped_file (else managed_shared_memory)
  std::string name;   // the file's path, or the shared memory object's name

  // Picks the kind from opt's "boost" or the default for `label` (what
  // describe_region_directory() returned), names the segment `stem`.PID,
  // and records the kind in the run's JSON context.
  void choose(const Options& opt, const std::string& label, const std::string& stem) {
    const bool dev_shm = label == "4k" && shm::directory().rfind("/dev/shm", 0) == 0;
    file = opt.get("boost", dev_shm ? "shm" : "file") == "file";
    const std::string base = stem + "." + std::to_string(::getpid());
    name = file ? shm::directory() + "/" + base : base;
    benchmark::AddCustomContext("boost_segment", file ? "managed_mapped_file" : "managed_shared_memory");
  }
  // Removes the segment if it exists.
  void remove() const {
    if (name.empty()) return;
    if (file) {
      boost::interprocess::file_mapping::remove(name.c_str());
    } else {
      boost::interprocess::shared_memory_object::remove(name.c_str());
    }
  }
};

}  // namespace kura::bench
