#!/usr/bin/env bash
# DAG workflows end to end with the real binary: `drover workflow` and HTTP as clients,
# `drover agent` commands that read their parents' results from files. Fan-out and
# fan-in, a failing branch (cascade cancel, run-anyway cleanup), a refused cycle, cancel
# of a running workflow, and a restart in the middle of one.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/join.sh"
export MARKER_DIR="$WORK"
start_server
start_agent w1 work 4 "$AGENT"

cat >"$WORK/fan.json" <<'JSON'
{"name": "fan", "steps": [
  {"name": "merge", "task": {"type": "work"}, "depends_on": ["a", "b", "c"]},
  {"name": "plan",  "task": {"type": "work", "payload": "go"}},
  {"name": "a", "task": {"type": "work", "payload_json": {"n": 1}}, "depends_on": ["plan"]},
  {"name": "b", "task": {"type": "work"}, "depends_on": ["plan"]},
  {"name": "c", "task": {"type": "work", "priority": "PRIORITY_HIGH"}, "depends_on": ["plan"]}
]}
JSON
set +e
out=$("$DROVER" workflow submit --wait "$WORK/fan.json")
rc=$?
set -e
check "a fan-out/fan-in workflow succeeds (submit --wait exits 0)" [ "$rc" = 0 ]
check "it reports its progress" contains "$out" "5/5 done (5 succeeded, 0 failed, 0 canceled)"
check "the fan-in step got every parent's result, in order" contains "$out" "merge(a(plan()),b(plan()),c(plan()))"
wf=$(grep -o 'workflow [0-9]*' <<<"$out" | head -1 | cut -d' ' -f2)
check "workflow get shows it succeeded" contains "$("$DROVER" workflow get "$wf")" "SUCCEEDED"
check "workflow ls lists it" contains "$("$DROVER" workflow ls --state succeeded)" "fan"
a_id=$("$DROVER" workflow get --json "$wf" | python3 -c 'import json,sys; w=json.load(sys.stdin); print([t["task_id"] for t in w["tasks"] if t["step"]=="a"][0])')
check "payload_json reached the task as JSON text" contains "$("$DROVER" get "$a_id")" 'payload: {"n":1}'

cat >"$WORK/fail.json" <<'JSON'
{"name": "failing", "steps": [
  {"name": "bad", "task": {"type": "work", "payload": "poison"}},
  {"name": "after-bad", "task": {"type": "work"}, "depends_on": ["bad"]},
  {"name": "deeper", "task": {"type": "work"}, "depends_on": ["after-bad"]},
  {"name": "good", "task": {"type": "work"}},
  {"name": "cleanup", "task": {"type": "work"}, "depends_on_finished": ["bad", "good"]}
]}
JSON
set +e
out=$("$DROVER" workflow submit --wait "$WORK/fail.json")
rc=$?
set -e
check "a workflow with a dead step ends FAILED (exit 1)" [ "$rc" = 1 ]
check "the failed step's descendants are canceled, naming it" contains "$out" 'parent task'
check "the cascade reaches the grandchild" bash -c "grep -qE '^ +deeper .*canceled' <<<'$out'"
check "the run-anyway step ran with the dead parent's state" contains "$out" "cleanup(bad:dead,good())"
check "progress counts every end" contains "$out" "5/5 done (2 succeeded, 1 failed, 2 canceled)"

cat >"$WORK/cycle.json" <<'JSON'
{"steps": [
  {"name": "x", "task": {"type": "work"}, "depends_on": ["z"]},
  {"name": "y", "task": {"type": "work"}, "depends_on": ["x"]},
  {"name": "z", "task": {"type": "work"}, "depends_on": ["y"]}
]}
JSON
set +e
err=$("$DROVER" workflow submit "$WORK/cycle.json" 2>&1)
rc=$?
set -e
check "a cycle is refused, naming its steps" contains "$err" 'dependency cycle "x" -> "y" -> "z" -> "x"'
check "the refusal exits non-zero" [ "$rc" != 0 ]
echo '{"steps": [{"name": "a", "task": {"type": "work"}, "depends_on": ["nope"]}]}' >"$WORK/missing.json"
check "a missing reference is refused, naming the step" \
  contains "$("$DROVER" workflow submit "$WORK/missing.json" 2>&1 || true)" 'workflow.steps[0] ("a").depends_on[0]: no step named "nope"'

# Over HTTP: payloads are base64, as everywhere in the JSON API.
body='{"workflow": {"name": "http", "steps": [
  {"name": "one", "task": {"type": "work", "payload": "aGk="}},
  {"name": "two", "task": {"type": "work"}, "depends_on": ["one"]}]}}'
resp=$(curl -s -H 'Content-Type: application/json' -d "$body" "$HTTP/v1/workflows")
hid=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$resp")
waited=$(curl -s "$HTTP/v1/workflows/$hid:wait?timeout_ms=20000")
check "HTTP: a workflow submitted and waited on succeeds" contains "$waited" '"state":"WORKFLOW_STATE_SUCCEEDED"'
check "HTTP: listing by state" contains "$(curl -s "$HTTP/v1/workflows?state=succeeded")" "\"id\":\"$hid\""
check "HTTP: an unknown workflow is 404" [ "$(curl -s -o /dev/null -w '%{http_code}' "$HTTP/v1/workflows/999999")" = 404 ]

