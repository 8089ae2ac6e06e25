#!/usr/bin/env bash
# Circuit breakers with the real binary: an agent whose command always fails opens its
# breaker after breaker_failures attempts in a row, gets no more work while open, and
# the task whose failure opened it runs elsewhere uncounted; after breaker_open_ms one
# probe fails and opens it again. Transitions are logged events and metrics.
source "$(dirname "$0")/lib.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/transform.sh"
echo '{"breaker_failures": 3, "breaker_open_ms": 1500,
       "defaults": {"max_attempts": 5, "backoff_base_ms": 20000, "backoff_cap_ms": 20000}}' >"$WORK/config.json"
start_server --config "$WORK/config.json"
start_agent bad svc 1 sh -c 'cat >/dev/null; echo "broken install" >&2; exit 75'
ids=$("$DROVER" submit -q --type svc --payload job --count 3)
third=$(tail -1 <<<"$ids")
for _ in $(seq 1 100); do
  grep -q "closed -> open" "$WORK/serve.log" && break
  sleep 0.1
done
check "three failures in a row open the agent's breaker (a logged event)" \
  grep -q "agent.breaker agent [0-9]*: circuit breaker closed -> open: 3 consecutive failed attempts" "$WORK/serve.log"
check "the event log has it, with from and to" bash -c "'$DROVER' events --type agent.breaker --jsonl | grep -q '\"from\":\"closed\".*\"to\":\"open\"\\|\"to\":\"open\".*\"from\":\"closed\"'"
curl -s "$HTTP/metrics" >"$WORK/m1.txt"
check "metrics show one open breaker" grep -q '^drover_agent_breakers{state="open"} 1' "$WORK/m1.txt"
check "the first two failures count against their tasks" \
  contains "$("$DROVER" get "$(head -1 <<<"$ids")")" "failures 1 of 5"
got=$("$DROVER" get "$third")
check "the failure that opened the breaker does not count" contains "$got" "failures 0 of 5"
check "and says why" contains "$got" "agent_fault"
check "that task is queued again at once (no backoff)" contains "$got" "READY"
start_agent good svc 1 "$AGENT"
check "another agent runs it" contains "$("$DROVER" wait --timeout 10s "$third")" "svc:JOB"
for _ in $(seq 1 60); do
  grep -q "half_open -> open: the probe task failed" "$WORK/serve.log" && break
  "$DROVER" submit -q --type svc --payload more >/dev/null
  sleep 0.2
done
check "after breaker_open_ms one probe goes to the bad agent and reopens the breaker" \
  grep -q "half_open -> open: the probe task failed" "$WORK/serve.log"
curl -s "$HTTP/metrics" >"$WORK/m2.txt"
check "transitions are counted" grep -q '^drover_breaker_transitions_total{to="half_open"} [1-9]' "$WORK/m2.txt"
echo '{"breaker_failures": 5000}' >"$WORK/bad.json"
check "a bad breaker setting is refused, naming it" \
  bash -c "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'breaker_failures'"
finish
