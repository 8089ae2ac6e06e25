#!/usr/bin/env bash
# Predictive pools on /metrics: a pool in mode shadow and one in mode predictive (external:
# nothing runs), seeded with 3 days of the NASA HTTP trace, train, forecast and publish
# their mode, forecast, scores and counters with bounded labels; a reactive pool only its
# mode; the saved cost is the saved agent-hours at the pool's price; promtool accepts it.
source "$(dirname "$0")/lib.sh"
NASA="$(cd "$(dirname "$0")/../.." && pwd)/traces/nasa_http_jul95.csv"
# Two cheap members keep the training short; min_samples 30: the replay of the first
# training scores enough for a confidence at once.
cat >"$WORK/config.json" <<'EOF'
{"pools": [
  {"name": "web", "types": ["web"], "runtime": "external", "min": 0, "max": 5, "mode": "shadow",
   "sync_period_ms": 500,
   "predictive": {"models": ["seasonal_naive", "holt_winters"], "min_samples": 30}},
  {"name": "api", "types": ["api"], "runtime": "external", "min": 0, "max": 5,
   "mode": "predictive", "sync_period_ms": 500, "price_per_agent_hour": 2,
   "predictive": {"models": ["seasonal_naive"], "min_samples": 30}},
  {"name": "plain", "types": ["plain"], "runtime": "external", "min": 0, "max": 5,
   "sync_period_ms": 500}
]}
EOF
start_server --config "$WORK/config.json"
wait_for() {  # wait_for SECONDS 'EXPRESSION': until the expression (evaluated anew) holds
  local n=$(($1 * 10))
  for _ in $(seq 1 "$n"); do eval "$2" && return 0; sleep 0.1; done
  return 1
}
metrics() { curl -s "$HTTP/metrics" >"$WORK/m.txt"; }
has() { grep -q "$1" "$WORK/m.txt"; }
value() {  # value 'SAMPLE PREFIX': its value
  awk -v k="$1" 'index($0, k " ") == 1 { print $2 }' "$WORK/m.txt"
}

# 3 days ending 2 minutes ago; the pools train at the next minute's end and forecast at
# the one after (the first training replays the last minutes to score them).
head -4321 "$NASA" >"$WORK/nasa3d.csv"
first=$(($(date +%s) / 60 - 4322))
"$DROVER" history import --pool web --trace "$WORK/nasa3d.csv" --start "$first" >/dev/null
"$DROVER" history import --pool api --trace "$WORK/nasa3d.csv" --start "$first" >/dev/null
"$DROVER" submit -q --type web --count 5 --payload w >/dev/null

metrics
check "every pool's mode, before any forecast" \
  bash -c "grep -q '^drover_pool_mode{pool=\"plain\",mode=\"reactive\"} 1$' '$WORK/m.txt' &&
           grep -q '^drover_pool_mode{pool=\"web\",mode=\"shadow\"} 1$' '$WORK/m.txt' &&
           grep -q '^drover_pool_mode{pool=\"api\",mode=\"predictive\"} 1$' '$WORK/m.txt'"
check "promtool accepts the metrics before the first forecast" \
  bash -c "promtool check metrics <'$WORK/m.txt'"
check "both predictive pools forecast (within about two minutes)" \
  wait_for 200 'metrics; has "^drover_pool_forecast_confidence{pool=\"web\",horizon=\"15m\"}" &&
                has "^drover_pool_forecast_confidence{pool=\"api\",horizon=\"15m\"}"'
sleep 2  # some sync periods with the forecast
metrics
for h in 15m 30m 60m; do
  for m in ensemble seasonal_naive holt_winters; do
    check "MAE of $m at $h, in arrivals and agents" \
      bash -c "grep -q '^drover_pool_forecast_mae{pool=\"web\",horizon=\"$h\",model=\"$m\"} ' '$WORK/m.txt' &&
               grep -q '^drover_pool_forecast_mae_agents{pool=\"web\",horizon=\"$h\",model=\"$m\"} ' '$WORK/m.txt'"
  done
  for s in p10 p50 p90 mean; do
    check "forecast arrivals at $h, $s" \
      has "^drover_pool_forecast_arrivals{pool=\"web\",horizon=\"$h\",stat=\"$s\"} [0-9]"
  done
  check "agents the forecast needs at $h" has "^drover_pool_forecast_agents{pool=\"web\",horizon=\"$h\"} [0-9]"
done
check "only the pool's own members are scored" \
  bash -c "! grep -q '^drover_pool_forecast_mae{pool=\"api\",[^}]*model=\"holt_winters\"' '$WORK/m.txt'"
check "the forecasters were trained" \
  bash -c "awk '/^drover_pool_model_fits_total\\{pool=\"web\"\\} / { ok = \$2 >= 1 } END { exit !ok }' '$WORK/m.txt'"
check "predictive decisions by direction and band, all nine pairs" \
  test "$(grep -c '^drover_pool_predictive_decisions_total{pool="web",direction="\(up\|down\|hold\)",band="\(high\|blend\|low\)"} ' "$WORK/m.txt")" = 9
total=$(awk '/^drover_pool_predictive_decisions_total\{pool="web",/ { s += $2 } END { print s }' "$WORK/m.txt")
low=$(awk '/^drover_pool_predictive_decisions_total\{pool="web",.*band="low"\}/ { s += $2 } END { print s }' "$WORK/m.txt")
check "decisions were counted" test "$total" -ge 1
check "fallbacks are the decisions of band low" \
  test "$(value 'drover_pool_forecast_fallbacks_total{pool="web"}')" = "$low"
check "a shadow pool counts its disagreements" has '^drover_pool_shadow_disagreements_total{pool="web"} [0-9]'
check "and saves nothing (the reactive answer is applied)" \
  test "$(value 'drover_pool_saved_agent_seconds{pool="web"}')" = 0
saved=$(value 'drover_pool_saved_agent_seconds{pool="api"}')
cost=$(value 'drover_pool_saved_cost{pool="api"}')
echo "api: saved $saved agent-seconds, cost $cost"
check "the saved cost is the saved agent-hours at the pool's price (2 per hour)" \
  python3 -c "import sys; s, c = float('$saved'), float('$cost'); sys.exit(0 if abs(s / 3600 * 2 - c) < 1e-9 * max(1, abs(c)) else 1)"
check "a reactive pool has nothing but its mode" \
  bash -c "! grep -E '^drover_pool_(forecast_[a-z_]+|predictive_decisions_total|shadow_disagreements_total|model_fits_total|saved_[a-z_]+)\\{pool=\"plain\"' '$WORK/m.txt'"
check "no label but the bounded ones" \
  bash -c "! grep -E '^drover_pool_(forecast|predictive|shadow|model_fits|saved|mode)' '$WORK/m.txt' |
             grep -Ev '^[a-z_]+\\{((pool|horizon|model|stat|direction|band|mode)=\"[^\"]*\",?)+\\} ' | grep -q ."
check "promtool accepts the metrics of predictive pools" bash -c "promtool check metrics <'$WORK/m.txt'"
finish
