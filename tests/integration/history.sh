#!/usr/bin/env bash
# Load history: a trace imported into a pool reads back through `drover history` and HTTP,
# exports to the same CSV (which re-imports and replays in `drover simulate`), survives a
# restart and is pruned after load_history_retention_ms; bad input is refused naming the
# file and line or the field, and the server keeps serving.
source "$(dirname "$0")/lib.sh"
NASA="$(cd "$(dirname "$0")/../.." && pwd)/traces/nasa_http_jul95.csv"
# External pools: drover sizes them but starts no process, so nothing runs here. The pools
# record a row every minute themselves, so the imports below stay clear of the last minutes
# and reads that compare stop before them (--until).
cat >"$WORK/config.json" <<'EOF'
{"pools": [{"name": "web", "types": ["web"], "runtime": "external", "min": 0, "max": 5},
           {"name": "batch", "types": ["batch"], "runtime": "external", "min": 0, "max": 5},
           {"name": "edge", "types": ["edge"], "runtime": "external", "min": 0, "max": 5}]}
EOF
start_server --config "$WORK/config.json"
minute_now() { echo $(($(date +%s) / 60)); }
json() {  # json EXPR: evaluates a Python expression over the JSON on stdin, bound to j
  python3 -c "import json,sys; j=json.load(sys.stdin); print($1)"
}

# The first 3 days of the NASA HTTP trace: 4,320 minutes, ending 11 minutes ago.
head -4321 "$NASA" >"$WORK/nasa3d.csv"
first=$(($(minute_now) - 4330))
last=$((first + 4319))
out=$("$DROVER" history import --pool web --trace "$WORK/nasa3d.csv" --start "$first")
echo "$out"
check "a 3-day trace imports one row per minute" \
  contains "$out" "imported 4320 minutes of arrivals into pool web: Unix minutes $first to $last"
printf 'minute,arrivals\n0,4\n1,5\n' >"$WORK/two.csv"
before=$(minute_now)
out=$("$DROVER" history import --pool edge --trace "$WORK/two.csv")
after=$(minute_now)
end=$(sed -n 's/.*Unix minutes [0-9]* to \([0-9]*\).*/\1/p' <<<"$out")
check "without --start an import ends at the current minute" test "$end" -ge "$before" -a "$end" -le "$after"

table=$("$DROVER" history web --since "$first" --limit 3)
echo "$table"
check "drover history prints a table under a header" contains "$(head -1 <<<"$table")" "MINUTE (UTC)"
check "rows in minute order, the trace's arrivals (42, 61, ...)" \
  test "$(awk 'NR==2||NR==3 {print $3}' <<<"$table" | tr '\n' ' ')" = "42 61 "
check "minutes shown as UTC times" \
  contains "$table" "$(date -u -d "@$((first * 60))" '+%Y-%m-%d %H:%M')"
check "a full page says where the next one starts" contains "$table" "(more rows: --since $((first + 3)))"
check "--since takes a duration too (4d covers the import)" \
  test "$("$DROVER" history web --since 4d --until $((last + 1)) --limit 10000 | grep -c '^[0-9]')" = 4320

page=$(curl -s "$HTTP/v1/pools/web/history?since=$first&limit=2")
check "GET /v1/pools/web/history answers the rows" \
  test "$(json "[m['arrivals'] for m in j['minutes']]" <<<"$page")" = "['42', '61']"
check "with their Unix minutes and the next page" \
  test "$(json "j['minutes'][0]['unix_minute'], j['next_since_unix_minute']" <<<"$page")" = "$first $((first + 2))"
check "until is exclusive" \
  test "$(curl -s "$HTTP/v1/pools/web/history?since=$first&until=$((first + 5))" | json "len(j['minutes'])")" = 5

"$DROVER" history export --pool web --until $((last + 1)) --out "$WORK/export.csv" 2>"$WORK/export.err"
cat "$WORK/export.err"
check "export writes the imported CSV back byte for byte" cmp -s "$WORK/nasa3d.csv" "$WORK/export.csv"
check "export to standard output too" \
  bash -c "'$DROVER' history export --pool web --since $((last - 1)) --until $((last + 1)) | cmp -s - <(printf 'minute,arrivals\n0,%s\n1,%s\n' \$(tail -2 '$WORK/nasa3d.csv' | cut -d, -f2))"

