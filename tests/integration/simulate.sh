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
finish
