#!/usr/bin/env bash
# The demo until the dispatcher lands: builds a sample region with the kura
# tool, reads it back whole and by path, inspects and verifies it, then
# removes it. Usage: tools/demo.sh PATH/TO/kura
set -euo pipefail
kura=${1:?usage: tools/demo.sh PATH/TO/kura}
work=$(mktemp -d)
name=
# On any failure, remove the region too.
trap 'rm -rf "$work"; if [[ -n $name ]]; then "$kura" rm "$name" >/dev/null 2>&1 || true; fi' EXIT

# A small data frame (names, class and row.names attributes) next to a long
# measurement series, in the typed JSON of DESIGN.md section 5.
n=100000
{
  printf '{"type": "list", "names": ["frame", "series"], "values": [\n'
  printf '  {"type": "list", "names": ["id", "score", "label", "ok"],\n'
  printf '   "attrs": {"class": {"type": "strings", "values": ["data.frame"]},\n'
  printf '             "row.names": {"type": "i32", "values": [-2147483648, -3]}},\n'
  printf '   "values": [\n'
  printf '     {"type": "i32", "values": [1, 2, 3]},\n'
  printf '     {"type": "f64", "values": [0.5, null, 2.25]},\n'
  printf '     {"type": "strings", "values": ["alpha", null, "gamma"]},\n'
  printf '     {"type": "lgl", "values": [true, false, null]}]},\n'
  printf '  {"type": "f64", "values": ['
  seq 1 "$n" | awk -v n="$n" '{ printf "%s%.4f", (NR > 1 ? "," : ""), sin($1 / 1000.0) } END { printf "]}\n" }'
  printf ']}\n'
} >"$work/sample.json"

run() {
  echo
  echo "\$ kura $*"
  "$kura" "$@"
}

# Runs kura and checks that it exits with the code given first.
expect_exit() {
  local want=$1 code=0
  shift
  echo
  echo "\$ kura $*   # expect exit code $want"
  "$kura" "$@" || code=$?
  echo "(exit $code)"
  [[ $code -eq $want ]]
}

name=$("$kura" put --keep "$work/sample.json" | tail -n 1)
echo "\$ kura put --keep sample.json"
echo "$name"
run ls
run get "$name"
run get "$name[1,2]" --json
run get "$name[2]"
run inspect "$name[1]"
run verify "$name"
expect_exit 5 get "$name[3]"   # out of range
run rm "$name"
removed=$name
name=
expect_exit 3 get "$removed"   # removed: not found
