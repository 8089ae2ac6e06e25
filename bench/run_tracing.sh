#!/usr/bin/env bash
# What tracing costs (issue 11: within 10 % with 1 % sampling and the event log on): engine +
# runtime + SQLite throughput (bench/engine_bench, the server's own path without the
# network) with tracing off, at 1 % and at 100 % sampling to a real OTLP/HTTP receiver
# (npm's @elastic/mockotlpserver, as the tests use), the event log at its default level
# throughout; back to back, ROUNDS times in a rotating order, then the medians.
#   bench/run_tracing.sh BIN_DIR [TASKS] [ROUNDS]
set -euo pipefail
BIN=$(cd "$1" && pwd) TASKS=${2:-300000} ROUNDS=${3:-5}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NPM_DIR=${DROVER_NPM_DIR:-$ROOT/build/npm}
if [ ! -d "$NPM_DIR/node_modules/@elastic/mockotlpserver" ]; then
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error @elastic/mockotlpserver@0.10.0
fi
TMP=$(mktemp -d /tmp/drover-tracing-bench.XXXXXX)
NODE_PATH="$NPM_DIR/node_modules" node "$ROOT/tests/integration/otlp_receiver.js" /dev/null >"$TMP/url" &
RECEIVER=$!
trap 'kill $RECEIVER 2>/dev/null; rm -rf "$TMP"' EXIT
for _ in $(seq 1 100); do [ -s "$TMP/url" ] && break; sleep 0.1; done
URL=$(head -1 "$TMP/url")
URL=${URL%/}
rate() { grep -o '= [0-9]* tasks/s' | grep -o '[0-9]*' | head -1; }
run() {
  local extra=()
  [ "$1" != off ] && extra=(--trace-endpoint "$URL" --trace-sampling "$1")
  "$BIN/engine_bench" --tasks "$TASKS" --batch 1000 --agents 16 --slots 640 \
    --db "$TMP/engine.db" "${extra[@]}" | tee -a "$TMP/log" | rate
}
source "$(dirname "$0")/rounds.sh"
rounds "$ROUNDS" sampling off 0.01 1
grep -o 'tracing .*' "$TMP/log" | tail -2
