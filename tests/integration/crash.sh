#!/usr/bin/env bash
# Crash safety: under load, kill -9 the server at random moments (KILLS times, default 22),
# restarting it each time on the same ports. The run is recorded (what the client was
# acknowledged, every lease the agents got and what became of their reports) and
# history_check.py checks it against the tasks the server reports at the end: every
# acknowledged submission exists and ended SUCCEEDED, no completion was accepted twice or
# under a stale token, no task was leased to two agents at once, attempts stayed within max
# attempts. A submission may be committed without being acknowledged (the reply was lost
# with the server): it may exist or not.
source "$(dirname "$0")/lib.sh"
HERE="$(cd "$(dirname "$0")" && pwd)"
AGENT="$HERE/agents/record.sh"
export DROVER
# record.sh writes its lease records here; the loader its acknowledgements.
export RECORD_DIR="$WORK/history"
mkdir -p "$RECORD_DIR"
KILLS=${KILLS:-22}
SEED=${SEED:-$RANDOM}
echo "seed $SEED (replay with SEED=$SEED)"
RANDOM=$SEED

echo '{"lease_ttl_ms": 3000, "defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 500}}' >"$WORK/config.json"
start_server --config "$WORK/config.json"
for i in 1 2 3; do start_agent "w$i" crash 4 "$AGENT"; done

# Load: batches of 10 through the CLI, each recorded once acknowledged (lib.sh).
start_loader crash

for k in $(seq 1 "$KILLS"); do
  sleep "0.$(( RANDOM % 9 + 2 ))"
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  start_server --config "$WORK/config.json"
done
# Stop the load, then let the agents drain everything.
stop_loader_and_drain
check "the server was killed $KILLS times and restarted" [ "$(grep -c 'recovered' "$WORK/serve.log")" = "$((KILLS + 1))" ]
check "nothing outstanding after the drain" [ "$OUTSTANDING" = 0 ]
acked=$({ grep -o '"task": *{ *"id": *"[0-9]*"' "$RECORD_DIR/client.jsonl" || true; } |
  tr -dc '0-9\n' | sort -u | wc -l)
echo "acknowledged submissions: $acked"
check "load was acknowledged at all" [ "$acked" -gt 100 ]
check "the agents recorded their leases" [ -s "$RECORD_DIR/leases-w1.jsonl" ]
# The final tasks come through the CLI (the same with any store) while the server still runs.
check "the history checks out" python3 "$HERE/history_check.py" "$RECORD_DIR" \
  --agent-log "$WORK/agent-w1.log" --agent-log "$WORK/agent-w2.log" \
  --agent-log "$WORK/agent-w3.log" --drover "$DROVER" --expect-state SUCCEEDED
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
requeued=$(grep -o '([0-9]* requeued' "$WORK/serve.log" | tr -dc '0-9\n' | awk '{s+=$1} END {print s+0}')
echo "leased tasks returned to the queue by recoveries: $requeued"
finish
