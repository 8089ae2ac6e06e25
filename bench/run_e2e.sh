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
TMP=$(mktemp -d /tmp/drover-e2e.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
"$BIN/drover" serve --data-dir "$TMP/data" --grpc-listen 127.0.0.1:0 --http-listen "${HTTP_LISTEN:-off}" \
  --auth "$AUTH" --port-file "$TMP/ports" 2>"$TMP/serve.log" &
PIDS+=("$!")
for _ in $(seq 1 200); do [ -f "$TMP/ports" ] && break; sleep 0.05; done
# The load and the agents use the admin token the server wrote (auth on).
unset DROVER_TOKEN DROVER_TOKEN_FILE
[ "$AUTH" = off ] || export DROVER_TOKEN_FILE="$TMP/data/admin.token"
ADDR=127.0.0.1:$(cut -d' ' -f1 "$TMP/ports")
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
