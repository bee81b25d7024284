#!/usr/bin/env bash
# The hex dump of the golden region (tests/data/example-v1.bin) that
# docs/format.md shows, so the document can never drift from the bytes the
# golden test holds the writer to.
#
#   golden_hex.sh print   print the dump, as it goes into docs/format.md
#   golden_hex.sh check   exit 1 unless docs/format.md holds exactly that dump
set -euo pipefail

top=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
bin=$top/tests/data/example-v1.bin
doc=$top/docs/format.md

# 16 bytes a line: the offset in hex, the bytes in two groups of 8, and the
# printable ones as characters.
dump() {
  od -An -v -tu1 "$bin" | tr -s ' \n' '\n\n' | grep -v '^$' | awk '
    function flush() {
      if (n == 0) return
      printf "%04x  %-24s %-24s |%s|\n", off, left, right, text
      off += n; n = 0; left = right = text = ""
    }
    {
      hex = sprintf("%02x", $1)
      if (n < 8) left = left hex " "; else right = right hex " "
      text = text (($1 >= 32 && $1 < 127) ? sprintf("%c", $1) : ".")
      if (++n == 16) flush()
    }
    END { flush() }
  ' | sed 's/ *|/  |/'
}

case "${1:-}" in
  print) dump ;;
  check)
    if ! diff <(dump) <(grep -E '^[0-9a-f]{4}  [0-9a-f]{2} ' "$doc"); then
      echo "docs/format.md: the hex dump of the golden region differs from $bin (lines < are the file's;" \
        "regenerate with tests/docs/golden_hex.sh print)" >&2
      exit 1
    fi
    ;;
  *)
    echo "usage: golden_hex.sh print|check" >&2
    exit 2
    ;;
esac
