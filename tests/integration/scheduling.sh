#!/usr/bin/env bash
# Scheduling with the real binary and `drover agent` processes: a flooding tenant and a
# small one share dispatch fairly; a semaphore caps how many run at once and a token bucket
# paces starts; actual cost is recorded and survives a restart; a task waits for an agent
# within its cost budget; a critical task preempts background work; bad input is refused.
source "$(dirname "$0")/lib.sh"
cat >"$WORK/config.json" <<'EOF'
{"resources": {"gpu": {"capacity": 2},
               "llm_tokens": {"kind": "token_bucket", "capacity": 5, "refill_period_ms": 2000}},
 "tenants": {"gold": {"weight": 3}},
 "preempt_after_ms": 1000,
 "task_types": {"cheap": {"placement": "cost"}}}
EOF
start_server --config "$WORK/config.json"

registered() {  # registered NAME: waits (up to 10 s) until that agent's stream is open
  for _ in $(seq 1 100); do
    "$DROVER" agents | grep -qE "^[0-9]+ +$1 .* open " && return 0
    sleep 0.1
  done
  return 1
}
agent() {  # agent NAME TYPE CONCURRENCY COST_FACTOR CMD...
  local name=$1 type=$2 conc=$3 cost=$4
  shift 4
  "$DROVER" agent --name "$name" --type "$type" --concurrency "$conc" --cost-factor "$cost" \
    --work-dir "$WORK/$name" -- "$@" >>"$WORK/agent-$name.log" 2>&1 &
  PIDS+=("$!")
}
# Each task appends "<tenant> <start ns> <end ns>" to a log after a short run.
cat >"$WORK/run.sh" <<'EOF'
#!/bin/sh
start=$(date +%s%N)
sleep "${RUN_SECONDS:-0.02}"
echo "$DROVER_TENANT $start $(date +%s%N)" >>"$LOG"
EOF
chmod +x "$WORK/run.sh"

# --- fairness: 3,000 tasks of "flood", then 20 of "small", one agent with 2 slots -------
"$DROVER" submit -q --type fair --tenant flood --count 3000 --payload x >/dev/null
LOG="$WORK/fair.log" agent fair fair 2 1 "$WORK/run.sh"
for _ in $(seq 1 100); do [ "$(cat "$WORK/fair.log" 2>/dev/null | wc -l)" -ge 100 ] && break; sleep 0.1; done
"$DROVER" submit -q --type fair --tenant small --count 20 --payload y >/dev/null
for _ in $(seq 1 300); do [ "$(grep -c '^small' "$WORK/fair.log" || true)" -ge 20 ] && break; sleep 0.1; done
# Flood tasks that started between the first and the last small one (in start order).
between=$(sort -k2,2n "$WORK/fair.log" | awk '$1=="small"{n++; if(n==1)on=1; if(n==20){print c; exit}} on&&$1=="flood"{c++}')
echo "     flood tasks started while small's 20 ran: ${between:-none}"
check "a small tenant's 20 tasks all start within 2 x 20 + 2 (slots) dispatches of a 3,000-task flood" \
  test -n "$between" -a "${between:-999}" -le 42
kill -9 "${PIDS[-1]}" && wait "${PIDS[-1]}" 2>/dev/null || true

# --- a semaphore: at most 2 of 8 run at once, though the agent has 8 slots --------------
RUN_SECONDS=0.4 LOG="$WORK/gpu.log" agent gpu gpu 8 1 "$WORK/run.sh"
registered gpu
"$DROVER" submit -q --type gpu --resource gpu=1 --count 8 --payload z >/dev/null
for _ in $(seq 1 50); do
  usage=$("$DROVER" usage)
  grep -qE "gpu +semaphore +2 of 2 +in use +6 waiting" <<<"$usage" && break
  sleep 0.05
done
check "drover usage shows the semaphore full" contains "$usage" "2 of 2"
check "and the tasks waiting for it" grep -qE "gpu +semaphore +2 of 2 +in use +6 waiting" <<<"$usage"
stats=$("$DROVER" stats)
check "drover stats tells held-back ready tasks apart" grep -qE "ready [0-9]+ \([0-9]+ held back for a resource or a budget" <<<"$stats"
for _ in $(seq 1 100); do [ "$(cat "$WORK/gpu.log" 2>/dev/null | wc -l)" -ge 8 ] && break; sleep 0.1; done
# The most runs overlapping at any start instant.
peak=$(awk '{print $2, 1; print $3, -1}' "$WORK/gpu.log" | sort -k1,1n -k2,2n | awk '{c+=$2; if(c>m)m=c} END{print m}')
check "never more than 2 gpu tasks at once (peak $peak)" test "$peak" -le 2 -a "$peak" -ge 1

