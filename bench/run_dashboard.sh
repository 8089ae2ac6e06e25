#!/usr/bin/env bash
# The dashboard's figures (issue 11, docs/benchmarks.md#dashboard): a real drover serve on
# SQLite filled with TASKS tasks (all but a tenth succeeded, the rest ready with no agent for
# them), then headless Chromium (bench/dashboard_bench.mjs): first paint and time to data
# of the overview and the tasks pages, then the overview kept open while RATE tasks/s are
# submitted (open loop, batches of 100) and completed by agents, with its main thread's
# busy fraction.
#   bench/run_dashboard.sh BIN_DIR [TASKS] [RATE] [SECONDS]
# Defaults: 1000000 tasks, 10000 tasks/s, 20 s.
set -euo pipefail
BIN=$(cd "$1" && pwd) TASKS=${2:-1000000} RATE=${3:-10000} SECS=${4:-20}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
NODE_MODULES=$ROOT/web/node_modules
[ -d "$NODE_MODULES/playwright-core" ] || { echo "web/node_modules is missing: build first (scripts/build.sh)"; exit 1; }
source "$ROOT/bench/lib.sh"
bench_tmp dash-bench
bench_serve "$BIN" --http-listen 127.0.0.1:0
URL=http://127.0.0.1:$(cut -d' ' -f2 "$TMP/ports")
echo "server: $URL (SQLite in $TMP/data)"

# Agents for type bench-0 only: bench-1 tasks stay ready.
"$BIN/e2e_bench" agents --server "$ADDR" --agents 8 --slots 256 --workers 4 >"$TMP/agents.out" 2>&1 &
PIDS+=("$!")
sleep 0.5
t0=$(date +%s)
done_n=$((TASKS - 2 * (TASKS / 10)))
"$BIN/e2e_bench" load --server "$ADDR" --tasks "$done_n" --batch 1000 --threads 4 | sed 's/^/fill: /'
# Two types alternate: half of these stay ready.
"$BIN/e2e_bench" load --server "$ADDR" --tasks $((2 * (TASKS / 10))) --types 2 --batch 1000 \
  --threads 4 --wait off | sed 's/^/fill: /'
echo "fill: took $(($(date +%s) - t0)) s; the server holds $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MiB", $1/1024}')"
"$BIN/drover" --server "$ADDR" stats 2>/dev/null | grep -iE "succeeded|ready|store" | head -5 | sed 's/^/stats: /' || true

export DROVER_URL=$URL DROVER_TOKEN
DROVER_TOKEN=$(cat "$DROVER_TOKEN_FILE")
export NODE_MODULES
node "$ROOT/bench/dashboard_bench.mjs" paint 5
export LOAD_CMD="'$BIN/e2e_bench' load --server '$ADDR' --tasks $((RATE * (SECS + 6))) --rate $RATE --batch 100 --wait off | sed 's/^/stream load: /'"
node "$ROOT/bench/dashboard_bench.mjs" stream "$SECS"
echo "server: $(ps -o rss= -p "$SERVER" | awk '{printf "%.0f MiB", $1/1024}') resident at the end"
