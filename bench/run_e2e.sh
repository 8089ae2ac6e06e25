#!/usr/bin/env bash
# Starts drover serve (SQLite store, acks after commit), an agents process and a load
# process, and prints both processes' figures.
#   bench/run_e2e.sh BIN_DIR throughput|latency TASKS
# AUTH=off runs the server with auth off (bench/run_auth.sh compares the two); HTTP_LISTEN
# (default off) gives the server an HTTP port too, 127.0.0.1:0 say; BATCH sets
# the tasks per submission call in throughput mode (default 500).
set -euo pipefail
BIN=$1 MODE=$2 TASKS=$3
AUTH=${AUTH:-on}
source "$(dirname "$0")/lib.sh"
bench_tmp e2e
bench_serve "$BIN" --http-listen "${HTTP_LISTEN:-off}" --auth "$AUTH"
"$BIN/e2e_bench" agents --server "$ADDR" --agents 8 --slots 256 --workers 4 >"$TMP/agents.out" 2>&1 &
AGENTS=$!
PIDS+=("$AGENTS")
sleep 0.5
if [ "$MODE" = latency ]; then
  "$BIN/e2e_bench" load --server "$ADDR" --tasks "$TASKS" --rate 1000
else
  "$BIN/e2e_bench" load --server "$ADDR" --tasks "$TASKS" --batch "${BATCH:-500}" --threads 4
fi
kill -TERM "$AGENTS"
wait "$AGENTS" 2>/dev/null || true
cat "$TMP/agents.out"
