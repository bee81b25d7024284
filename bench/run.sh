#!/usr/bin/env bash
# Runs the benchmarks in BUILD_DIR with repetitions and turns their JSON into
# bench/results/*.md tables and a PNG plot. Usage: bench/run.sh BUILD_DIR
set -euo pipefail
build=${1:?usage: bench/run.sh BUILD_DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
out=$here/results
mkdir -p "$out"
reps=${KURA_BENCH_REPETITIONS:-5}

"$build/bench/kura_shm_bench" --benchmark_repetitions="$reps" \
  --benchmark_report_aggregates_only=true \
  --benchmark_out="$out/shm.json" --benchmark_out_format=json
/usr/bin/python3 "$here/report.py" "$out/shm.json" "$out"
