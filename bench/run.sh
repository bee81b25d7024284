#!/usr/bin/env bash
# Runs the benchmark suite in BUILD_DIR and writes bench/results/latest.json,
# latest.md (tables of ratios) and PNG plots (bench/report.py).
#
#   bench/run.sh BUILD_DIR [--quick]
#
# Every program runs twice: with its regions in a private directory under
# /dev/shm (4 KiB pages), and on a tmpfs mounted huge=always (2 MiB pages),
# either the directory in KURA_BENCH_HUGE_DIR or one this script mounts in a
# private mount namespace (root or CAP_SYS_ADMIN); where neither is possible
# the huge-page runs are skipped and the report says so. --quick: small sizes
# and few repetitions, to prove the benchmarks still run (CI); its report goes
# to BUILD_DIR/bench-results/report/, leaving bench/results/ as it is.
#
# Bounded: the 1 GiB sizes run only with at least 12 GiB of memory available
# and 6 GiB free in /dev/shm; every program ends with its regions removed, and
# the script fails if anything is left in the region directories.
set -euo pipefail
build=${1:?usage: bench/run.sh BUILD_DIR [--quick]}
build=$(cd "$build" && pwd)
quick=0
[[ ${2:-} == --quick ]] && quick=1
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)

# Inside a private mount namespace when we can make one, so that a huge-page
# tmpfs can be mounted for this run alone (it vanishes with the namespace).
if [[ -z ${KURA_BENCH_HUGE_DIR:-} && -z ${KURA_BENCH_IN_NAMESPACE:-} ]] && unshare -m true 2>/dev/null; then
  exec env KURA_BENCH_IN_NAMESPACE=1 unshare -m "$BASH" "${BASH_SOURCE[0]}" "$@"
fi

raw=$build/bench-results
rm -rf "$raw"
mkdir -p "$raw"

huge_dir=${KURA_BENCH_HUGE_DIR:-}
mounted=""
if [[ -z $huge_dir && -n ${KURA_BENCH_IN_NAMESPACE:-} ]]; then
  mounted=$(mktemp -d /tmp/kura-bench-huge.XXXXXX)
  if mount -t tmpfs -o huge=always,size=8g,mode=0700 tmpfs "$mounted"; then
    huge_dir=$mounted
  else
    echo "bench: cannot mount a tmpfs with huge=always: the huge-page runs are skipped" >&2
  fi
fi
[[ -n $huge_dir ]] || echo "bench: no huge-page directory (set KURA_BENCH_HUGE_DIR, or run as root): those runs are skipped" >&2

small=$(mktemp -d /dev/shm/kura-bench.XXXXXX)
cleanup() {
  rm -rf "$small"
  if [[ -n $mounted ]]; then
    umount "$mounted" 2>/dev/null || true
    rmdir "$mounted" 2>/dev/null || true
  fi
}
trap cleanup EXIT

gib=$((1 << 30))
avail=$(awk '/^MemAvailable:/ {print $2 * 1024}' /proc/meminfo)
shm_free=$(df -B1 --output=avail /dev/shm | tail -1)
if ((quick)); then
  reps=3
  handoff=(--sizes=1,16 --consumers=1,4)
  shm=(--lookup_sizes=1,64 --depths=1,8 --copy_mib=64 --churn_mib=16 --hash_mib=1 --benchmark_min_time=0.05)
  ipc=(--samples=1000)
else
  reps=5
  sizes=1,16,256
  if ((avail >= 12 * gib && shm_free >= 6 * gib)); then
    sizes=$sizes,1024
  else
    echo "bench: 1 GiB hand-offs skipped: $((avail / gib)) GiB of memory available, $((shm_free / gib)) GiB free in /dev/shm (need 12 and 6)" >&2
  fi
  handoff=(--sizes=$sizes --consumers=1,2,4)
  shm=(--lookup_sizes=1,4,16,64,256,1024 --depths=1,2,4,8 --copy_mib=1024 --churn_mib=64)
  ipc=(--samples=5000)
fi

# Runs program $1 with label $2 in region directory $3, JSON to $raw.
run() {
  local prog=$1 label=$2 dir=$3 t0=$SECONDS
  shift 3
  echo "== $prog ($label pages, $dir)"
  echo "${prog#kura_}_$label: $(uptime)" >>"$raw/load.txt"
  KURA_SHM_DIR=$dir "$build/bench/$prog" --repetitions=$reps "$@" \
    --benchmark_report_aggregates_only=true \
    --benchmark_out="$raw/${prog#kura_}_$label.json" --benchmark_out_format=json |
    grep -E '_median|^[a-z_]+: ' || true
  local left
  left=$(ls -A "$dir")
  if [[ -n $left ]]; then
    echo "bench: $prog left entries in $dir:" >&2
    echo "$left" >&2
    exit 1
  fi
  echo "== $prog ($label pages) took $((SECONDS - t0)) s"
}

uptime >"$raw/load_before.txt"
start=$(date +%s)
run kura_shm_bench 4k "$small" "${shm[@]}"
[[ -z $huge_dir ]] || run kura_shm_bench huge "$huge_dir" "${shm[@]}"
run kura_handoff_bench 4k "$small" "${handoff[@]}"
# Sockets and inline arguments do not touch the region directory: once is enough.
[[ -z $huge_dir ]] || run kura_handoff_bench huge "$huge_dir" "${handoff[@]}" \
  --methods=kura_in_place,kura_share,kura_dispatcher,boost,shm_file
run kura_ipc_bench 4k "$small" "${ipc[@]}" --latency_out="$raw/latency.json"
run kura_scheduler_bench 4k "$small"  # pure code: no regions, once
uptime >"$raw/load_after.txt"
echo "== benchmarks took $(($(date +%s) - start)) s"

if ((quick)); then
  /usr/bin/python3 "$here/report.py" "$raw" "$raw/report" --quick
else
  /usr/bin/python3 "$here/report.py" "$raw" "$here/results"
fi
