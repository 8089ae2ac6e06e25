#!/usr/bin/env bash
# The demo: drover serve on the embedded SQLite store with two agent pools it runs and
# sizes itself (agents are the scripts in examples/agents, which take a moment and
# sometimes fail), a mixed workload across all five priorities, the flow live in the
# terminal (tasks and agents), and a summary.
#   usage: scripts/demo.sh [path/to/drover]     (make demo builds it first)
#   KEEP=1 leaves the server and agents running afterwards.
set -euo pipefail
DROVER=${1:-build/release/drover}
DROVER=$(cd "$(dirname "$DROVER")" && pwd)/$(basename "$DROVER")
ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$(mktemp -d /tmp/drover-demo.XXXXXX)
PIDS=()
stop_all() {
  if [ "${KEEP:-0}" = 1 ]; then return; fi
  for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}
GRPC_PORT=${GRPC_PORT:-7070}
HTTP_PORT=${HTTP_PORT:-7071}
# Fall back to free ports when the usual ones are taken.
if ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$GRPC_PORT))" 2>/dev/null; then GRPC_PORT=$(free_port); fi
if ! python3 -c "import socket,sys; s=socket.socket(); s.bind(('127.0.0.1',$HTTP_PORT))" 2>/dev/null; then HTTP_PORT=$(free_port); fi
export DROVER_SERVER=127.0.0.1:$GRPC_PORT

bold() { printf '\033[1m%s\033[0m\n' "$*"; }

# Two pools: one warm agent each, grown by the autoscaler (the Kubernetes HPA's rules, on
# a 2 s period here instead of 15 s so the demo shows it) while the backlog lasts, drained
# back to one when it is gone.
cat >"$WORK/drover.json" <<JSON
{
  "capacity": 10000,
  "lease_ttl_ms": 10000,
  "defaults": {"backoff_base_ms": 300, "backoff_cap_ms": 3000, "max_attempts": 4},
  "task_types": {"review": {"max_attempts": 5, "execution_timeout_ms": 30000}},
  "pools": [
    {"name": "summarizers", "types": ["summarize"], "command": ["$ROOT/examples/agents/summarize.sh"],
     "concurrency": 4, "min": 1, "max": 4, "target": 4, "sync_period_ms": 2000,
     "scale_down_stabilization_ms": 6000, "price_per_agent_hour": 0.5},
    {"name": "reviewers", "types": ["review"], "command": ["$ROOT/examples/agents/review.sh"],
     "concurrency": 3, "min": 1, "max": 3, "target": 3, "sync_period_ms": 2000,
     "scale_down_stabilization_ms": 6000, "price_per_agent_hour": 1.0,
     "health_command": ["sh", "-c", "kill -0 \$DROVER_AGENT_PID"], "health_interval_ms": 2000}
  ]
}
JSON

bold "1. drover serve (SQLite store in $WORK/data)"
"$DROVER" serve --config "$WORK/drover.json" --data-dir "$WORK/data" \
  --grpc-listen "127.0.0.1:$GRPC_PORT" --http-listen "127.0.0.1:$HTTP_PORT" \
  --port-file "$WORK/ports" 2>"$WORK/serve.log" &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -f "$WORK/ports" ] && break; sleep 0.05; done
sed 's/^/   /' "$WORK/serve.log"
# Auth is on: the first start wrote an admin token there; the CLI and curl below use it.
export DROVER_TOKEN_FILE="$WORK/data/admin.token"
echo "   (auth on: every call carries the admin token from $DROVER_TOKEN_FILE; drover token create makes others)"
echo "   the dashboard, live while the demo runs: http://127.0.0.1:$HTTP_PORT/"
echo "   (sign in with this demo's admin token: $(cat "$DROVER_TOKEN_FILE"))"

bold "2. agent pools: summarizers (1 to 4 agents x 4 slots), reviewers (1 to 3 x 3 slots)"
for _ in $(seq 1 100); do
  "$DROVER" pools | grep -q "starting 0  idle 1" && [ "$("$DROVER" pools | grep -c "starting 0  idle 1")" = 2 ] && break
  sleep 0.1
done
"$DROVER" pools | grep "^pool" | sed 's/^/   /'
echo "   (drover starts each agent as: drover agent --type summarize --concurrency 4 -- examples/agents/summarize.sh)"

bold "3. a mixed workload: 150 tasks across all five priorities"
for prio in background low normal high critical; do
  case $prio in
    background) count=40 ;; low) count=40 ;; normal) count=40 ;; high) count=20 ;; critical) count=10 ;;
  esac
  for i in $(seq 1 "$count"); do
    if [ $((i % 3)) = 0 ]; then type=review; else type=summarize; fi
    # JSON payloads travel as JSON values (docs/payloads.md).
    echo "{\"type\":\"$type\",\"priority\":\"PRIORITY_${prio^^}\",\"payload\":{\"doc\":\"$prio-$i\",\"text\":\"about agents and queues\"}}"
  done
done | python3 -c '
import sys, json
tasks = [json.loads(l) for l in sys.stdin]
print(json.dumps({"tasks": tasks}))' >"$WORK/batch.json"
resp=$(curl -s -XPOST -H "Content-Type: application/json" -H "Authorization: Bearer $(cat "$DROVER_TOKEN_FILE")" \
  "http://127.0.0.1:$HTTP_PORT/v1/tasks:batch" --data-binary @"$WORK/batch.json")
