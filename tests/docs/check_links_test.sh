#!/usr/bin/env bash
# Tests tools/check_doc_links.sh on small made-up repositories: links it must
# accept, and each kind of bad link it must report.
set -euo pipefail

checker=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)/tools/check_doc_links.sh
work=$(mktemp -d "${TMPDIR:-/tmp}/kura-links.XXXXXX")
trap 'rm -rf "$work"' EXIT
failed=0

# A repository with docs/guide.md and src/, and a README holding `$1`.
make_repo() {
  local dir=$work/repo$((++repos))
  mkdir -p "$dir/docs" "$dir/src"
  printf '# Guide\n\n## 2.1 Byte order (`u64`)\n\n## Notes\n\n## Notes\n\nBack to [the README](../README.md).\n' >"$dir/docs/guide.md"
  printf '%s\n' "$1" >"$dir/README.md"
  echo "$dir"
}
repos=0

accepts() {
  local dir out
  dir=$(make_repo "$1")
  if ! out=$("$checker" "$dir" 2>&1); then
    echo "FAIL: rejected good links: $1"$'\n'"$out" >&2
    failed=1
  fi
}

# The checker must exit 1 and say `$2` about the README holding `$1`.
rejects() {
  local dir out rc=0
  dir=$(make_repo "$1")
  out=$("$checker" "$dir" 2>&1) || rc=$?
  if [[ $rc -ne 1 || $out != *"$2"* ]]; then
    echo "FAIL: '$1': wanted exit 1 and '$2', got exit $rc: $out" >&2
    failed=1
  fi
}

accepts '[guide](docs/guide.md), [folder](src/), ![img](docs/guide.md "title") and [web](https://example.org/x)'
accepts '[section](docs/guide.md#21-byte-order-u64), [repeat](docs/guide.md#notes-1), [mail](mailto:a@example.org)'
accepts $'```\n[not a link](../outside.md)\n```\nand `[code](../outside.md)`'
accepts '[ref]: docs/guide.md'

rejects '[up](../shared/FORMAT.md)' 'points outside the repository'
rejects '[gone](docs/missing.md)' 'no such file in the repository'
rejects '[abs](/etc/passwd)' 'absolute path'
rejects '[file](file:///etc/passwd)' 'not a web address'
rejects '[anchor](docs/guide.md#no-such-section)' 'no heading with anchor'
rejects '[ref]: ../outside.md' 'points outside the repository'
rejects $'fine [a](docs/guide.md) then [b](../x.md)' 'README.md:1: ../x.md'

exit $failed