# Cancel a running workflow: the running command is killed, the rest canceled.
cat >"$WORK/long.json" <<'JSON'
{"name": "long", "steps": [
  {"name": "slow", "task": {"type": "work", "payload": "sleep"}},
  {"name": "next", "task": {"type": "work"}, "depends_on": ["slow"]}
]}
JSON
lid=$("$DROVER" workflow submit -q "$WORK/long.json")
for _ in $(seq 1 100); do
  "$DROVER" workflow get "$lid" | grep -qE '^ +slow .*leased' && break
  sleep 0.1
done
check "cancel answers with the canceled workflow" contains "$("$DROVER" workflow cancel --reason "changed my mind" "$lid")" "canceled"
for _ in $(seq 1 50); do [ -s "$WORK/killed" ] && break; sleep 0.1; done
check "the running step's command got SIGTERM" [ -s "$WORK/killed" ]
set +e
out=$("$DROVER" workflow wait --timeout 10s "$lid")
rc=$?
set -e
check "the workflow ended CANCELED with the reason" contains "$out" "reason: changed my mind"
check "wait exits 1 for a canceled workflow" [ "$rc" = 1 ]

# A restart in the middle: the waiting step and its parent's result survive.
cat >"$WORK/restart.json" <<'JSON'
{"name": "restart", "steps": [
  {"name": "first", "task": {"type": "work", "payload": "x"}},
  {"name": "second", "task": {"type": "later"}, "depends_on": ["first"]}
]}
JSON
rid=$("$DROVER" workflow submit -q "$WORK/restart.json")
for _ in $(seq 1 100); do
  "$DROVER" workflow get "$rid" | grep -q "1/2 done" && break
  sleep 0.1
done
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
start_server
got=$("$DROVER" workflow get "$rid")
check "after a restart the workflow is still running" contains "$got" "RUNNING"
check "get shows its remaining critical path" contains "$got" "critical path"
check "and which tasks can run now" contains "$got" "can run now:"
start_agent l1 later 1 "$AGENT"
out=$("$DROVER" workflow wait --timeout 20s "$rid" || true)
check "the waiting step ran after the restart with its parent's result" contains "$out" "second(first())"
check "and the workflow succeeded" contains "$out" "SUCCEEDED"
check "the server keeps serving" contains "$("$DROVER" stats)" "tasks:"

# Map-reduce from the CLI: items from a JSON-lines file, a parallelism limit, both error
# strategies.
COUNT="$(cd "$(dirname "$0")" && pwd)/agents/count.sh"
start_agent m1 mapper 4 "$COUNT"
start_agent r1 reducer 1 "$COUNT"
for i in $(seq 1 40); do echo "{\"doc\": $i, \"text\": \"w$i x y\"}"; done >"$WORK/items.jsonl"
set +e
out=$("$DROVER" mapreduce --mapper mapper --reducer reducer --items "$WORK/items.jsonl" \
  --parallelism 3 --reduce-payload sum --name words 2>"$WORK/mr.err")
rc=$?
set -e
check "map-reduce over 40 items succeeds (exit 0)" [ "$rc" = 0 ]
check "it prints the reducer's result (6 words per line)" contains "$out" "sum total=240 failed=none"
check "it showed progress" contains "$(cat "$WORK/mr.err")" "41/41 done"
mr=$(grep -o 'workflow [0-9]*' "$WORK/mr.err" | head -1 | cut -d' ' -f2)
check "the job is a workflow with map and reduce steps" contains "$("$DROVER" workflow get "$mr")" "map-40"
set +e
out=$("$DROVER" mapreduce --mapper mapper --reducer reducer --item "a b" --item "bad one" \
  --item "c d e" --on-error continue_on_partial --reduce-payload partial 2>"$WORK/mr2.err")
rc=$?
set -e
check "continue_on_partial: the reducer runs and is told which item failed" contains "$out" "partial total=5 failed=map-2"
check "continue_on_partial: the failed item is listed" contains "$(cat "$WORK/mr2.err")" "1 of 3 items did not succeed"
check "continue_on_partial: exit 0 when the reducer succeeded" [ "$rc" = 0 ]
set +e
"$DROVER" mapreduce --mapper mapper --reducer reducer --item "a" --item "bad" --item "c" \
  >"$WORK/mr3.out" 2>"$WORK/mr3.err"
rc=$?
set -e
check "fail_fast: the job fails (exit 1) and the reducer never runs" [ "$rc" = 1 ]
check "fail_fast: the output names the failure" contains "$(cat "$WORK/mr3.out" "$WORK/mr3.err")" "fail_fast: task"
check "bad map-reduce input is refused naming the flag" \
  contains "$("$DROVER" mapreduce --mapper mapper --reducer reducer 2>&1 || true)" "--items or --item"
curl -s "$HTTP/metrics" >"$WORK/metrics.txt"
check "metrics count workflows by state" grep -q '^drover_workflows{state="succeeded"} [1-9]' "$WORK/metrics.txt"
# (The fail_fast job's reducer is canceled by its failed parent or by fail_fast, whichever
# comes first: count both causes.)
check "metrics count cascade cancels" grep -qE '^drover_tasks_canceled_by_dependency_total\{cause="(parent_failed|fail_fast)"\} [1-9]' "$WORK/metrics.txt"
if command -v promtool >/dev/null; then
  check "promtool accepts /metrics" bash -c "promtool check metrics <'$WORK/metrics.txt'"
fi
finish
