#!/bin/sh
# Generates the Python stubs of ../../proto into OUT (default: ./gen, which
# git ignores). lease.py finds them there, or in $BROKER_PY_STUBS.
#
# Usage: ./gen.sh [OUT]
# PYTHON picks the interpreter (default: /usr/bin/python3, the one Debian's
# python3-grpc-tools is for; elsewhere, PYTHON=python3 after
# `pip install -r requirements.txt`).
set -eu

here=$(cd "$(dirname "$0")" && pwd)
proto="$here/../../proto"
out=${1:-"$here/gen"}
python=${PYTHON:-/usr/bin/python3}

src=$proto
# protoc before 3.15 rejects proto3 `optional` fields; Debian bookworm's
# python3-grpc-tools bundles protoc 3.5.1. `optional T f = N;` is defined as
# `oneof _f { T f = N; }` (same wire format, same HasField), so older
# compilers get a copy of proto/ spelled that way.
version=$("$python" -m grpc_tools.protoc --version | sed 's/^libprotoc //')
case $version in
3.[0-9].* | 3.1[0-4].*)
  src=$(mktemp -d)
  trap 'rm -rf "$src"' EXIT
  (cd "$proto" && find . -name '*.proto') | while read -r f; do
    mkdir -p "$src/$(dirname "$f")"
    sed -E 's/^([[:space:]]*)optional[[:space:]]+([A-Za-z0-9_.]+)[[:space:]]+([A-Za-z0-9_]+)[[:space:]]*=[[:space:]]*([0-9]+)[[:space:]]*;/\1oneof _\3 { \2 \3 = \4; }/' \
      "$proto/$f" >"$src/$f"
  done
  ;;
esac

mkdir -p "$out"
cd "$src"
# shellcheck disable=SC2046 # proto paths have no spaces
"$python" -m grpc_tools.protoc -I. --python_out="$out" --grpc_python_out="$out" \
  $(find . -name '*.proto' | sed 's|^\./||' | sort)
