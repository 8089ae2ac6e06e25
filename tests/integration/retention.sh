#!/usr/bin/env bash
# Finished tasks (and workflows, with their last task) leave memory after
# terminal_retention_ms but stay readable: get and wait answer from the store, listings
# show only what is in memory, and a restart does not load them back.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/transform.sh"
echo '{"terminal_retention_ms": 300}' >"$WORK/config.json"
start_server --config "$WORK/config.json"
start_agent a1 alpha 2 "$AGENT"
ids=$("$DROVER" submit -q --type alpha --payload old --count 5)
first=$(head -1 <<<"$ids")
"$DROVER" wait --timeout 20s "$first" >/dev/null
sleep 1.2
check "an evicted task is still readable (from the store)" contains "$("$DROVER" get "$first")" "result: alpha:OLD"
check "waiting on an evicted task answers at once" contains "$("$DROVER" wait --timeout 2s "$first")" "SUCCEEDED"
check "listings show only tasks in memory" bash -c "! '$DROVER' ls --state succeeded | grep -q ' $first '"
check "evictions are counted" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_tasks_evicted_total [1-9]'"
# A finished workflow leaves memory with its last task; get, wait and cancel still answer.
echo '{"name": "short", "steps": [{"name": "s1", "task": {"type": "alpha", "payload": "w"}},
  {"name": "s2", "task": {"type": "alpha", "payload": "v"}, "depends_on": ["s1"]}]}' >"$WORK/wf.json"
wf=$("$DROVER" workflow submit --wait "$WORK/wf.json" | grep -o 'workflow [0-9]*' | head -1 | cut -d' ' -f2)
sleep 1.2
check "a workflow whose tasks left memory is still readable (from the store)" \
  contains "$("$DROVER" workflow get "$wf")" "SUCCEEDED"
check "waiting on it answers at once" contains "$(timeout 5 "$DROVER" workflow wait "$wf")" "SUCCEEDED"
check "canceling it says it has ended" contains "$("$DROVER" workflow cancel "$wf" 2>&1 || true)" "has already ended succeeded"
check "workflow listings show only what is in memory" bash -c "! '$DROVER' workflow ls | grep -q 'short'"
check "workflow evictions are counted" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_workflows_evicted_total 1'"
check "an unknown workflow is still not found" contains "$("$DROVER" workflow get 999 2>&1 || true)" "workflow 999 not found"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
start_server --config "$WORK/config.json"
check "a restart leaves finished tasks in the store (5, and the workflow's 2)" contains "$(tail -2 "$WORK/serve.log")" "7 finished ones left in the store"
check "and the finished workflow" contains "$("$DROVER" workflow get "$wf")" "SUCCEEDED"
check "and they are still readable" contains "$("$DROVER" get "$first")" "SUCCEEDED"
new_id=$("$DROVER" submit -q --type alpha --payload new)
last_old=$(tail -1 <<<"$ids")
check "ids of evicted tasks are not reused after a restart" [ "$new_id" -gt "$last_old" ]
check "the old task is intact" contains "$("$DROVER" get "$last_old")" "payload: old"

# store_retention_ms: finished rows leave the store too, after their retention; DEAD rows
# and unfinished tasks stay.
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
echo '{"terminal_retention_ms": 300, "store_retention_ms": 1500}' >"$WORK/config.json"
start_server --config "$WORK/config.json"
dead=$("$DROVER" submit -q --type alpha --payload poison)
queued=$("$DROVER" submit -q --type nobody --payload waits)
"$DROVER" wait --timeout 20s "$dead" >/dev/null || true  # exits non-zero: DEAD
check "a failing task is dead-lettered" contains "$("$DROVER" get "$dead")" "DEAD"
sleep 3
check "a finished task past store_retention_ms is gone from the store" \
  contains "$("$DROVER" get "$first" 2>&1)" "not found"
check "pruned rows are counted" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_store_rows_pruned_total [1-9]'"
check "a dead-lettered task is kept" contains "$("$DROVER" get "$dead")" "DEAD"
check "a queued task is kept" contains "$("$DROVER" get "$queued")" "READY"
recent=$("$DROVER" submit -q --type alpha --payload recent)
"$DROVER" wait --timeout 20s "$recent" >/dev/null
sleep 0.6  # out of memory, so get reads the store
check "a task finished within store_retention_ms is kept" contains "$("$DROVER" get "$recent")" "SUCCEEDED"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
echo '{"terminal_retention_ms": 5000, "store_retention_ms": 1000}' >"$WORK/bad.json"
check "store_retention_ms shorter than terminal_retention_ms is refused, naming both" \
  bash -c "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'store_retention_ms.*terminal_retention_ms'"
finish
