#!/usr/bin/env bash
# Predictive pools with the real server and real agents (process runtime), on the wall
# clock: a pool in mode predictive starts its agents ahead of a daily rise it learnt from
# an imported history, so the rise's tasks are taken by agents already running (warm),
# while a pool in mode shadow on the same load logs both answers, applies the reactive one
# and takes the rise cold. Also: unknown modes and models are refused naming the value, a
# mode change through `drover pools apply` applies at once, the load history survives a
# restart, and a corrupt LSTM model file is refused with a log line while the pool keeps
# serving on the reactive rule.
#
# Timeline (about 4 minutes): the history (3 days, a rise of 30 tasks in one minute at the
# same minute every day) ends the minute before now, with today's rise at R = now + 2..3
# minutes. The pools train when the current minute ends, install the models and forecast
# when the next one does (R - 1), and the predictive pool scales up then: its forecast for
# the next minutes sees the rise coming. At R the test submits the rise's 30 tasks (5 every
# 10 s) to both pools.
source "$(dirname "$0")/lib.sh"

pools_json() { "$DROVER" pools --json; }
field() {  # field POOL KEY: from drover pools --json (a number or string, or an object as JSON)
  pools_json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='$1'][0]; v=p.get('$2', 0); print(json.dumps(v) if isinstance(v, (dict, list)) else v)"
}
count() {  # count POOL acquire_warm|acquire_cold: how many acquisitions
  field "$1" "$2" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('count', 0) if d else 0)"
}
wait_for() {  # wait_for SECONDS 'EXPRESSION': until the expression (evaluated anew) holds
  wait_until $(($(date +%s) + $1)) "$2"
}
wait_until() {  # wait_until UNIX_SECOND 'EXPRESSION': until it holds, at most until then
  while [ "$(date +%s)" -lt "$1" ]; do eval "$2" && return 0; sleep 0.2; done
  eval "$2"
}
decisions() {  # decisions POOL: the JSON of its last 1000 decisions over HTTP, newest first
  curl -s "$HTTP/v1/pools/$1/decisions?limit=1000"
}
# Agents of both pools: a task reads its payload and takes 2 s.
AGENT='["sh", "-c", "cat >/dev/null; sleep 2; echo done"]'
PRED='"predictive": {"models": ["seasonal_naive", "holt_winters"], "min_samples": 30,
                     "expected_service_ms": 2000, "wait_objective_ms": 1000, "hold_ms": 120000}'

# --- refusals at start: an unknown mode, an unknown model ---------------------------------
echo "{\"pools\": [{\"name\": \"p\", \"types\": [\"t\"], \"command\": [\"true\"], \"mode\": \"turbo\"}]}" >"$WORK/bad-mode.json"
out=$("$DROVER" serve --config "$WORK/bad-mode.json" --data-dir "$WORK/bad" 2>&1 || true)
check "an unknown mode in the config is refused, naming it" \
  contains "$out" 'pools[0].mode: unknown "turbo" (one of reactive, shadow, predictive)'
echo "{\"pools\": [{\"name\": \"p\", \"types\": [\"t\"], \"command\": [\"true\"], \"mode\": \"shadow\",
  \"predictive\": {\"models\": [\"seasonal_naive\", \"prophet\"]}}]}" >"$WORK/bad-model.json"
out=$("$DROVER" serve --config "$WORK/bad-model.json" --data-dir "$WORK/bad" 2>&1 || true)
check "an unknown model in the config is refused, naming it" \
  contains "$out" 'pools[0].predictive.models[1]: unknown "prophet" (known: seasonal_naive, holt_winters, gbt, lstm)'

# --- the server: a predictive pool, a shadow pool, an LSTM pool with a corrupt model ------
cat >"$WORK/config.json" <<EOF
{"pools": [
  {"name": "pre", "types": ["pre"], "command": $AGENT, "min": 0, "max": 2, "sync_period_ms": 500,
   "mode": "predictive", $PRED},
  {"name": "sh", "types": ["sh"], "command": $AGENT, "min": 0, "max": 2, "sync_period_ms": 500,
   "mode": "shadow", $PRED},
  {"name": "lx", "types": ["lx"], "command": ["sh", "-c", "cat; echo ' via lx'"], "min": 1, "max": 1,
   "sync_period_ms": 500, "mode": "predictive", "predictive": {"models": ["lstm"], "min_samples": 30}}
]}
EOF
mkdir -p "$WORK/data/models"
echo "this is not a model" >"$WORK/data/models/lx.lstm.model"
start_server --config "$WORK/config.json"

