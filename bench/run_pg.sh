#!/usr/bin/env bash
# drover on PostgreSQL, measured on a throwaway PostgreSQL 15 started here (fsync on,
# synchronous_commit on: a task is acknowledged only after its commit is flushed).
#
#   bench/run_pg.sh BIN_DIR throughput [TASKS] [PEER_JOBS]
#       drover serve --store postgres://... end to end over loopback gRPC (e2e_bench: 4
#       client threads submitting batches of 500, 8 agents completing in batches), then
#       pg-boss on the same PostgreSQL (bench/peers, fetch + complete in batches of 1,000
#       and of 5,000), and the ratio to the faster, all in one run.
#   bench/run_pg.sh BIN_DIR takeover [QUEUED]
#       QUEUED tasks waiting (no agents), an owner and a standby; kill -9 the owner and time
#       until the standby serves, and how long its recovery (loading the queue) took.
set -euo pipefail
BIN=$(cd "$1" && pwd)
MODE=$2
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
PGS="$ROOT/scripts/pg-test-server.sh"
PGDIR=/tmp/drover-pg-bench.$$
TMP=$(mktemp -d /tmp/drover-pgbench.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -9 "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  bash "$PGS" stop "$PGDIR" >/dev/null 2>&1 || true
  rm -rf "$TMP"
}
trap cleanup EXIT
bash "$PGS" start "$PGDIR" >/dev/null
BASE=$(cat "$PGDIR/dsn")
BASE=${BASE%/drover}
psql -X -q "$BASE/drover" -c "CREATE DATABASE peer" >/dev/null

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
serve() {  # serve NAME PORT [flags]: drover on the bench database
  local name=$1 port=$2
  shift 2
  "$BIN/drover" serve --store "$BASE/drover" --data-dir "$TMP/$name" --grpc-listen "127.0.0.1:$port" \
    --http-listen off --port-file "$TMP/$name.ports" "$@" 2>"$TMP/$name.log" &
  PIDS+=("$!")
  echo $! >"$TMP/$name.pid"
}
wait_file() { for _ in $(seq 1 "${2:-600}"); do [ -f "$1" ] && return 0; sleep 0.02; done; return 1; }

case "$MODE" in
throughput)
  TASKS=${3:-300000}
  PEER_JOBS=${4:-100000}
  P=$(free_port)
  serve one "$P"
  wait_file "$TMP/one.ports"
  "$BIN/e2e_bench" agents --server "127.0.0.1:$P" --agents 8 --slots 256 --workers 4 >"$TMP/agents.out" 2>&1 &
  AG=$!
  PIDS+=("$AG")
  sleep 0.5
  line=$("$BIN/e2e_bench" load --server "127.0.0.1:$P" --tasks "$TASKS" --batch 500 --threads 4)
  echo "drover (PostgreSQL store): $line"
  kill -TERM "$AG"
  wait "$AG" 2>/dev/null || true
  kill -TERM "$(cat "$TMP/one.pid")"
  wait 2>/dev/null || true
  drover_rate=$(grep -o '= [0-9]* tasks/s' <<<"$line" | tr -dc '0-9')
  bash "$ROOT/bench/peers/install.sh" >/dev/null
  # pg-boss at its defaults (fetch batches of 1,000, 2 workers) and at its best setting
  # found (batches of 5,000; bench/peers/README.md); the ratio is against the faster.
  best=0
  for batch in 1000 5000; do
    peer=$(node "$ROOT/bench/peers/pgboss_bench.mjs" --dsn "$BASE/peer" --jobs "$PEER_JOBS" \
      --batch "$batch" 2>"$TMP/peer.err")
    echo "$(head -1 <<<"$peer") (fetch batch $batch)"
    rate=$(tail -1 <<<"$peer" | python3 -c 'import sys,json; print(round(json.load(sys.stdin)["jobs_per_s"]))')
    [ "$rate" -gt "$best" ] && best=$rate
  done
  python3 -c "print(f'drover / pg-boss (its faster setting) on the same PostgreSQL: {$drover_rate / $best:.1f}x')"
  ;;
takeover)
  QUEUED=${3:-1000000}
  PA=$(free_port)
  PB=$(free_port)
  serve a "$PA" --capacity 2000000
  wait_file "$TMP/a.ports"
  # Batches of 1,000 from one client (more get "server busy"), no agents: all stays queued.
  "$BIN/e2e_bench" load --server "127.0.0.1:$PA" --tasks "$QUEUED" --batch 1000 --threads 1 \
    --wait off || true
  serve b "$PB" --capacity 2000000
  sleep 1
  t0=$(python3 -c 'import time; print(time.time())')
  kill -9 "$(cat "$TMP/a.pid")"
  wait_file "$TMP/b.ports" 3000
  took=$(python3 -c "import time; print(f'{time.time() - $t0:.2f}')")
  grep -E "recovered" "$TMP/b.log"
  echo "takeover after kill -9 with $QUEUED queued: the standby served after $took s (ownership ttl 6 s)"
  ;;
*)
  echo "usage: bench/run_pg.sh BIN_DIR throughput|takeover [N]" >&2
  exit 2
  ;;
esac
