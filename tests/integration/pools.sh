#!/usr/bin/env bash
# Agent pools with the real process runtime: warm-up, scale-up under load, scale-in that
# drains busy agents with no task interrupted, retirement after max_uses, restart after a
# crash, the idle timeout, decisions and metrics, bad pool configs, and no agent left
# behind when the server stops.
source "$(dirname "$0")/lib.sh"
cat >"$WORK/config.json" <<'EOF'
{"pools": [
  {"name": "w", "types": ["work"], "command": ["sh", "-c", "p=$(cat); [ \"$p\" = slow ] && sleep 3; sleep 1.5; echo done"],
   "min": 1, "max": 4, "sync_period_ms": 500, "scale_down_stabilization_ms": 1500},
  {"name": "mu", "types": ["short"], "command": ["sh", "-c", "cat"],
   "min": 1, "max": 1, "max_uses": 3, "sync_period_ms": 500},
  {"name": "idle", "types": ["rare"], "command": ["sh", "-c", "cat >/dev/null; sleep 0.4"],
   "min": 1, "max": 3, "idle_timeout_ms": 1500, "sync_period_ms": 500,
   "scale_down_stabilization_ms": 600000},
  {"name": "b", "types": ["costly"], "command": ["sh", "-c", "cat >/dev/null; sleep 1"],
   "min": 1, "max": 6, "sync_period_ms": 500, "price_per_agent_hour": 2, "hourly_budget": 5},
  {"name": "ext", "types": ["outside"], "runtime": "external", "min": 0, "max": 5, "target": 2,
   "sync_period_ms": 500},
  {"name": "cls", "types": ["classy"], "command": ["sh", "-c", "cat >/dev/null; sleep 1"],
   "min": 1, "max": 6, "sync_period_ms": 500, "hourly_budget": 7,
   "classes": [{"name": "ondemand", "price_per_agent_hour": 3},
               {"name": "spot", "price_per_agent_hour": 1, "interruptions_per_hour": 0.1, "max_agents": 2}]}
]}
EOF
start_server --config "$WORK/config.json"
pools_json() { "$DROVER" pools --json; }
field() {  # field POOL KEY: a number from drover pools --json
  pools_json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='$1'][0]; print(p.get('$2', 0))"
}
wait_for() {  # wait_for SECONDS 'EXPRESSION': until the expression (evaluated anew) holds
  local n=$(($1 * 10))
  for _ in $(seq 1 "$n"); do eval "$2" && return 0; sleep 0.1; done
  return 1
}

check "warm-up: min agents start at once and register" wait_for 10 'test "$(field w idle)" = 1'
# 8 tasks of 1.5 s on a pool of max 4: it grows to 4, then shrinks while the last four run.
ids=$("$DROVER" submit -q --type work --count 8 --payload job)
check "under load the pool grows to its max" wait_for 10 'test "$(field w desired)" = 4'
check "four agents run at once" wait_for 10 'test "$(field w busy)" = 4'
saw_draining=0
for _ in $(seq 1 100); do
  [ "$(field w draining)" -ge 1 ] && { saw_draining=1; break; }
  sleep 0.1
done
check "when the queue empties, busy agents drain instead of being killed" test "$saw_draining" = 1
check "the pool returns to min" wait_for 20 'test "$(field w desired)" = 1 -a "$(field w draining)" = 0'
ok=1
for id in $ids; do
  got=$("$DROVER" get "$id")
  contains "$got" "SUCCEEDED" && contains "$got" "attempts 1 " || ok=0
done
check "no task was interrupted: all 8 succeeded on their first attempt" test "$ok" = 1
decisions=$("$DROVER" pools decisions w --limit 200)
check "decisions name their rule (max bounds)" contains "$decisions" "max bounds"
check "and the stabilization window" contains "$decisions" "stabilization window"

# max_uses 3: 9 tasks on a one-agent pool retire two agents and start fresh ones.
"$DROVER" submit -q --type short --count 9 --payload x >/dev/null
check "an agent is retired after max_uses attempts and replaced" wait_for 20 'test "$(field mu retired_total)" -ge 2'
check "the replacements started" test "$(field mu started_total)" -ge 3
short_done() { "$DROVER" ls --type short --state succeeded --json | grep -c '"id"'; }
check "all 9 tasks succeeded" wait_for 10 'test "$(short_done)" = 9'

