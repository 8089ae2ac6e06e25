#!/usr/bin/env bash
# The event log (docs/events.md) through the real binary: `drover events --follow` sees
# task changes, agents and pools live; filters and the HTTP API agree; bad filters are
# refused naming the field; a tenant's viewer sees only its tenant; the log and a follower
# survive a restart (seqs go on, none repeats); old events leave after their retention.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/transform.sh"
cat >"$WORK/config.json" <<EOF
{"events": {"tasks": "all", "retention_ms": 15000},
 "pools": [{"name": "p", "types": ["pooled"], "command": ["sh", "-c", "cat"], "min": 1, "max": 2,
            "sync_period_ms": 500}]}
EOF
start_server --config "$WORK/config.json"
"$DROVER" events --follow --jsonl >"$WORK/follow.jsonl" 2>"$WORK/follow.err" &
FOLLOW=$!
PIDS+=("$FOLLOW")
sleep 0.5
start_agent a1 alpha 2 "$AGENT"
ok=$("$DROVER" submit -q --type alpha --payload fine)
dead=$("$DROVER" submit -q --type alpha --payload poison)
"$DROVER" wait --timeout 20s "$ok" >/dev/null
"$DROVER" wait --timeout 20s "$dead" >/dev/null || true
pooled=$("$DROVER" submit -q --type pooled --payload hi)
"$DROVER" wait --timeout 30s "$pooled" >/dev/null
sleep 1

types_of() {  # types_of TASK: the task's event types in the follower's output, in order
  python3 -c "
import json,sys
for l in open('$WORK/follow.jsonl'):
    e=json.loads(l)
    if e.get('task_id')=='$1': print(e['type'])" | tr '\n' ' '
}
check "the follower saw the task's whole life" contains "$(types_of "$ok")" "task.ready task.leased task.succeeded"
check "and the dead letter, with its error" bash -c "grep '\"task_id\":\"$dead\"' '$WORK/follow.jsonl' | grep task.dead | grep -q 'cannot handle poison'"
check "and the agent registering" bash -c "grep agent.registered '$WORK/follow.jsonl' | grep -q 'serves alpha'"
check "the pool's agent starting is logged" bash -c "'$DROVER' events --jsonl --type pool | grep -q '\"type\":\"pool.agent_started\".*\"pool\":\"p\"'"
check "a pool's agent names its pool" bash -c "'$DROVER' events --jsonl --type agent.registered | grep -q '\"pool\":\"p\"'"
check "--type filters by type" bash -c "'$DROVER' events --type task.dead | tail -n +2 | awk '{print \$3}' | sort -u | grep -qx task.dead"
check "--type takes a subject" bash -c "! '$DROVER' events --type agent | tail -n +2 | awk '{print \$3}' | grep -qv '^agent\\.'"
check "--task shows one task's story" bash -c "[ \"\$('$DROVER' events --task $ok | tail -n +2 | wc -l)\" = 3 ]"
check "--pool shows the pool's events" contains "$("$DROVER" events --pool p)" "pool.agent_started"
check "the HTTP API lists the same" bash -c "curl -s '$HTTP/v1/events?task_id=$ok' | python3 -c 'import json,sys; d=json.load(sys.stdin); assert [e[\"type\"] for e in d[\"events\"]]==[\"task.ready\",\"task.leased\",\"task.succeeded\"], d'"
code() { curl -s -o "$WORK/body" -w '%{http_code}' "$HTTP/v1/events?$1"; }
export -f code
export WORK HTTP
check "a bad type is refused naming the field" bash -c "[ \"\$(code 'type=Task.DEAD')\" = 400 ] && grep -q 'type:' '$WORK/body'"
check "so is a page_size past the limit" bash -c "[ \"\$(code 'page_size=5000')\" = 400 ] && grep -q 'page_size: must be 0 (default 100) to 1000' '$WORK/body'"
check "and a wait past 30 s" bash -c "[ \"\$(code 'wait_ms=60000')\" = 400 ] && grep -q 'wait_ms' '$WORK/body'"
check "and a page token that is not one" bash -c "[ \"\$(code 'page_token=abc')\" = 400 ] && grep -q 'page_token' '$WORK/body'"
check "and one past the end of the log" bash -c "[ \"\$(code 'page_token=9000000000000000000')\" = 400 ] && grep -q 'past the end' '$WORK/body'"
last=$(curl -s "$HTTP/v1/events?since_unix_ms=$(($(date +%s) * 1000 + 60000))" | python3 -c 'import json,sys; print(json.load(sys.stdin)["next_page_token"])')
start=$(date +%s%N)
out=$(curl -s "$HTTP/v1/events?page_token=$last&wait_ms=1200&type=pool.scaled")
ms=$((($(date +%s%N) - start) / 1000000))
check "a long poll with nothing new waits its wait_ms and answers empty ($ms ms)" bash -c "[ $ms -ge 1100 ] && ! grep -q '\"events\"' <<<'$out'"

