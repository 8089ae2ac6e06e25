#!/usr/bin/env bash
# End to end over loopback with the real binary: one server, several `drover agent`
# processes of two types, and the CLI and HTTP as clients. Every task completes with the
# right result; flaky tasks retry; poison tasks are dead-lettered, reprocessed and purged;
# a running task is canceled and its command killed.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/transform.sh"
export MARKER_DIR="$WORK"

cat >"$WORK/config.json" <<'JSON'
{"defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 200, "max_attempts": 3}}
JSON
start_server --config "$WORK/config.json"
start_agent a1 alpha 4 "$AGENT"
start_agent a2 alpha 4 "$AGENT"
start_agent b1 beta 3 "$AGENT"

# 60 tasks per type, each with its own payload, through the CLI.
declare -A want
for t in alpha beta; do
  for i in $(seq 1 60); do
    id=$("$DROVER" submit -q --type "$t" --payload "item-$t-$i" --priority "$( [ $((i % 5)) = 0 ] && echo high || echo normal)")
    want[$id]="$t:ITEM-$(echo "$t" | tr a-z A-Z)-$i"
  done
done
flaky=$("$DROVER" submit -q --type alpha --payload "flaky-1")
want[$flaky]="alpha:FLAKY-1"
poison=$("$DROVER" submit -q --type beta --payload "poison-1")
resume=$("$DROVER" submit -q --type alpha --payload "resume-1")
stdin_id=$(printf 'from-stdin' | "$DROVER" submit -q --type beta --payload -)
want[$stdin_id]="beta:FROM-STDIN"

bad=0
for id in "${!want[@]}"; do
  got=$("$DROVER" wait --json --timeout 30s "$id" | python3 -c 'import sys,json,base64; t=json.load(sys.stdin)["task"]; print(t["state"], base64.b64decode(t.get("result","")).decode())')
  if [ "$got" != "TASK_STATE_SUCCEEDED ${want[$id]}" ]; then
    echo "task $id: want '${want[$id]}', got '$got'"; bad=$((bad + 1))
  fi
done
check "all ${#want[@]} tasks succeeded with the right result" [ "$bad" = 0 ]

check "a checkpoint reaches the next attempt" contains "$("$DROVER" wait "$resume")" "result: resumed from step-7"
check "flaky task succeeded on attempt 2" contains "$("$DROVER" get "$flaky")" "attempts 2 (failures 1 of 3)"

"$DROVER" wait --timeout 20s "$poison" >/dev/null || true
check "poison task is dead-lettered at once (non-retryable)" contains "$("$DROVER" dlq ls)" "non-retryable failure: exit status 1"
"$DROVER" dlq reprocess "$poison" >/dev/null
"$DROVER" wait --timeout 20s "$poison" >/dev/null || true
check "reprocessed poison task ran again and is dead again" contains "$("$DROVER" get "$poison")" "attempt 2: agent"
check "purge empties the dead-letter queue" contains "$("$DROVER" dlq purge --all)" "purged 1 task(s)"
check "a purged task is gone" bash -c "! '$DROVER' get $poison 2>/dev/null"

# Cancel a running task: the agent kills the command's process group.
sleeper=$("$DROVER" submit -q --type beta --payload "sleep-forever")
for _ in $(seq 1 100); do
  "$DROVER" get "$sleeper" | grep -q LEASED && break
  sleep 0.1
done
"$DROVER" cancel "$sleeper" --reason "integration test" >/dev/null
for _ in $(seq 1 100); do [ -s "$WORK/killed" ] && break; sleep 0.1; done
check "canceled running task's command got SIGTERM" grep -qx "$sleeper" "$WORK/killed"
check "canceled task says why" contains "$("$DROVER" get "$sleeper")" "reason: integration test"

# The same API over HTTP/JSON.
resp=$(curl -s -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"alpha","payload":"'"$(printf 'via-http' | base64)"'","priority":"PRIORITY_HIGH"}}')
hid=$(python3 -c 'import sys,json; print(json.loads(sys.argv[1])["task"]["id"])' "$resp")
wait_resp=$(curl -s "$HTTP/v1/tasks/$hid:wait?timeout_ms=20000")
check "HTTP submit and wait" contains "$wait_resp" '"state":"TASK_STATE_SUCCEEDED"'
check "HTTP list filters by state" contains "$(curl -s "$HTTP/v1/tasks?state=succeeded&type=alpha&page_size=5")" '"next_page_token"'
check "idempotency key returns the original task" bash -c "
  a=\$('$DROVER' submit -q --type alpha --payload x --idempotency-key k1)
  b=\$('$DROVER' submit -q --type alpha --payload y --idempotency-key k1)
  [ \"\$a\" = \"\$b\" ]"

metrics=$(curl -s "$HTTP/metrics")
check "metrics count successes" contains "$metrics" "drover_tasks_succeeded_total"
if command -v promtool >/dev/null; then
  check "promtool accepts /metrics" bash -c "curl -s '$HTTP/metrics' | promtool check metrics"
fi

# `--` right after a repeatable option: everything after it is the command, its own flags
# (-c) included.
"$DROVER" agent --type gamma --type delta -- sh -c 'echo "gamma got $(cat)"' >>"$WORK/agent-g.log" 2>&1 &
PIDS+=("$!")
check "drover agent --type a --type b -- sh -c '...' runs sh -c" \
  contains "$(timeout 20 "$DROVER" submit --type delta --payload hi --wait)" "gamma got hi"
out=$("$DROVER" agent --type gamma -- 2>&1 || true)
check "an agent without a command is refused, naming it" contains "$out" "command: the agent command is missing"

# Deregistering an agent returns its leased tasks to the queue at once.
kill -TERM "$AGENT_PID_b1"
wait "$AGENT_PID_b1" 2>/dev/null || true
check "agent deregistered on SIGTERM" grep -q "stopped" "$WORK/agent-b1.log"

# JSON payloads (docs/payloads.md): sent and answered as JSON values over HTTP, marked so
# for the agent; `drover agent` marks a command's JSON stdout as a JSON result.
"$DROVER" agent --type echo -- cat >>"$WORK/agent-echo.log" 2>&1 &
PIDS+=("$!")
resp=$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' \
  -d '{"task": {"type": "echo", "payload": {"doc": 1, "text": "héllo", "n": [1, 2.5, null]}}}')
check "HTTP JSON payload is answered as the value" contains "$resp" '"payload":{"doc":1,"text":"héllo","n":[1,2.5,null]}'
jid=$(python3 -c 'import sys,json; print(json.loads(sys.argv[1])["task"]["id"])' "$resp")
wait_resp=$(curl -s "$HTTP/v1/tasks/$jid:wait?timeout_ms=20000")
check "the echoed JSON result comes back as a JSON value" contains "$wait_resp" '"result":{"doc":1,"text":"héllo","n":[1,2.5,null]},'
check "... marked result_json" contains "$wait_resp" '"result_json":true'
old=$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' \
  -d '{"task": {"type": "echo", "payload": "aGk="}}')
oid=$(python3 -c 'import sys,json; print(json.loads(sys.argv[1])["task"]["id"])' "$old")
check "an old base64 request keeps its meaning (bytes 'hi', result base64)" \
  contains "$(curl -s "$HTTP/v1/tasks/$oid:wait?timeout_ms=20000")" '"result":"aGk="'
check "payload_bytes sends binary data" \
  contains "$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' -d '{"task": {"type": "nobody", "payload_bytes": "AAEC"}}')" '"payload":"AAEC"'
check "a JSON string with payload_json" \
  contains "$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' -d '{"task": {"type": "nobody", "payload": "Summarize this", "payload_json": true}}')" '"payload":"Summarize this","priority"'
out=$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' -d '{"task": {"type": "nobody", "payload": "Summarize this"}}')
check "a non-base64 string without the flag is refused with the way out" contains "$out" 'task.payload: a string here is base64 bytes'
out=$(curl -s -X POST "$HTTP/v1/tasks" -H 'Content-Type: application/json' -d '{"task": {"type": "nobody", "payload": "e30K", "payload_bytes": "AA=="}}')
check "payload and payload_bytes together are refused" contains "$out" 'task.payload_bytes and task.payload: give one, not both'
out=$("$DROVER" submit --type nobody --payload '{"a": ' --payload-format json 2>&1 || true)
check "CLI --payload-format json refuses text that does not parse" contains "$out" '--payload: not valid JSON (parse error at line 1'
cid=$("$DROVER" submit -q --type echo --payload '{"a": [1, 2]}')
check "CLI sends a payload that parses as JSON as JSON (get --json shows the value)" \
  bash -c "'$DROVER' get --json $cid | python3 -c 'import sys,json; t=json.load(sys.stdin); assert t[\"spec\"][\"payload\"] == {\"a\": [1, 2]} and t[\"spec\"][\"payload_json\"], t'"
check "CLI submit --wait prints the JSON result" \
  contains "$(timeout 20 "$DROVER" submit --type echo --payload '[true, "x"]' --wait)" '[true, "x"]'
check "CLI text payload stays bytes" \
  bash -c "'$DROVER' get --json \$('$DROVER' submit -q --type nobody --payload 'plain text') | python3 -c 'import sys,json; t=json.load(sys.stdin); assert \"payload_json\" not in t[\"spec\"], t'"

finish
