#!/usr/bin/env bash
# Crash safety: under load, kill -9 the server at random moments (KILLS times, default 22),
# restarting it each time on the same ports. Afterwards every acknowledged submission
# exists and ended SUCCEEDED, and no task's result was acknowledged to an agent twice.
# Only submissions that were never acknowledged may be missing.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/record.sh"
KILLS=${KILLS:-22}
SEED=${SEED:-$RANDOM}
echo "seed $SEED (replay with SEED=$SEED)"
RANDOM=$SEED

echo '{"lease_ttl_ms": 3000, "defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 500}}' >"$WORK/config.json"
start_server --config "$WORK/config.json"
for i in 1 2 3; do start_agent "w$i" crash 4 "$AGENT"; done

# Load: batches of 10 through the CLI; ids are recorded only once acknowledged.
: >"$WORK/acked"
(
  while [ ! -f "$WORK/stop" ]; do
    if ids=$("$DROVER" submit -q --type crash --payload p --count 10 2>/dev/null); then
      echo "$ids" >>"$WORK/acked"
    else
      sleep 0.05
    fi
  done
) &
PIDS+=("$!")
LOADER=$!

for k in $(seq 1 "$KILLS"); do
  sleep "0.$(( RANDOM % 9 + 2 ))"
  kill -9 "$SERVER_PID"
  wait "$SERVER_PID" 2>/dev/null || true
  start_server --config "$WORK/config.json"
done
touch "$WORK/stop"
wait "$LOADER" 2>/dev/null || true
check "the server was killed $KILLS times and restarted" [ "$(grep -c 'recovered' "$WORK/serve.log")" = "$((KILLS + 1))" ]

# Let the agents drain everything.
for _ in $(seq 1 600); do
  out=$("$DROVER" stats --json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin).get("outstanding","0"))' || echo x)
  [ "$out" = 0 ] && break
  sleep 0.2
done
check "nothing outstanding after the drain" [ "$out" = 0 ]
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true

acked=$(sort -un "$WORK/acked" | wc -l)
echo "acknowledged submissions: $acked"
check "load was acknowledged at all" [ "$acked" -gt 100 ]
sqlite3 "$WORK/data/drover.db" 'SELECT id, state FROM tasks' | tr '|' ' ' | sort -n >"$WORK/stored"
missing=$(sort -un "$WORK/acked" | join -v1 - <(cut -d' ' -f1 "$WORK/stored") | wc -l)
check "every acknowledged submission survived ($missing missing)" [ "$missing" = 0 ]
not_done=$(sort -un "$WORK/acked" | join - "$WORK/stored" | awk '$2 != 5' | wc -l)
check "every acknowledged submission ended SUCCEEDED ($not_done did not)" [ "$not_done" = 0 ]
# The agents log one line per attempt; an accepted completion has no "report refused".
cat "$WORK"/agent-w*.log | grep ' succeeded in ' | grep -v 'report refused' |
  awk '{print $5}' | sort | uniq -d >"$WORK/twice"
check "no task's result was accepted twice ($(wc -l <"$WORK/twice") were)" [ ! -s "$WORK/twice" ]
requeued=$(grep -o '([0-9]* requeued' "$WORK/serve.log" | tr -dc '0-9\n' | awk '{s+=$1} END {print s+0}')
echo "leased tasks returned to the queue by recoveries: $requeued"
finish