# A crash: kill -9 the idle pool's agent; the pool starts another.
pid=$(pools_json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='idle'][0]; print(p['members'][0]['pid'])")
kill -9 -- "-$pid"
check "a crashed agent is counted" wait_for 10 'test "$(field idle crashed_total)" = 1'
check "and replaced" wait_for 10 'test "$(field idle idle)" = 1'
check "the crash is logged" grep -q "pool idle: agent idle/1 .* exited unasked" "$WORK/serve.log"

# Idle timeout: grow the pool with a burst, then idle agents stop (never below min) even
# though the autoscaler's 10-minute stabilization window would keep them.
"$DROVER" submit -q --type rare --count 12 --payload y >/dev/null
check "the idle pool grows under a burst" wait_for 10 'test "$(field idle started_total)" -ge 3'
check "idle agents are stopped after idle_timeout_ms" wait_for 20 'test "$(field idle idle_stopped_total)" -ge 1'
check "down to min" wait_for 20 'test "$(( $(field idle idle) + $(field idle busy) + $(field idle starting) ))" = 1'

# A budget of 5 per hour at 2 per agent-hour pays for 2 agents, whatever the queue says.
"$DROVER" submit -q --type costly --count 10 --payload c >/dev/null
check "the hourly budget caps the pool (2 agents at 2/h within 5/h)" \
  wait_for 10 '"$DROVER" pools decisions b | grep -q "budget cap"'
check "and it never exceeds it" test "$(field b desired)" -le 2
check "drover pools shows spend and burn rate" contains "$("$DROVER" pools)" "burn 4.00/h (budget 5/h)"

# Capacity classes: spot (1/h, at most 2) fills first, then on-demand (3/h); a budget of
# 7/h pays for 2 spot + 1 on-demand = 5/h (a fourth agent would make 8).
"$DROVER" submit -q --type classy --count 10 --payload k >/dev/null
check "classes: the budget caps the pool at 3 agents" wait_for 10 '"$DROVER" pools decisions cls | grep -q "budget cap"'
check "2 spot agents and 1 on-demand" wait_for 10 '"$DROVER" pools --json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)[\"pools\"] if p[\"name\"]==\"cls\"][0]; c=p.get(\"agents_by_class\",{}); sys.exit(0 if c.get(\"spot\")==2 and c.get(\"ondemand\")==1 else 1)"'
check "burning 5 per hour" contains "$("$DROVER" pools)" "burn 5.00/h (budget 7/h)"

# External: drover starts nothing; it counts the agents labelled drover.pool=ext and
# publishes the size it wants (8 pending, target 2 per agent: 4).
"$DROVER" agent --type outside --label drover.pool=ext --name by-hand --work-dir "$WORK/byhand" \
  -- sh -c 'cat >/dev/null; sleep 1' >>"$WORK/agent-byhand.log" 2>&1 &
PIDS+=("$!")
check "an external pool counts the agents started for it" wait_for 10 'test "$(field ext idle)" = 1'
"$DROVER" submit -q --type outside --count 8 --payload e >/dev/null
check "and publishes the size it wants (ceil(8 / 2) = 4)" wait_for 10 'test "$(field ext desired)" = 4'
check "without starting any agent itself" test "$(field ext started_total)" = 0

curl -s "$HTTP/metrics" >"$WORK/m.txt"
check "metrics: the desired size of the external pool" grep -q '^drover_pool_desired_agents{pool="ext"} 4' "$WORK/m.txt"
check "metrics: the burn rate" grep -q '^drover_pool_burn_rate{pool="b"} 4' "$WORK/m.txt"
check "metrics: pool agents by state" grep -q '^drover_pool_agents{pool="w",state="idle"}' "$WORK/m.txt"
check "metrics: decisions counted by rule" grep -q '^drover_pool_scaling_decisions_total{pool="w",rule="max bounds"} [1-9]' "$WORK/m.txt"
check "metrics for an external HPA or KEDA" grep -q '^pending_tasks_per_agent{pool="w"}' "$WORK/m.txt"
check "utilisation per pool" grep -q '^agent_utilization_ratio{pool="w"}' "$WORK/m.txt"
check "queue depth by priority" grep -q '^task_queue_depth{priority="normal"}' "$WORK/m.txt"
check "promtool accepts the metrics" bash -c "promtool check metrics <'$WORK/m.txt'"
check "GET /v1/pools answers" bash -c "curl -s '$HTTP/v1/pools' | grep -q '\"name\": *\"w\"'"
check "an unknown pool's decisions are a 404 naming it" bash -c \
  "curl -s '$HTTP/v1/pools/nope/decisions' | grep -q 'no pool named'"

