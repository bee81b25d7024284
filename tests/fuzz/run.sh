#!/usr/bin/env bash
# Runs each fuzz target for SECONDS on a fresh seed corpus.
#   tests/fuzz/run.sh BUILD_DIR SECONDS
# BUILD_DIR is a build configured with CC=clang CXX=clang++ -DKURA_FUZZ=ON.
# Prints each target's final status line (execs, exec/s); exits non-zero if
# any target crashes (its reproducer is kept in BUILD_DIR/fuzz-artifacts).
set -euo pipefail

if [[ $# -ne 2 ]]; then
  echo "usage: $0 BUILD_DIR SECONDS" >&2
  exit 2
fi
build=$(cd "$1" && pwd)
seconds=$2
bin=$build/tests/fuzz

cmake --build "$build" --target kura_name_fuzz kura_region_fuzz kura_frame_fuzz kura_typed_json_fuzz kura_endpoint_fuzz kura_handshake_fuzz kura_tls_fuzz kura_make_corpus kura_make_frame_corpus >/dev/null

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$bin/kura_make_corpus" "$work/seeds"
mkdir -p "$work/seeds/frame"
"$bin/kura_make_frame_corpus" "$work/seeds/frame"
mkdir -p "$work/seeds/endpoint"
printf 'unix:/run/user/1000/kura/dispatcher.sock' >"$work/seeds/endpoint/unix"
printf 'd.sock' >"$work/seeds/endpoint/bare"
printf 'tcp://127.0.0.1:7000' >"$work/seeds/endpoint/tcp"
printf 'tcp://[::1]:0' >"$work/seeds/endpoint/tcp6"
mkdir -p "$work/seeds/handshake"
printf '\001KURAAUT2' >"$work/seeds/handshake/magic"
mkdir -p "$work/seeds/tls"
# A listener's session fed the start of a TLS record (a handshake message).
printf '\001\026\003\001\000\200\001' >"$work/seeds/tls/record"
mkdir -p "$build/fuzz-artifacts"

status=0
for target in name region frame typed_json endpoint handshake tls; do
  mkdir -p "$work/corpus-$target"
  log=$work/$target.log
  echo "== kura_${target}_fuzz for ${seconds}s"
  if "$bin/kura_${target}_fuzz" -max_total_time="$seconds" -print_final_stats=1 \
      -artifact_prefix="$build/fuzz-artifacts/$target-" \
      "$work/corpus-$target" "$work/seeds/$target" >"$log" 2>&1; then
    grep -E '^#[0-9]+[[:space:]]+DONE' "$log" | tail -n 1 || true
    grep -E 'Done [0-9]+ runs|stat::number_of_executed_units|stat::average_exec_per_sec|stat::peak_rss_mb' "$log" || true
    echo "corpus: $(ls "$work/corpus-$target" | wc -l) units"
  else
    status=1
    echo "!! kura_${target}_fuzz FAILED; last lines of its log:"
    tail -n 60 "$log"
  fi
done
exit $status