# Tenants: a viewer of team-a sees team-a's events only, and may not ask for another's.
"$DROVER" submit -q --type alpha --payload a --tenant team-a >/dev/null
"$DROVER" submit -q --type alpha --payload d >/dev/null
"$DROVER" token create viewer-a --role viewer@team-a | grep -o 'drv_[A-Za-z0-9_]*' | head -1 >"$WORK/viewer.token"
sleep 0.5
check "a tenant's viewer sees only that tenant's events" bash -c "DROVER_TOKEN_FILE='$WORK/viewer.token' '$DROVER' events --jsonl | python3 -c 'import json,sys; t={json.loads(l).get(\"tenant\",\"\") for l in sys.stdin}; assert t=={\"team-a\"}, t'"
check "and may not read another tenant's" contains "$(DROVER_TOKEN_FILE="$WORK/viewer.token" "$DROVER" events --tenant default 2>&1 || true)" "viewer-a may not read in tenant \"default\""

# A restart: the log and the follower go on; seqs continue without repeating.
before=$(wc -l <"$WORK/follow.jsonl")
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
start_server --config "$WORK/config.json"
after_restart=$("$DROVER" submit -q --type alpha --payload after)
"$DROVER" wait --timeout 20s "$after_restart" >/dev/null
sleep 1.5
check "the follower goes on after a restart" bash -c "grep -q '\"task_id\":\"$after_restart\"' '$WORK/follow.jsonl'"
check "seqs increase and none repeats across it" python3 -c "
import json
s=[int(json.loads(l)['seq']) for l in open('$WORK/follow.jsonl')]
assert s==sorted(set(s)) and len(s)>$before, s"
check "events from before the restart are still there" contains "$("$DROVER" events --task "$ok")" "task.succeeded"

# Retention (15 s here): old events leave the store.
sleep 13
check "events past their retention are gone" bash -c "[ -z \"\$('$DROVER' events --task $ok | tail -n +2)\" ]"
fresh=$("$DROVER" submit -q --type alpha --payload fresh)
"$DROVER" wait --timeout 20s "$fresh" >/dev/null
check "newer ones stay" contains "$("$DROVER" events --task "$fresh")" "task.succeeded"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
echo '{"events": {"tasks": "some"}}' >"$WORK/bad.json"
check "a bad events.tasks stops start-up naming the key" contains "$("$DROVER" serve --data-dir "$WORK/data2" --config "$WORK/bad.json" 2>&1 || true)" "events.tasks: 'some' is not notable, all or off"
echo '{"events": {"retention_ms": 5}}' >"$WORK/bad.json"
check "so does a bad retention" contains "$("$DROVER" serve --data-dir "$WORK/data2" --config "$WORK/bad.json" 2>&1 || true)" "events.retention_ms: must be 1000"
finish
