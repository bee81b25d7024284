#!/usr/bin/env bash
# The README's C++ dispatcher example, cut out of README.md, compiled against
# this build and run: it must exit 0 (its task returned 5).
#   readme_example.sh README CXX "EXTRA_FLAGS" LIB... -- INCLUDE_DIR...
set -euo pipefail
readme=$1 cxx=$2 extra=$3
shift 3
libs=() includes=()
while [[ $# -gt 0 && $1 != -- ]]; do libs+=("$1"); shift; done
shift
for d in "$@"; do includes+=("-I$d"); done

work=$(mktemp -d /tmp/kura-readme.XXXXXX)
trap 'rm -rf "$work"' EXIT
# The block that starts with "#include <cmath>" and uses kura/ipc.
awk '/^```cpp$/ {inblock=1; block=""; next}
     /^```$/ && inblock {inblock=0; if (block ~ /kura\/ipc\/dispatcher.hpp/) {printf "%s", block; exit}}
     inblock {block = block $0 "\n"}' "$readme" >"$work/example.cpp"
[[ -s $work/example.cpp ]] || { echo "no C++ dispatcher example in $readme" >&2; exit 1; }
# Its socket directory is a private one of this run.
mkdir -m 700 "$work/kt"
sed -i "s|/tmp/kt/|$work/kt/|" "$work/example.cpp"
# shellcheck disable=SC2086
"$cxx" -std=c++20 $extra "${includes[@]}" "$work/example.cpp" -o "$work/example" \
  "${libs[@]}" -luv -lxxhash -lssl -lcrypto -lpthread -ldl
timeout 60 "$work/example"
echo "the README's C++ example ran and returned 0"
