#!/usr/bin/env bash
# Builds the dashboard (web/) with its npm toolchain into OUT_DIR (the C++ build embeds it:
# src/web/). Installs web/node_modules from package-lock.json first when it is missing or
# older than the lock file.
#   scripts/build-web.sh OUT_DIR
set -euo pipefail
OUT=${1:?usage: scripts/build-web.sh OUT_DIR}
cd "$(dirname "$0")/../web"
# Vite 8 needs Node.js 20.19 or newer (Debian 12's own nodejs is 18).
node_version=$(node --version 2>/dev/null || echo none)
case "$node_version" in
  v2[0-9].*|v[3-9][0-9].*) ;;
  *) echo "build-web.sh: the dashboard needs Node.js >= 20.19 (found: $node_version); install a newer nodejs package" >&2
     exit 1 ;;
esac
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
npm run --silent build -- --outDir "$OUT" --emptyOutDir --logLevel warn
