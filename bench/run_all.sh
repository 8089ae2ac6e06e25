#!/usr/bin/env bash
# Runs every benchmark and prints its figures. SMOKE=1 runs each briefly (CI).
#   bench/run_all.sh build/release
set -euo pipefail
BIN=$(cd "${1:-build/release}" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
SMOKE=${SMOKE:-0}
big() { if [ "$SMOKE" = 1 ]; then echo "$2"; else echo "$1"; fi; }
TMP=$(mktemp -d /tmp/drover-bench.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

echo "== engine + SQLite store, one process, durability on (acks after commit)"
# Through the server's Runtime with 16 agents x 640 slots (10,240 leases may be out), then
# engine and store driven from one thread. The window of slots bounds throughput: a slot
# comes back only after its lease's commit, push, completion and the completion's commit.
"$BIN/engine_bench" --tasks "$(big 500000 20000)" --batch 1000 --agents 16 --slots 640 \
  --db "$TMP/engine.db"
echo "== the same with every task change in the event log (events.tasks all; bench/run_events.sh compares)"
"$BIN/engine_bench" --tasks "$(big 500000 20000)" --batch 1000 --agents 16 --slots 640 \
  --db "$TMP/engine-events.db" --events all
"$BIN/engine_bench" --tasks "$(big 500000 20000)" --batch 1000 --direct --db "$TMP/engine1.db"
echo "== the same with 50 agent types and 10,000 tasks in flight"
"$BIN/engine_bench" --tasks "$(big 500000 20000)" --batch 1000 --types 50 --agents 100 \
  --slots 200 --inflight "$(big 10000 2000)" --db "$TMP/engine50.db"
echo "== 1,000,000 queued tasks: resident memory, then recovery after a restart"
"$BIN/engine_bench" --queue-only "$(big 1000000 20000)" --batch 10000 --db "$TMP/queued.db"
"$BIN/engine_bench" --recover-only --db "$TMP/queued.db"
echo "== critical-path scheduling vs FIFO within a priority, on generated DAGs (virtual time)"
"$BIN/dag_bench" --sizes "$(big 10,100,1000,10000 10,100)"
echo "== end to end over loopback gRPC (server, load and agents in separate processes)"
bash "$HERE/run_e2e.sh" "$BIN" throughput "$(big 300000 5000)"
echo "== the Python SDK: asyncio batched submission and one Worker process (goals 20k and 5k tasks/s)"
bash "$HERE/run_python_sdk.sh" "$BIN" "$(big 200000 4000)"
echo "== what a token check costs: a token among 10,000 and the access rule (goal: a lookup, not a store read)"
"$BIN/auth_bench" --tokens "$(big 10000 1000)" --calls "$(big 2000000 20000)" --threads 1
echo "== latency at a steady 1,000 tasks/s, submission to the agent receiving the task"
bash "$HERE/run_e2e.sh" "$BIN" latency "$(big 30000 1000)"
echo "== drover simulate: the 27-day NASA trace (1.9M arrivals) per policy (goal: < 60 s each)"
NASA="$HERE/../traces/nasa_http_jul95.csv"
if [ "$SMOKE" = 1 ]; then head -2001 "$NASA" >"$TMP/nasa.csv"; NASA="$TMP/nasa.csv"; fi
"$BIN/drover" simulate --trace "$NASA" --service-time exp:1s --startup 30s \
  --policy static-peak --policy static-mean --policy hpa
echo "== predictive autoscaling: training each forecaster on 14 days, then a forecast and a"
echo "   decision per minute (goals: LSTM training <= 60 s; forecast + decision <= 5 ms)"
"$BIN/forecast_bench" --trace "$HERE/../traces/nasa_http_jul95.csv" \
  --train-days "$(big 14 1)" --minutes "$(big 1440 60)"
