#!/usr/bin/env bash
# The consumer test (registered by tests/consumer/CMakeLists.txt, which passes
# every option): installs the current build into a temporary prefix, checks
# what was installed, builds app/ against that prefix with find_package and
# again with pkg-config, and runs every build. Each run shares a value and
# maps it back by name in a second process, in a region directory of its own
# that must be empty afterwards. Everything is removed at the end, pass or
# fail.
#
#   run.sh --build DIR --generator NAME --cxx PATH --libdir DIR --version X.Y.Z
#          --soversion X.Y --components "core shm" --tool 0|1 [--flags "-f..."]
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
flags=""
while (($#)); do
  case "$1" in
    --build) build=$2 ;;
    --generator) generator=$2 ;;
    --cxx) cxx=$2 ;;
    --libdir) libdir=$2 ;;
    --version) version=$2 ;;
    --soversion) soversion=$2 ;;
    --components) read -r -a components <<<"$2" ;;
    --tool) tool=$2 ;;
    --flags) flags=$2 ;;
    *) echo "run.sh: unknown option $1" >&2 && exit 2 ;;
  esac
  shift 2
done

fail() {
  echo "consumer test: $*" >&2
  exit 1
}

# Runs "$@" with its output in $work/log, shown only when it fails.
quiet() {
  "$@" >"$work/log" 2>&1 || {
    cat "$work/log" >&2
    fail "failed: $*"
  }
}

work=$(mktemp -d "${TMPDIR:-/tmp}/kura-consumer.XXXXXX")
# Beside the other tests' private directories (tests/support/private_shm_dir.hpp).
regions=$(mktemp -d "${KURA_SHM_DIR:-/dev/shm}/kura-consumer.XXXXXX")
trap 'rm -rf "$work" "$regions"' EXIT
export KURA_SHM_DIR=$regions
prefix=$work/prefix

# --- The installed tree -------------------------------------------------------

quiet cmake --install "$build" --prefix "$prefix"
inc=$prefix/include
lib=$prefix/$libdir
[[ -f $inc/kura/version.hpp ]] || fail "kura/version.hpp is not installed"
for c in "${components[@]}"; do
  [[ -d $inc/kura/$c ]] || fail "the headers of $c are not installed"
  [[ -f $lib/libkura_$c.a ]] || fail "libkura_$c.a is not installed"
  soname=$(readelf -d "$lib/libkura_$c.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]/\1/p')
  [[ $soname == "libkura_$c.so.$soversion" ]] || fail "libkura_$c.so has SONAME '$soname', not libkura_$c.so.$soversion"
  [[ -f $lib/$soname ]] || fail "$lib/$soname is not installed"
done

internal=$(find "$prefix" -name '*_internal.hpp')
[[ -z $internal ]] || fail "internal headers were installed: $internal"
# Boost and libuv stay private to the libraries that use them (STYLE.md):
# no installed header may include them, directly or through another.
heavy=$(grep -rlE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"](boost/|uv\.h|uv/)' "$inc" || true)
[[ -z $heavy ]] || fail "installed headers include Boost or libuv: $heavy"
# Every kura header an installed header includes is installed too, so the
# check above covers everything a user's #include can reach.
while read -r h; do
  [[ -f $inc/$h ]] || fail "an installed header includes $h, which is not installed"
done < <(grep -rhoE '^[[:space:]]*#[[:space:]]*include[[:space:]]*[<"]kura/[^>"]+' "$inc" |
  sed -E 's/.*[<"]//' | sort -u)

# --- Built with find_package --------------------------------------------------

quiet cmake -S "$here/app" -B "$work/cmake" -G "$generator" -DCMAKE_CXX_COMPILER="$cxx" \
  -DCMAKE_PREFIX_PATH="$prefix" -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_EXE_LINKER_FLAGS="$flags"
quiet cmake --build "$work/cmake"
readelf -d "$work/cmake/consumer_shared" | grep -q "NEEDED.*\[libkura_shm.so.$soversion\]" ||
  fail "consumer_shared does not load libkura_shm.so.$soversion"
if readelf -d "$work/cmake/consumer_static" | grep -q 'NEEDED.*libkura_'; then
  fail "consumer_static loads a shared kura library"
fi
"$work/cmake/consumer_shared" || fail "consumer_shared (find_package, kura::shm) failed"
"$work/cmake/consumer_static" || fail "consumer_static (find_package, kura::shm_static) failed"

read -r header_version format_version < <("$work/cmake/consumer_static" versions)
[[ $header_version == "$version" ]] || fail "the installed kura/version.hpp says $header_version, not $version"
if ((tool)); then
  tool_version=$("$prefix/bin/kura" --version)
  want="kura $version (format version $format_version)"
  [[ $tool_version == "$want" ]] || fail "kura --version prints '$tool_version', not '$want'"
fi

# --- Built with pkg-config ----------------------------------------------------

export PKG_CONFIG_PATH=$lib/pkgconfig
[[ $(pkg-config --modversion kura) == "$version" ]] || fail "kura.pc has version $(pkg-config --modversion kura)"
pkg-config --static --libs kura | grep -q -- '-lxxhash' || fail "kura.pc does not bring libxxhash for static links"
# shellcheck disable=SC2046,SC2086 # flags are words
quiet "$cxx" -std=c++20 $flags $(pkg-config --cflags kura) -c "$here/app/consumer.cpp" -o "$work/consumer.o"
# shellcheck disable=SC2046,SC2086
quiet "$cxx" $flags "$work/consumer.o" $(pkg-config --libs kura) -Wl,-rpath,"$lib" -o "$work/consumer_pc" || fail "consumer_pc (pkg-config) failed"
"$work/consumer_pc" || fail "consumer_pc (pkg-config) failed"

left=$(ls -A "$regions")
[[ -z $left ]] || fail "the consumers left files in their region directory: $left"
echo "consumer test: installed, built with find_package and pkg-config, shared and mapped"
