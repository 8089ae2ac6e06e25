#!/usr/bin/env bash
# W3C trace context through the real binary (docs/tracing.md): a task takes the submitter's
# traceparent (HTTP header, gRPC metadata from the CLI's $TRACEPARENT, or the task field),
# each attempt's agent gets TRACEPARENT with the task's trace and its own span (stable, and
# another one for a retry), a task submitted from inside an agent's command joins the
# trace, a malformed or all-zero header is ignored, a bad field is refused naming it.
source "$(dirname "$0")/lib.sh"
start_server
# Attempt 1 of a "flaky" payload fails retryably; every attempt logs its TRACEPARENT.
cat >"$WORK/agent.sh" <<'EOF'
#!/bin/sh
p=$(cat)
echo "$DROVER_TASK_ID $DROVER_ATTEMPT $TRACEPARENT" >>"$TP_LOG"
case "$p" in
  flaky) [ "$DROVER_ATTEMPT" = 1 ] && exit 75 ;;
  parent) DROVER_SERVER="$SUBMIT_SERVER" "$SUBMIT_DROVER" --token-file "$SUBMIT_TOKEN" \
            submit -q --type t --payload child >"$CHILD_ID" ;;
esac
printf %s "$TRACEPARENT"
EOF
chmod +x "$WORK/agent.sh"
export TP_LOG="$WORK/tp.log" SUBMIT_SERVER="$GRPC" SUBMIT_DROVER="$DROVER"
export SUBMIT_TOKEN="$DROVER_TOKEN_FILE" CHILD_ID="$WORK/child.id"
start_agent a1 t 2 "$WORK/agent.sh"

T=4bf92f3577b34da6a3ce929d0e0e4736
GOOD="00-$T-00f067aa0ba902b7-01"
submit_http() {  # submit_http HEADER BODY: the new task's id
  curl -s -H "traceparent: $1" -H 'Content-Type: application/json' \
    -d "$2" "$HTTP/v1/tasks" | python3 -c 'import json,sys; print(json.load(sys.stdin)["task"]["id"])'
}
result() { "$DROVER" wait --timeout 20s "$1" >/dev/null; "$DROVER" get --json "$1" | python3 -c 'import json,sys,base64; print(base64.b64decode(json.load(sys.stdin).get("result","")).decode())'; }

id=$(submit_http "$GOOD" '{"task": {"type": "t", "payload": "aGk="}}')
tp=$(result "$id")
check "the agent gets the submitter's trace (HTTP header)" contains "$tp" "00-$T-"
check "...with its attempt's own span, not the submitter's" bash -c "[[ '$tp' =~ ^00-$T-[0-9a-f]{16}-01$ ]] && [[ '$tp' != '$GOOD' ]]"
check "the task keeps the traceparent" contains "$("$DROVER" get --json "$id")" "\"traceparent\": \"$GOOD\""

id=$(submit_http "$GOOD" '{"task": {"type": "t", "payload": "'"$(printf flaky | base64)"'"}}')
result "$id" >/dev/null
check "a retry runs in the same trace with another span" python3 - "$TP_LOG" "$id" "$T" <<'EOF'
import sys
rows = [l.split() for l in open(sys.argv[1]) if l.split()[0] == sys.argv[2]]
assert [r[1] for r in rows] == ["1", "2"], rows
assert all(r[2].split("-")[1] == sys.argv[3] for r in rows), rows
assert rows[0][2] != rows[1][2], rows
EOF

Z="00-00000000000000000000000000000000-00f067aa0ba902b7-01"
id=$(submit_http "$Z" '{"task": {"type": "t", "payload": "aGk="}}')
tp=$(result "$id")
check "an all-zero header is ignored: the task has a trace of its own" bash -c "[[ '$tp' =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-01$ ]] && [[ '$tp' != 00-00000000000000000000000000000000-* ]]"
id=$(submit_http "not-a-traceparent" '{"task": {"type": "t", "payload": "aGk="}}')
check "so is a malformed one" bash -c "[[ '$(result "$id")' =~ ^00-[0-9a-f]{32}-[0-9a-f]{16}-01$ ]]"
code=$(curl -s -o "$WORK/body" -w '%{http_code}' -H 'Content-Type: application/json' \
  -d '{"task": {"type": "t", "traceparent": "00-abc"}}' "$HTTP/v1/tasks")
check "a bad traceparent field is refused naming it" bash -c "[ $code = 400 ] && grep -q 'task.traceparent' '$WORK/body'"

T2=0af7651916cd43dd8448eb211c80319c
id=$(TRACEPARENT="00-$T2-b7ad6b7169203331-01" "$DROVER" submit -q --type t --payload hi)
check "the CLI sends \$TRACEPARENT as gRPC metadata: the task joins that trace" contains "$(result "$id")" "00-$T2-"

id=$(submit_http "$GOOD" '{"task": {"type": "t", "payload": "'"$(printf parent | base64)"'"}}')
parent_tp=$(result "$id")
child=$(cat "$CHILD_ID")
check "a task submitted from an agent's command joins the trace, under the attempt's span" \
  bash -c "[ '$("$DROVER" get --json "$child" | python3 -c 'import json,sys; print(json.load(sys.stdin)["spec"]["traceparent"])')' = '$parent_tp' ]"
check "...and its own agent runs in that trace" contains "$(result "$child")" "00-$T-"
finish