# --- a token bucket: 5 tokens per 2 s; 10 tasks needing 1 each take at least ~2 s -------
LOG="$WORK/tok.log" agent tok tok 10 1 "$WORK/run.sh"
"$DROVER" submit -q --type tok --resource llm_tokens=1 --count 10 --payload t >/dev/null
for _ in $(seq 1 100); do [ "$(cat "$WORK/tok.log" 2>/dev/null | wc -l)" -ge 10 ] && break; sleep 0.1; done
span_ms=$(awk '{print $2}' "$WORK/tok.log" | sort -n | awk 'NR==1{a=$1} {b=$1} END{print int((b-a)/1e6)}')
echo "     10 starts spread over $span_ms ms"
# Five start at once; the other five need one token each at 2.5 tokens/s: the 10th at 2 s.
check "the token bucket paces starts (10 starts over >= 1.8 s)" test "$span_ms" -ge 1800

# --- cost: factor 2, recorded per task, tenant and type, kept across a restart ----------
RUN_SECONDS=0.3 LOG="$WORK/cost.log" agent costly costly 1 2 "$WORK/run.sh"
cid=$("$DROVER" submit -q --type costly --tenant acme --payload c)
"$DROVER" wait --timeout 20s "$cid" >/dev/null
got=$("$DROVER" get "$cid")
cost=$(sed -n 's/^  cost \([0-9.]*\).*/\1/p' <<<"$got")
check "the task's cost is its run time x 2 ($cost for a 0.3 s run)" \
  awk -v c="$cost" 'BEGIN{exit !(c >= 0.6 && c < 1.6)}'
cost2=$(printf '%.2f' "$cost")
check "drover usage sums it for the tenant and type" \
  grep -qE "tenant acme +type costly +$cost2 " <<<"$("$DROVER" usage)"
curl -s "$HTTP/metrics" >"$WORK/m1.txt"
check "metrics carry the cost" grep -q 'drover_task_cost_total{tenant="acme",type="costly"}' "$WORK/m1.txt"
check "metrics carry resource usage" grep -q '^drover_resource_acquired_total{resource="gpu"} 8' "$WORK/m1.txt"
check "metrics carry tenants' dispatches" grep -q '^drover_tenant_dispatched_total{tenant="small"} 20' "$WORK/m1.txt"
check "promtool accepts the metrics" bash -c "promtool check metrics <'$WORK/m1.txt'"
kill "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
start_server --config "$WORK/config.json"
check "the cost sums survive a restart" \
  grep -qE "tenant acme +type costly +$cost2 " <<<"$("$DROVER" usage)"

# --- a budget: no agent within it at first; a cheap agent then takes the task -----------
agent dear cheap 1 5 "$WORK/run.sh"
registered dear
bid=$("$DROVER" submit -q --type cheap --cost-budget 2 --payload b)
for _ in $(seq 1 50); do
  contains "$("$DROVER" get "$bid")" "waiting for an agent within" && break
  sleep 0.1
done
check "a task waits for an agent within its budget (about 5 per run here)" \
  contains "$("$DROVER" get "$bid")" "waiting for an agent within its remaining cost budget of 2"
LOG="$WORK/cheap.log" agent cheap cheap 1 0.5 "$WORK/run.sh"
check "an agent it can afford runs it" contains "$("$DROVER" wait --timeout 20s "$bid")" "SUCCEEDED"

# --- preemption: a critical task stops background work after preempt_after_ms -----------
RUN_SECONDS=30 LOG="$WORK/pre.log" agent busy pre 1 1 "$WORK/run.sh"
registered busy
low=$("$DROVER" submit -q --type pre --priority background --payload slow)
for _ in $(seq 1 50); do contains "$("$DROVER" get "$low")" "LEASED" && break; sleep 0.1; done
crit=$("$DROVER" submit -q --type pre --priority critical --payload urgent)
for _ in $(seq 1 50); do contains "$("$DROVER" get "$low")" "preempted" && break; sleep 0.1; done
check "the background task was preempted, uncounted" \
  contains "$("$DROVER" get "$low")" "attempt 1: agent"
check "its attempt says preempted" contains "$("$DROVER" get "$low")" "preempted by critical task $crit"
check "and it is queued again, no failure counted" contains "$("$DROVER" get "$low")" "failures 0 of"
check "the critical task runs on the freed agent" contains "$("$DROVER" get "$crit")" "LEASED"

# --- bad input -------------------------------------------------------------------------
out=$("$DROVER" submit --type gpu --resource tpu=1 --payload q 2>&1 || true)
check "an unknown resource is refused, naming the field" \
  contains "$out" 'task.resources[0].name: unknown resource "tpu" (configured: gpu, llm_tokens)'
out=$("$DROVER" submit --type gpu --resource gpu=3 --payload q 2>&1 || true)
check "more than the capacity is refused, naming the limit" contains "$out" "must be 1 to 2"
echo '{"task_types": {"x": {"placement": "nearest"}}}' >"$WORK/bad.json"
check "a bad placement is refused, naming it" sh -c \
  "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q \"task_types.x.placement: 'nearest' is not least_loaded, round_robin, random or cost\""
echo '{"resources": {"gpu": {"capacity": 0}}}' >"$WORK/bad2.json"
check "a resource without capacity is refused, naming it" sh -c \
  "'$DROVER' serve --config '$WORK/bad2.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'resources.gpu.capacity: must be 1 to'"
check "the server kept serving" contains "$("$DROVER" stats)" "outstanding"
finish
