#!/usr/bin/env bash
# Installs the peer benchmarks' npm dependencies (pinned in package-lock.json) into
# bench/peers/node_modules, unless they are already there.
#   bench/peers/install.sh
set -euo pipefail
cd "$(dirname "$0")"
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
  echo "install.sh: node and npm are required; install them from Debian:" >&2
  echo "  apt-get install nodejs npm" >&2
  exit 1
fi
if [ -d node_modules/pg-boss ]; then
  exit 0
fi
npm ci --no-audit --no-fund
