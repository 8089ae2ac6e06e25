#!/usr/bin/env bash
# `drover loadtest` as a user runs it, briefly: all four scenarios against a server it
# starts itself (the chaos one kills that server once), the report directory with every
# section, CSV and chart; then against a running server (chaos restarting it with
# --restart-command), with real `drover agent` processes, and clear errors for bad flags.
source "$(dirname "$0")/lib.sh"
unset DROVER_SERVER DROVER_TOKEN DROVER_TOKEN_FILE
cd "$WORK"

out=$("$DROVER" loadtest --duration 4s --max-tasks 20000 --drain 60s --out "$WORK/r1" --quiet 2>&1)
rc=$?
echo "$out"
check "all four scenarios pass (exit 0: nothing lost, nothing refused)" test "$rc" = 0
for s in baseline throughput dag chaos; do
  check "$s: a line of figures" grep -qE "^$s +[0-9]+/s  acked +[0-9]+  succeeded +[0-9]+ .* lost +0 " <<<"$out"
done
check "the fast phase reports its throughput" grep -qE 'fast phase [0-9]+ tasks/s' <<<"$out"
R=$WORK/r1/report.md
check "a markdown report" test -s "$R"
check "with a summary table" grep -q '^## Summary' "$R"
for s in baseline throughput dag chaos; do
  check "$s: its section" grep -q "^## $s\$" "$R"
  for h in Setup Results Latency "Throughput over time" "Latency over time" Events Files; do
    check "$s: '### $h'" python3 - "$R" "$s" "$h" <<'PY'
import sys
text = open(sys.argv[1]).read()
part = text.split("\n## " + sys.argv[2] + "\n", 1)[1].split("\n## ", 1)[0]
sys.exit(0 if "\n### " + sys.argv[3] + "\n" in part else 1)
PY
  done
  check "$s: a timeline CSV with a row per second" python3 - "$WORK/r1/$s/timeline.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert rows and list(rows[0])[:3] == ["second", "acknowledged", "completed"], rows[:1]
assert sum(int(r["completed"]) for r in rows) > 0
PY
  check "$s: a latency CSV" grep -q '^measure,count,p50_ms,p90_ms,p99_ms,p999_ms,max_ms$' "$WORK/r1/$s/latency.csv"
  for c in throughput latency; do
    check "$s: $c.svg is SVG with labelled axes and a line" python3 - "$WORK/r1/$s/$c.svg" <<'PY'
import sys, xml.etree.ElementTree as ET
root = ET.parse(sys.argv[1]).getroot()
ns = "{http://www.w3.org/2000/svg}"
texts = " ".join(t.text or "" for t in root.iter(ns + "text"))
assert "time since the scenario started (s)" in texts, texts
assert "per second" in texts or "(ms)" in texts, texts
assert list(root.iter(ns + "polyline")), "no line"
PY
  done
done
check "summary.csv: a row per scenario, none lost" python3 - "$WORK/r1/summary.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [r["scenario"] for r in rows] == ["baseline", "throughput", "dag", "chaos"], rows
assert all(r["lost"] == "0" and int(r["acknowledged"]) > 0 for r in rows), rows
assert float(rows[1]["fast_tasks_per_s"]) > 0
PY
check "dag: half the tasks in workflows, with their own latency" grep -q 'end to end, workflows' "$WORK/r1/dag/latency.csv"
check "chaos: the server was killed and served again" grep -q 'server serving again' "$R"
check "chaos: agents crashed and attempts failed" python3 - "$R" <<'PY'
import re, sys
part = open(sys.argv[1]).read().split("\n## chaos\n", 1)[1]
assert int(re.search(r"\| attempts failed by agents \| (\d+) \|", part).group(1)) > 0, part
assert int(re.search(r"\| retries \(attempts after the first\) \| (\d+) \|", part).group(1)) > 0, part
PY
check "its own server is gone afterwards" sh -c "! pgrep -f '[d]rover-loadtest' >/dev/null"

# Against a running server: the chaos scenario restarts it with --restart-command.
start_server
echo "$SERVER_PID" >"$WORK/server.pid"
cat >"$WORK/restart.sh" <<SH
#!/bin/sh
kill -9 \$(cat "$WORK/server.pid")
sleep 0.2
"$DROVER" serve --data-dir "$WORK/data" --grpc-listen "127.0.0.1:$GRPC_PORT" --http-listen "127.0.0.1:$HTTP_PORT" >>"$WORK/serve.log" 2>&1 &
echo \$! >"$WORK/server.pid"
SH
chmod +x "$WORK/restart.sh"
out=$("$DROVER" loadtest --scenario baseline --scenario chaos --duration 4s --out "$WORK/r2" \
  --restart-command "$WORK/restart.sh" --quiet 2>&1)
rc=$?
echo "$out"
check "a running server: baseline and chaos pass" test "$rc" = 0
check "the report names that server" grep -q "at $GRPC" "$WORK/r2/report.md"
check "chaos ran the restart command" grep -q 'restart command:' "$WORK/r2/report.md"
check "and nothing was lost across the restart" python3 -c "
import csv; rows = list(csv.DictReader(open('$WORK/r2/summary.csv')))
assert [r['lost'] for r in rows] == ['0', '0'], rows"
check "the restarted server still serves" "$DROVER" stats

# Real `drover agent` processes run a command per task.
out=$("$DROVER" loadtest --scenario baseline --duration 3s --agents 2 --slots 8 \
  --agent-command 'cat >/dev/null; echo done' --out "$WORK/r3" --quiet 2>&1)
rc=$?
echo "$out"
check "drover agent processes: baseline passes" test "$rc" = 0
check "the report says which agents ran" grep -q '`drover agent` processes' "$WORK/r3/report.md"
check "their tasks' latency is reported" python3 -c "
import csv; r = list(csv.DictReader(open('$WORK/r3/summary.csv')))[0]
assert int(r['succeeded']) == 300 and r['e2e_p99_ms'] != '-', r"

# Bad input: the flag and its limit are named; nothing starts.
err=$("$DROVER" loadtest --rate -5 2>&1 || true)
check "a negative rate is refused, naming the flag" contains "$err" "--rate: must be from 0"
err=$("$DROVER" loadtest --scenario storm 2>&1 || true)
check "an unknown scenario is refused with the choices" contains "$err" "--scenario: 'storm' is not one of baseline, throughput, dag, chaos, all"
err=$("$DROVER" loadtest --work soon 2>&1 || true)
check "a bad service time is refused, naming the flag" contains "$err" "--work: 'soon'"
err=$("$DROVER" loadtest --fail-rate 0.7 --crash-rate 0.5 2>&1 || true)
check "chaos shares over 1 are refused" contains "$err" "must add up to at most 1"
err=$("$DROVER" --server "$GRPC" loadtest --scenario chaos 2>&1 || true)
check "chaos against a running server needs a way to restart it" contains "$err" "--restart-command:"
finish