# Pools through the API: create, use, survive a restart, change, remove (drain).
cat >"$WORK/api-pool.json" <<'EOF2'
{"name": "dyn", "types": ["dyn"], "command": ["sh", "-c", "cat; echo ' via dyn'"], "min": 1, "max": 2,
 "sync_period_ms": 500}
EOF2
check "drover pools apply creates a pool" contains "$("$DROVER" pools apply --file "$WORK/api-pool.json")" "pool dyn applied"
check "its agent starts" wait_for 15 'test "$(field dyn idle)" = 1'
check "and runs its tasks" contains "$("$DROVER" submit --type dyn --payload hi --wait)" "hi via dyn"
out=$("$DROVER" pools apply --file <(echo '{"name": "w", "types": ["work"], "command": ["true"]}') 2>&1 || true)
check "a config-file pool cannot be changed through the API" contains "$out" 'pool "w" comes from the config file'
out=$("$DROVER" pools apply --file <(echo '{"name": "bad", "types": ["x"], "command": ["true"], "min": 4, "max": 2}') 2>&1 || true)
check "a bad pool is refused, naming the field" contains "$out" "pool.max: must be >= min (4)"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
start_server --config "$WORK/config.json"
check "an API pool survives a restart" wait_for 15 'test "$(field dyn idle)" = 1'
sed -i 's/"max": 2/"max": 3/' "$WORK/api-pool.json"
"$DROVER" pools apply --file "$WORK/api-pool.json" >/dev/null
check "and can be changed" wait_for 5 'test "$(field dyn max)" = 3'
check "drover pools delete removes it" contains "$("$DROVER" pools delete dyn)" "drain and stop"
check "its agents stop and the pool is gone" wait_for 15 '! "$DROVER" pools | grep -q "^pool dyn"'
out=$("$DROVER" pools delete nope 2>&1 || true)
check "deleting an unknown pool names it" contains "$out" 'no pool named "nope"'

# Stopping one agent on request: drained by default (its task finishes), now with --force
# (its task goes back to the queue); the pool replaces it either way.
member() {  # member POOL STATE: the id of a member in that state
  "$DROVER" pools --json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='$1'][0]; print([m['id'] for m in p['members'] if m['state']=='$2'][0])"
}
before=$(field w started_total)
id=$("$DROVER" submit -q --type work --payload slow)
check "a task runs on pool w" wait_for 10 'test "$(field w busy)" = 1'
busy=$(member w busy)
check "drover pools stop drains a busy agent" contains "$("$DROVER" pools stop "$busy")" "$busy drains"
check "it is draining" wait_for 5 'test "$(field w draining)" = 1'
check "a replacement starts while it drains" wait_for 10 'test "$(field w started_total)" = "$((before + 1))"'
check "its task finishes on the first attempt" wait_for 15 '"$DROVER" get "$id" | grep -q "SUCCEEDED" && "$DROVER" get "$id" | grep -q "attempts 1 "'
check "then it stops" wait_for 10 '! "$DROVER" pools | grep -q "^  $busy "'
idle=$(member w idle)
check "drover pools stop --force stops one at once" contains "$("$DROVER" pools stop "$idle" --force)" "is being stopped"
check "and the pool replaces it" wait_for 10 '! "$DROVER" pools | grep -q "^  $idle " && test "$(field w idle)" = 1'
check "both are counted as stopped on request" test "$(field w stopped_total)" = 2
check "neither is a crash" test "$(field w crashed_total)" = 0
out=$("$DROVER" pools stop w/999 2>&1 || true)
check "an unknown member is refused, naming it" contains "$out" 'no pool member "w/999"'
out=$("$DROVER" pools stop ext/external-1 2>&1 || true)
check "an external pool's agents are not drover's to stop" contains "$out" 'pool "ext" is external'

echo '{"pools": [{"name": "p", "types": ["t"], "command": ["true"], "min": 3, "max": 2}]}' >"$WORK/bad.json"
check "a pool with max < min is refused, naming the field" sh -c \
  "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'pools\[0\].max: must be >= min (3)'"
echo '{"pools": [{"name": "p", "types": ["t"], "command": ["true"], "runtime": "vm"}]}' >"$WORK/bad2.json"
check "an unknown runtime is refused, naming it" sh -c \
  "'$DROVER' serve --config '$WORK/bad2.json' --data-dir '$WORK/bad' 2>&1 | grep -q \"pools\[0\].runtime: 'vm' is not process, container or external\""

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
check "stopping the server stops every pool agent" wait_for 15 "! pgrep -f -- '$WORK/data/pools' >/dev/null"
finish
