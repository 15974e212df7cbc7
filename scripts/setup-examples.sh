#!/usr/bin/env bash
# Installs what the example workers in examples/ need, and nothing that is
# already there: gRPC for Debian's /usr/bin/python3 (apt-get) and the Node
# example's npm packages (npm ci, from the committed package-lock.json).
# Idempotent; a second run takes a few milliseconds.
#
# Usage: scripts/setup-examples.sh   (from anywhere; `make setup` calls it)
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

log() { printf 'setup-examples: %s\n' "$*" >&2; }

as_root() {
  if [ "$(id -u)" = 0 ]; then "$@"
  elif command -v sudo >/dev/null; then sudo "$@"
  else log "need root to run: $*"; return 1
  fi
}

# Python: Debian's packages, for /usr/bin/python3 (the python3 first on PATH
# may be another interpreter; the examples and their tests use this one).
if ! /usr/bin/python3 -c 'import grpc, grpc_tools' 2>/dev/null; then
  log "installing python3-grpcio, python3-grpc-tools, python3-protobuf (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends \
    python3-grpcio python3-grpc-tools python3-protobuf >/dev/null
fi

# Node: the system node and npm (scripts/setup.sh installs them too).
if ! command -v npm >/dev/null; then
  log "installing nodejs and npm (apt-get)"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends nodejs npm >/dev/null
fi

# npm ci writes node_modules/.package-lock.json; a package-lock.json newer
# than it means the pins changed since the last install.
node_dir="$root/examples/node"
if ! [ -d "$node_dir/node_modules" ] || [ "$node_dir/package-lock.json" -nt "$node_dir/node_modules/.package-lock.json" ]; then
  log "installing the Node example's packages (npm ci)"
  (cd "$node_dir" && npm ci --no-audit --no-fund --loglevel=error)
fi