# --- pools apply: refusals, and a mode change without a restart ---------------------------
apply() { "$DROVER" pools apply --file <(echo "$1") 2>&1 || true; }
check "an unknown mode through pools apply is refused, naming it" \
  contains "$(apply '{"name": "dyn", "types": ["dyn"], "runtime": "external", "mode": "turbo"}')" \
  'pool.mode: unknown "turbo" (one of reactive, shadow, predictive)'
check "an unknown model through pools apply is refused, naming it" \
  contains "$(apply '{"name": "dyn", "types": ["dyn"], "runtime": "external", "mode": "shadow", "predictive": {"models": ["prophet"]}}')" \
  'pool.predictive.models[0]: unknown "prophet"'
check "an unknown model to use is refused, naming it" \
  contains "$(apply '{"name": "dyn", "types": ["dyn"], "runtime": "external", "mode": "shadow", "predictive": {"models": ["seasonal_naive"], "model": "holt_winters"}}')" \
  'pool.predictive.model: unknown "holt_winters"'
check "nothing of the refused pools was created" bash -c "! '$DROVER' pools | grep -q '^pool dyn'"
# A pool of the API (external: nothing runs), reactive, changed to shadow: at once, with no
# restart. It gets the same history below, for a change of its models later.
DYN='{"name": "dyn", "types": ["dyn"], "runtime": "external", "min": 0, "max": 3, "sync_period_ms": 300'
TWO='"predictive": {"models": ["seasonal_naive", "holt_winters"], "min_samples": 30}'
block() {  # block POOL: the pool's lines of drover pools
  "$DROVER" pools | awk -v p="$1" '/^pool / { on = ($2 == p) } on'
}
check "a reactive pool is created through pools apply" contains "$(apply "$DYN}")" "pool dyn applied"
check "in mode reactive" test "$(field dyn mode)" = reactive
check "changing its mode to shadow through pools apply" \
  contains "$(apply "$DYN, \"mode\": \"shadow\", $TWO}")" "pool dyn applied"
check "takes effect without a restart (drover pools shows mode shadow)" \
  wait_for 5 'block dyn | grep -q "^  mode shadow: "'
check "its next decisions are shadow decisions" \
  wait_for 5 'test "$(decisions dyn | python3 -c "import json,sys; print(json.load(sys.stdin)[\"decisions\"][0].get(\"mode\", \"\"))" 2>/dev/null)" = shadow'

# --- the history ------------------------------------------------------------------------
# The history: 3 days ending at the minute before now, the rise at minute R of every day.
# (Late in a minute the models would be installed a minute later: start at the next one.)
[ "$(date +%-S)" -le 50 ] || sleep $((61 - $(date +%-S)))
now=$(($(date +%s) / 60))
R=$((now + 3))
first=$((now - 3 * 1440))
python3 - "$first" "$R" >"$WORK/history.csv" <<'EOF'
import sys
first, rise = map(int, sys.argv[1:])
print("minute,arrivals")
for i in range(3 * 1440):
    print(f"{i},{30 if (first + i - rise) % 1440 == 0 else 0}")
EOF
for p in pre sh dyn; do
  out=$("$DROVER" history import --pool "$p" --trace "$WORK/history.csv" --start "$first")
  check "3 days of history import into pool $p" \
    contains "$out" "imported 4320 minutes of arrivals into pool $p: Unix minutes $first to $((now - 1))"
done
echo "(now: Unix minute $now, $(date -u '+%H:%M:%S'); the rise at $R, $(date -u -d "@$((R * 60))" '+%H:%M'))"

out=$("$DROVER" pools)
check "drover pools shows the predictive pool's mode" contains "$out" "mode predictive: fallbacks"
check "and the shadow pool's" contains "$out" "mode shadow: fallbacks"

# --- the corrupt LSTM model: refused, the pool serves on the reactive rule -----------------
check "the LSTM pool's agent runs" wait_for 15 'test "$(field lx idle)" = 1'
check "and serves (the reactive rule decides)" \
  contains "$("$DROVER" submit --type lx --payload hello --wait)" "hello via lx"