# Seconds are summed into minutes (a last partial minute keeps what it has); a gap between
# two imports exports as minutes of 0, and the file replays in the simulator.
python3 -c "
print('second,arrivals')
for s in range(150): print(f'{s},{s % 7}')" >"$WORK/seconds.csv"
start=$((first - 100))
out=$("$DROVER" history import --pool batch --trace "$WORK/seconds.csv" --start "$start")
check "a per-second trace imports as minutes" contains "$out" "imported 3 minutes of arrivals (from 150 seconds) into pool batch: Unix minutes $start to $((start + 2))"
printf 'minute,arrivals\n0,9\n' >"$WORK/one.csv"
"$DROVER" history import --pool batch --trace "$WORK/one.csv" --start $((start + 5)) >/dev/null
sums=$(python3 -c "
a = [s % 7 for s in range(150)]
print(sum(a[0:60]), sum(a[60:120]), sum(a[120:150]), 0, 0, 9)")
"$DROVER" history export --pool batch --until $((start + 6)) --out "$WORK/batch.csv" 2>/dev/null
check "seconds summed per minute, the gap filled with 0" \
  test "$(tail -n +2 "$WORK/batch.csv" | cut -d, -f2 | tr '\n' ' ')" = "$sums "
check "the export is numbered from 0" test "$(cut -d, -f1 "$WORK/batch.csv" | tr '\n' ' ')" = "minute 0 1 2 3 4 5 "
check "an export replays in drover simulate" \
  contains "$("$DROVER" simulate --trace "$WORK/batch.csv" --policy static:2 --service-time fixed:1s 2>&1)" "static:2"

# Bad input: the CLI refuses a bad trace at its line (sim::ParseTrace), the server a bad
# request by its field; nothing is written either way.
printf 'min,arrivals\n0,1\n' >"$WORK/header.csv"
printf 'minute,arrivals\n0,1\n1,-4\n' >"$WORK/negative.csv"
printf 'minute,arrivals\n0,1\n1,lots\n' >"$WORK/nan.csv"
printf 'minute,arrivals\n0,1\n2,1\n' >"$WORK/gap.csv"
printf 'minute,arrivals\n1,1\n0,1\n' >"$WORK/order.csv"
import_err() { "$DROVER" history import "$@" 2>&1 && echo "UNEXPECTED SUCCESS"; true; }
check "a bad header is refused at line 1" \
  contains "$(import_err --pool web --trace "$WORK/header.csv")" "header.csv:1: the header must be minute,arrivals or second,arrivals"
check "a negative count is refused at its line" \
  contains "$(import_err --pool web --trace "$WORK/negative.csv")" "negative.csv:3: arrivals: not a count from 0 to 100000000"
check "a non-numeric count is refused at its line" \
  contains "$(import_err --pool web --trace "$WORK/nan.csv")" "nan.csv:3: arrivals: not a count"
check "a gap is refused at its line" \
  contains "$(import_err --pool web --trace "$WORK/gap.csv")" "gap.csv:3: expected 1 in the first column (no gaps), got 2"
check "rows out of order are refused at the first one" \
  contains "$(import_err --pool web --trace "$WORK/order.csv")" "order.csv:2: expected 0 in the first column (no gaps), got 1"
check "a missing file is named" \
  contains "$(import_err --pool web --trace "$WORK/none.csv")" "--trace: cannot read $WORK/none.csv"
check "an unknown pool is refused by name" \
  contains "$(import_err --pool nope --trace "$WORK/one.csv")" 'pool: no pool named "nope" (create it first'
check "an invalid pool name is refused, with the rule" \
  contains "$(import_err --pool 'bad name' --trace "$WORK/one.csv")" "pool: 'bad name' must be 1 to 64 characters of [A-Za-z0-9_.-]"
python3 -c "
print('minute,arrivals')
for m in range(100001): print(f'{m},1')" >"$WORK/huge.csv"
check "more than 100,000 minutes in one import is refused, naming the limit" \
  contains "$(import_err --pool web --trace "$WORK/huge.csv")" "arrivals: 100001 minutes exceeds the limit of 100000 per import"
check "minutes after the current one are refused" \
  contains "$(import_err --pool web --trace "$WORK/one.csv" --start $(($(minute_now) + 10)))" "after the current minute"
check "minutes the retention would prune at once are refused" \
  contains "$(import_err --pool web --trace "$WORK/one.csv" --start 1000)" "start_unix_minute: 1000 is older than load_history_retention_ms keeps"
post() { curl -s -X POST "$HTTP/v1/pools:import-history" -H 'Content-Type: application/json' -d "$1"; }
check "the server refuses a negative count, naming its index" \
  contains "$(post "{\"pool\": \"web\", \"start_unix_minute\": $first, \"arrivals\": [1, 2, -5]}")" "arrivals[2]: -5 is not a count from 0 to"
check "and an empty import" \
  contains "$(post "{\"pool\": \"web\", \"start_unix_minute\": $first}")" "arrivals: at least one minute is required"
check "and a bad pool name" \
  contains "$(post '{"pool": "a/b", "arrivals": [1]}')" "pool: 'a/b' must be 1 to 64 characters"
check "reading an unknown pool is refused by name" \
  contains "$("$DROVER" history nope 2>&1 || true)" 'pool: no pool named "nope" and no load history for it'
check "a reversed range is refused, naming both ends" \
  contains "$(curl -s "$HTTP/v1/pools/web/history?since=100&until=50")" "until_unix_minute: must be after since_unix_minute (100), got 50"
check "a bad query parameter is refused by name" \
  contains "$(curl -s "$HTTP/v1/pools/web/history?since=yesterday")" "since: not an integer"
check "a limit beyond 10,000 is refused, naming the limit" \
  contains "$(curl -s "$HTTP/v1/pools/web/history?limit=20000")" "limit: must be 0 (default 1440) to 10000, got 20000"
check "a bad --since is refused by name" \
  contains "$("$DROVER" history web --since soon 2>&1 || true)" "--since: 'soon' is not a Unix minute"
check "nothing of the refused imports was written" \
  bash -c "'$DROVER' history export --pool web --until $((last + 1)) --out '$WORK/still.csv' 2>/dev/null && cmp -s '$WORK/nasa3d.csv' '$WORK/still.csv'"
check "the server still serves" contains "$(curl -s "$HTTP/healthz")" "SERVING"
check "load history rows are counted (4320 + 2 + 3 + 1 imported)" \
  bash -c "curl -s '$HTTP/metrics' | awk '/^drover_load_history_rows_written_total / { exit !(\$2 >= 4326) }'"

kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
start_server --config "$WORK/config.json"
"$DROVER" history export --pool web --until $((last + 1)) --out "$WORK/restarted.csv" 2>/dev/null
check "the history survives a restart" cmp -s "$WORK/nasa3d.csv" "$WORK/restarted.csv"
check "the other pool's too" \
  bash -c "'$DROVER' history export --pool batch --until $((start + 6)) 2>/dev/null | cmp -s - '$WORK/batch.csv'"

# A one-day retention: the sweep (every 150 ms with this store_retention_ms) deletes the
# two older days.
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
python3 -c "
import json
c = json.load(open('$WORK/config.json'))
c.update(terminal_retention_ms=300, store_retention_ms=1500, load_history_retention_ms=86400000)
json.dump(c, open('$WORK/short.json', 'w'))"
start_server --config "$WORK/short.json"
sleep 1.5
oldest=$(curl -s "$HTTP/v1/pools/web/history?limit=1" | json "int(j['minutes'][0]['unix_minute'])")
check "rows older than load_history_retention_ms are pruned" test "$oldest" -ge $(($(minute_now) - 1441))
check "the rest stays" test "$(curl -s "$HTTP/v1/pools/web/history?since=$oldest&limit=10000" | json "len(j['minutes'])")" -ge 1400
check "pruned rows are counted" \
  bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_load_history_rows_pruned_total [1-9]'"
check "a pool whose rows were all pruned reads as empty" \
  contains "$("$DROVER" history batch --since 0 --until $((start + 6)) 2>&1 || true)" "no load history for pool batch"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true
echo '{"load_history_retention_ms": -5}' >"$WORK/bad.json"
check "a bad load_history_retention_ms is refused by name" \
  bash -c "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'load_history_retention_ms: must be 1 to 315360000000'"
finish
