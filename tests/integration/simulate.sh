#!/usr/bin/env bash
# `drover simulate` as a user runs it: a real trace (the 58-minute Azure LLM one), three
# policies side by side, a per-minute CSV and an SVG chart per policy, the same figures for
# the same seed, and clear errors for bad flags.
source "$(dirname "$0")/lib.sh"
TRACE="$(cd "$(dirname "$0")/../.." && pwd)/traces/azure_llm_2023_conv_1s.csv"
run() { "$DROVER" simulate --trace "$TRACE" --service-time exp:2s --startup 20s "$@"; }
out=$(run --seed 3 --out "$WORK/out")
echo "$out"
check "three policies by default, side by side" test "$(grep -cE '^(static-peak|static-mean|hpa) ' <<<"$out")" = 3
check "every arrival of the trace is simulated" contains "$out" "19366 arrivals"
check "a per-minute CSV per policy" test "$(wc -l <"$WORK/out/hpa.csv")" = 59
check "with the documented columns" grep -q '^minute,arrivals,agents,queue_depth,dispatched,p95_wait_s,violated,forecast_p10,forecast_p50,forecast_p90$' "$WORK/out/hpa.csv"
check "an SVG chart per policy" grep -q '<polyline' "$WORK/out/static-peak.svg"
again=$(run --seed 3 --out "$WORK/out2")
strip() { awk '{ $NF = ""; print }' <<<"$1"; }  # the last column is wall time
check "the same seed gives the same figures" test "$(strip "$out")" = "$(strip "$again")"
check "and the same per-minute rows" cmp -s "$WORK/out/hpa.csv" "$WORK/out2/hpa.csv"
other=$(run --seed 4 --policy hpa)
check "another seed gives other figures" test "$(strip "$(grep '^hpa ' <<<"$out")")" != "$(strip "$(grep '^hpa ' <<<"$other")")"
err=$("$DROVER" simulate --trace "$TRACE" --policy magic 2>&1 || true)
check "a bad policy is refused, naming the flag" contains "$err" "--policy: 'magic'"
err=$("$DROVER" simulate --trace /nonexistent.csv 2>&1 || true)
check "a missing trace is named" contains "$err" "--trace: cannot read /nonexistent.csv"
printf 'minute,arrivals\n0,3\n2,1\n' >"$WORK/gap.csv"
err=$("$DROVER" simulate --trace "$WORK/gap.csv" 2>&1 || true)
check "a trace with a gap is refused at its line" contains "$err" "gap.csv:3: expected 1 in the first column"

# Forecasting policies on three days of the NASA trace (minute buckets; the two classical
# forecasters, which train in milliseconds), judged after the first day.
NASA3="$WORK/nasa3.csv"
head -4321 "$(dirname "$TRACE")/nasa_http_jul95.csv" >"$NASA3"
fc=$("$DROVER" simulate --trace "$NASA3" --service-time lognormal:20s --startup 60s \
  --judge-after 1d --models seasonal_naive --models holt_winters \
  --policy hpa-util --policy shadow --policy predictive --policy oracle --out "$WORK/fc")
echo "$fc"
check "predictive, shadow and oracle run beside hpa-util" test "$(grep -cE '^(hpa-util|shadow|predictive|oracle) ' <<<"$fc")" = 4
check "the figures count after the warm-up day" contains "$fc" "figures count from 24h"
check "each policy's agent-hours against the oracle's" contains "$fc" "agent-hours / oracle's:"
check "the forecasters' errors are reported" contains "$fc" "ensemble         15m MAE"
check "shadow pays what hpa-util pays" test "$(awk '/^hpa-util /{print $2}' <<<"$fc")" = "$(awk '/^shadow /{print $2}' <<<"$fc")"
check "the chart draws the forecast band" grep -q "forecast p10-p90" "$WORK/fc/predictive.svg"
check "and labels its axes" grep -q "arrivals per minute" "$WORK/fc/predictive.svg"
check "the CSV carries the forecast" grep -qE '^2000,[0-9]+,[0-9.]+,[0-9]+,[0-9]+,[0-9.]+,[01],[0-9.]+,' "$WORK/fc/predictive.csv"
err=$("$DROVER" simulate --trace "$NASA3" --policy predictive:prophet 2>&1 || true)
check "an unknown model is refused, naming it" contains "$err" '"prophet"'
err=$("$DROVER" simulate --trace "$NASA3" --judge-after 9d 2>&1 || true)
check "a judged window past the trace is refused" contains "$err" "--judge-after: 9d is not shorter"
bt=$("$DROVER" forecast backtest --trace "$NASA3" --model seasonal_naive --model holt_winters --train 2d)
echo "$bt"
check "the backtest prints MAE, MAPE, coverage and MAE in agents per model and horizon" \
  test "$(grep -cE '^(seasonal_naive|holt_winters|ensemble) +(15|30|60)m ' <<<"$bt")" = 9
err=$("$DROVER" forecast backtest --trace "$NASA3" --horizons 7 2>&1 || true)
check "a horizon that is not a multiple of 5 is refused" contains "$err" "--horizons: '7'"
finish
