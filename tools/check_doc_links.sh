#!/usr/bin/env bash
# Checks every link in the repository's Markdown (the top-level *.md files and
# docs/): a link is either a web address (http, https, mailto) or a relative
# path to a file or folder that exists inside the repository, and a
# "#section" part must name a heading of the Markdown file it points at.
# Links in code blocks and code spans are not links. Prints each bad link as
# file:line: target: reason, and exits 1 if there is one.
#
#   tools/check_doc_links.sh [ROOT]    ROOT: the repository (default: this one)
set -euo pipefail

root=$(cd "${1:-$(dirname "${BASH_SOURCE[0]}")/..}" && pwd -P)

# The links of Markdown files, one per line: file, line number and target,
# tab-separated. Inline links and images, [text](target "title"), and
# reference definitions, [label]: target.
extract_links() {
  awk '
    FNR == 1 { fenced = 0 }
    /^[ \t]*(```|~~~)/ { fenced = !fenced; next }
    fenced { next }
    {
      line = $0
      gsub(/`[^`]*`/, "", line)  # code spans
      if (match(line, /^[ \t]*\[[^\]]+\]:[ \t]*[^ \t]+/)) {
        def = substr(line, RSTART, RLENGTH)
        sub(/^[ \t]*\[[^\]]+\]:[ \t]*/, "", def)
        print FILENAME "\t" FNR "\t" def
        next
      }
      while (match(line, /\]\([^)]*\)/)) {
        target = substr(line, RSTART + 2, RLENGTH - 3)
        line = substr(line, RSTART + RLENGTH)
        sub(/^[ \t]+/, "", target)
        sub(/[ \t].*$/, "", target)  # a title after the target
        sub(/^</, "", target)
        sub(/>$/, "", target)
        print FILENAME "\t" FNR "\t" target
      }
    }
  ' "$@"
}

# The anchors GitHub makes of a Markdown file's headings: lower case, only
# letters, digits, spaces, "-" and "_" kept, spaces turned into "-", and
# "-1", "-2", ... after repeats.
anchors_of() {
  awk '
    /^[ \t]*(```|~~~)/ { fenced = !fenced; next }
    fenced || !/^#+[ \t]/ { next }
    {
      h = $0
      sub(/^#+[ \t]+/, "", h)
      sub(/[ \t]+#*[ \t]*$/, "", h)
      h = tolower(h)
      gsub(/[^a-z0-9 _-]/, "", h)
      gsub(/ /, "-", h)
      n = seen[h]++
      print (n ? h "-" n : h)
    }
  ' "$1"
}

bad=0
report() {
  echo "$1:$2: $3: $4" >&2
  bad=1
}

mapfile -t files < <(find "$root" -maxdepth 1 -name '*.md' -type f; [[ -d $root/docs ]] && find "$root/docs" -name '*.md' -type f)
((${#files[@]})) || { echo "check_doc_links: no Markdown files under $root" >&2; exit 1; }

while IFS=$'\t' read -r file line target; do
  rel=${file#"$root"/}
  case "$target" in
    http://* | https://* | mailto:*) continue ;;
    "") report "$rel" "$line" "(empty)" "empty link"; continue ;;
    /*) report "$rel" "$line" "$target" "absolute path (link relative to the file instead)"; continue ;;
    *:*) report "$rel" "$line" "$target" "not a web address nor a path in the repository"; continue ;;
  esac
  path=${target%%#*}
  anchor=""
  [[ $target == *"#"* ]] && anchor=${target#*#}
  if [[ -z $path ]]; then
    resolved=$file
  else
    resolved=$(realpath -m "$(dirname "$file")/$path")
    if [[ $resolved != "$root" && $resolved != "$root"/* ]]; then
      report "$rel" "$line" "$target" "points outside the repository"
      continue
    fi
    if [[ ! -e $resolved ]]; then
      report "$rel" "$line" "$target" "no such file in the repository"
      continue
    fi
  fi
  if [[ -n $anchor && $resolved == *.md ]] && ! anchors_of "$resolved" | grep -qxF -- "$anchor"; then
    report "$rel" "$line" "$target" "no heading with anchor #$anchor in ${resolved#"$root"/}"
  fi
done < <(extract_links "${files[@]}")

exit $bad
