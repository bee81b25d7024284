#!/bin/sh
# Runs the whole shm test suite once more on a tmpfs mounted huge=always,
# in a private mount namespace, so every region of it lies in 2 MiB pages
# (the suite's directory test checks that they do).
#
#   huge_pages.sh KURA_SHM_TESTS
#
# The tmpfs is mounted over a fresh directory under $KURA_SHM_DIR (or
# /dev/shm), visible only inside the namespace; the directory is removed
# afterwards. Exits 77 (a skip, for CTest) where the machine does not allow
# a private mount namespace with its own tmpfs (it needs root or
# CAP_SYS_ADMIN), and fails when the suite fails or leaves anything in the
# tmpfs.
set -eu
tests=${1:?usage: huge_pages.sh KURA_SHM_TESTS}
base=${KURA_SHM_DIR:-/dev/shm}

if ! unshare -m true 2>/dev/null; then
  echo "SKIPPED: cannot make a private mount namespace (unshare -m needs root or CAP_SYS_ADMIN);" \
    "the shm suite was NOT run on huge pages"
  exit 77
fi
dir=$(mktemp -d "$base/kura-huge.XXXXXX")
trap 'rmdir "$dir"' EXIT
rc=0
unshare -m sh -c '
  dir=$1 tests=$2
  if ! mount -t tmpfs -o huge=always,size=2g,mode=1777 tmpfs "$dir"; then
    echo "SKIPPED: cannot mount a tmpfs with huge=always; the shm suite was NOT run on huge pages"
    exit 77
  fi
  grep " $dir " /proc/self/mountinfo
  rc=0
  KURA_SHM_DIR=$dir KURA_TEST_HUGE_PAGES=always "$tests" || rc=$?
  left=$(ls -A "$dir")
  if [ -n "$left" ]; then
    echo "huge_pages.sh: the suite left entries in the huge-page tmpfs:" >&2
    echo "$left" >&2
    rc=1
  fi
  exit $rc
' sh "$dir" "$tests" || rc=$?
exit $rc