case "$resp" in *'"results"'*) ;; *) echo "   batch refused: $resp"; exit 1 ;; esac
echo "   submitted 150 tasks in one batch over HTTP/JSON (curl -XPOST .../v1/tasks:batch)"
urgent=$("$DROVER" submit -q --type summarize --priority critical --payload "incident report: production is down")
echo "   and one critical task from the CLI: task $urgent (watch it overtake the backlog)"

bold "4. the flow (drover stats and the pools' agents, every second)"
agents() {
  "$DROVER" pools --json | python3 -c '
import json, sys
out = []
for p in json.load(sys.stdin)["pools"]:
    n = p.get("starting", 0) + p.get("idle", 0) + p.get("busy", 0)
    d = p.get("draining", 0)
    out.append("%s %d%s" % (p["name"], n, " (+%d draining)" % d if d else ""))
print("  agents: " + ", ".join(out))'
}
start=$(date +%s)
while :; do
  line=$("$DROVER" stats --line)
  printf '   %3ss  %s%s\n' "$(( $(date +%s) - start ))" "$line" "$(agents)"
  case "$line" in *"outstanding 0") break ;; esac
  [ $(( $(date +%s) - start )) -gt 180 ] && { echo "   (stopping the watch after 180 s)"; break; }
  sleep 1
done

bold "5. summary"
"$DROVER" stats | sed 's/^/   /'
echo
echo "   the critical task submitted last:"
"$DROVER" get "$urgent" | sed 's/^/     /' | head -6
echo
echo "   dead-letter queue (permanent failures, kept with their last error):"
"$DROVER" dlq ls --limit 5 | sed 's/^/     /'
echo
echo "   the pools: agents started, time to acquire an agent, what they cost:"
"$DROVER" pools | grep -v "^  [a-z]*/[0-9]" | sed 's/^/     /'
echo
echo "   the autoscaler's last decisions for summarizers:"
"$DROVER" pools decisions summarizers --limit 6 | sed 's/^/     /'
echo
bold "6. a map-reduce job: summarize six documents, then one review of the summaries"
echo "   drover mapreduce --mapper summarize --reducer review --item ... --parallelism 3 --on-error continue_on_partial"
mr_items=()
for i in 1 2 3 4 5 6; do mr_items+=(--item "chapter $i of the agents handbook"); done
"$DROVER" mapreduce --mapper summarize --reducer review "${mr_items[@]}" --parallelism 3 \
  --on-error continue_on_partial --reduce-payload "the six chapter summaries" --name handbook \
  2>&1 | sed 's/^/   /' || true
echo
bold "7. sizing ahead of demand: three days of real traffic (NASA, July 1995), simulated"
echo "   agents that take 20 s per task and a minute to start; the HPA on utilisation against"
echo "   the predictive autoscaler (forecasts, confidence, pre-warming) and the oracle that knows"
echo "   the future — judged on days 2 and 3 (docs/autoscaling.md#predictive)"
head -4321 "$ROOT/traces/nasa_http_jul95.csv" >"$WORK/nasa3.csv"
"$DROVER" simulate --trace "$WORK/nasa3.csv" --service-time lognormal:20s --startup 60s \
  --judge-after 1d --models seasonal_naive --models holt_winters --models gbt \
  --policy hpa-util --policy predictive --policy oracle --out "$WORK/sim" 2>&1 |
  grep -E '^(policy|hpa-util|predictive|oracle|agent-hours) ' | sed 's/^/   /' || true
echo "   charts: $WORK/sim/predictive.svg (the forecast band over the arrivals), hpa-util.svg"
echo

bold "where to look next"
cat <<EOF2
   http://127.0.0.1:$HTTP_PORT/                # the dashboard: tasks, the DAG, pools, dead letters, live
     (KEEP=1 keeps it up after the demo; sign in with the token in $DROVER_TOKEN_FILE)
   drover ls --state dead                     # or: --state succeeded --type review
   drover get <id>                            # a task, its result and every attempt
   drover dlq reprocess --all                 # queue the dead letters again
   drover workflow ls; drover workflow get 1  # the map-reduce job as a workflow, step by step
   drover pools; drover pools decisions summarizers   # agents by state, every scaling decision
   drover pools stop summarizers/1            # drain one agent (the pool replaces it)
   drover forecast backtest --trace traces/nasa_http_jul95.csv   # the forecasters, judged
   drover token create ci --role submitter@default --ttl 30d   # a token for someone else
   drover audit --limit 20                    # who changed what, and every refused call
   drover events --type task.dead,task.retry_wait,pool   # what happened: failures, scaling
   drover events --follow                     # ...as it happens (Ctrl-C stops)
   curl -H "Authorization: Bearer \$(cat $DROVER_TOKEN_FILE)" http://127.0.0.1:$HTTP_PORT/metrics
   curl -H "Authorization: Bearer \$(cat $DROVER_TOKEN_FILE)" http://127.0.0.1:$HTTP_PORT/v1/stats
   logs: $WORK/serve.log, agents: $WORK/data/pools/<pool>/<n>.log
   (set DROVER_SERVER=$DROVER_SERVER DROVER_TOKEN_FILE=$DROVER_TOKEN_FILE for the CLI;
    run KEEP=1 make demo to keep it all running)
EOF2