f1=$(field lx fallbacks_total)
sleep 1.5
check "its decisions are counted as fallbacks, and they grow" \
  test "$f1" -ge 1 -a "$(field lx fallbacks_total)" -gt "$f1"

# --- before the rise ----------------------------------------------------------------------
# The pools train when the current minute ends and forecast from the next; the predictive
# pool scales up once the forecast sees the rise, at most 3 minutes ahead.
check "the predictive pool is trained and forecasts" \
  wait_until $((R * 60)) 'test "$(field pre model_fits_total)" -ge 1 && field pre forecast | grep -q horizons'
check "it starts its agents ahead of the rise (2 idle before minute $R)" \
  wait_until $((R * 60 - 2)) 'test "$(field pre idle)" = 2'
ahead=$((R * 60 - $(date +%s)))
echo "(agents ready ${ahead}s before the rise)"
out=$(decisions pre | python3 -c "
import json, sys
R = $R * 60000
d = [d for d in json.load(sys.stdin)['decisions'] if int(d['at_unix_ms']) < R and d.get('desired', 0) == 2]
print(d[-1]['predictive_rule'] if d else 'none', d[-1].get('confidence', 0) if d else 0)")
echo "(the first decision for 2 agents: $out)"
check "by its forecast (rule 'forecast (pre-warm)'), trusted (confidence >= 0.8)" \
  python3 -c "r = '''$out'''.rsplit(' ', 1); assert r[0] == 'forecast (pre-warm)' and float(r[1]) >= 0.8, r"
check "the shadow pool's agents are not started (its reactive answer: 0)" \
  test "$(field sh desired)" = 0 -a "$(field sh idle)" = 0
check "though its predictive answer was 2" \
  bash -c "curl -s '$HTTP/v1/pools/sh/decisions?limit=1000' | python3 -c \"import json,sys; sys.exit(0 if any(d.get('predictive', 0) == 2 and d.get('desired', 0) == 0 for d in json.load(sys.stdin)['decisions']) else 1)\""

# --- the rise: 30 tasks in the minute, as the history has it, to each pool ----------------
sleep $((R * 60 - $(date +%s) > 0 ? R * 60 - $(date +%s) : 0))
w0=$(count pre acquire_warm)
for _ in 1 2 3 4 5 6; do
  "$DROVER" submit -q --type pre --count 5 --payload r >>"$WORK/pre.ids"
  "$DROVER" submit -q --type sh --count 5 --payload r >>"$WORK/sh.ids"
  sleep 10
done
done_all() { test "$("$DROVER" ls --type "$1" --state succeeded --json | grep -c '"id"')" = 30; }
check "all 30 tasks of the predictive pool succeed" wait_for 30 'done_all pre'
check "and all 30 of the shadow pool" wait_for 30 'done_all sh'
check "the predictive pool took all 30 warm" wait_for 5 'test "$(count pre acquire_warm)" = $((w0 + 30))'
check "none cold" test "$(count pre acquire_cold)" = 0
check "the shadow pool (reactive applied) took the rise cold" test "$(count sh acquire_cold)" -ge 1
"$DROVER" pools | sed -n '/^pool \(pre\|sh\) /,/mode/p'

# --- what the decisions record ------------------------------------------------------------
decisions sh >"$WORK/sh.json"
decisions pre >"$WORK/pre.json"
dcheck() {  # dcheck DESCRIPTION FILE PYTHON-EXPRESSION over ds (the decisions, oldest first)
  check "$1" python3 -c "import json; ds = json.load(open('$2'))['decisions'][::-1]; assert $3"
}
dcheck "shadow decisions: mode shadow in every one" "$WORK/sh.json" "ds and all(d.get('mode') == 'shadow' for d in ds)"
dcheck "each with the predictive answer's rule" "$WORK/sh.json" "all(d.get('predictive_rule') for d in ds)"
dcheck "the reactive answer is applied in every one (desired == reactive)" "$WORK/sh.json" \
  "all(d.get('desired', 0) == d.get('reactive', 0) and not d.get('applied_predictive', False) for d in ds)"
dcheck "forecast horizons 15, 30 and 60 with a confidence, once trained" "$WORK/sh.json" \
  "any([h['minutes'] for h in d.get('forecast', [])] == [15, 30, 60] and d.get('confidence', 0) > 0 for d in ds)"
dcheck "and the members' weights" "$WORK/sh.json" \
  "any(set(d.get('weights', {})) == {'seasonal_naive', 'holt_winters'} for d in ds)"
dcheck "the answers differed before the rise (predictive 2, reactive 0)" "$WORK/sh.json" \
  "any(int(d['at_unix_ms']) < $R * 60000 and d.get('predictive', 0) == 2 and d.get('reactive', 0) == 0 for d in ds)"
check "drover pools decisions shows both answers, the forecast and the weights" \
  bash -c "'$DROVER' pools decisions sh --limit 5 | grep -q '^    shadow: reactive [0-9]*, predictive [0-9]*, .*, confidence 0\.[0-9]*; 15m .*; 30m .*; 60m .*; weights holt_winters 0\.[0-9]*, seasonal_naive'"
dcheck "predictive decisions: applied, mode predictive" "$WORK/pre.json" \
  "any(d.get('mode') == 'predictive' and d.get('applied_predictive') for d in ds)"
dcheck "the predictive pool was at 2 at least 30 s before the rise" "$WORK/pre.json" \
  "any(int(d['at_unix_ms']) <= ($R * 60 - 30) * 1000 and d.get('desired', 0) == 2 for d in ds)"
check "the shadow pool counted its disagreements" test "$(field sh shadow_disagreements_total)" -ge 1

# --- dyn: its models and its mode changed through pools apply ------------------------------
models_of() {  # the models the pool's latest forecast scores
  field dyn forecast | python3 -c "import json,sys; print(' '.join(sorted({s['model'] for s in json.load(sys.stdin).get('scores', [])})))"
}
check "the shadow API pool forecasts with both members" \
  wait_for 10 'test "$(models_of)" = "ensemble holt_winters seasonal_naive"'
apply "$DYN, \"mode\": \"predictive\", \"predictive\": {\"models\": [\"seasonal_naive\"], \"min_samples\": 30}}" >/dev/null
check "changed to predictive with one model: the mode at once" test "$(field dyn mode)" = predictive
check "and its old models are gone (the new one trains afresh)" \
  bash -c "! '$DROVER' pools --json | python3 -c \"import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='dyn'][0]; sys.exit(0 if any(s['model'] == 'holt_winters' for s in p.get('forecast', {}).get('scores', [])) else 1)\""
sleep 1
check "its decisions go on, in mode predictive" \
  test "$(decisions dyn | python3 -c "import json,sys; print(json.load(sys.stdin)['decisions'][0].get('mode', ''))")" = predictive
apply "$DYN}" >/dev/null
check "and back to reactive" wait_for 5 'test "$(field dyn mode)" = reactive && ! block dyn | grep -q "^  mode "'

# --- the corrupt model was refused with a log line ----------------------------------------
check "the corrupt LSTM model is refused in the server log, naming the file and the problem" \
  grep -q "pool lx: lstm model $WORK/data/models/lx.lstm.model: bad magic: not a drover LSTM model file; refused" "$WORK/serve.log"
check "drover pools shows the model error" contains "$(field lx model_error)" "bad magic"
check "the LSTM pool still serves" \
  contains "$("$DROVER" submit --type lx --payload again --wait)" "again via lx"

# --- the load history survives a restart --------------------------------------------------
rise_row() { "$DROVER" history pre --since "$R" --until $((R + 1)) 2>/dev/null | awk 'NR == 2 { print $3 }'; }
check "the pool recorded the rise it saw (30 arrivals in minute $R)" \
  wait_until $(((R + 1) * 60 + 10)) 'test "$(rise_row)" = 30'
"$DROVER" history pre --since "$first" --until $((R + 1)) --limit 10000 >"$WORK/before.txt"
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
check "stopping the server stops every pool agent" wait_for 15 "! pgrep -f -- '$WORK/data/pools' >/dev/null"
start_server --config "$WORK/config.json"
"$DROVER" history pre --since "$first" --until $((R + 1)) --limit 10000 >"$WORK/after.txt"
check "after a restart drover history shows the same history (imported and recorded)" \
  cmp -s "$WORK/before.txt" "$WORK/after.txt"
check "with the rise still there" test "$(rise_row)" = 30
check "and the imported days" test "$(grep -c '^[0-9]' "$WORK/after.txt")" -ge 4320
kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
finish
