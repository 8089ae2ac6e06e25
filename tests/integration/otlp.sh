#!/usr/bin/env bash
# drover's spans over OTLP/HTTP JSON, against a real receiver (npm's @elastic/mockotlpserver,
# installed by this script into build/npm on first use): each task's trace arrives with the
# right tree (the submission under the submitter's span, a wait and a run per attempt under
# the submission, the run's span the one its agent got as TRACEPARENT), attributes and
# timings, in OTLP/JSON exactly (hex ids, integer enums, 64-bit values as decimal strings);
# a receiver that is down costs dropped spans (counted), nothing else; bad tracing keys stop
# start-up naming them.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
NPM_DIR=${DROVER_NPM_DIR:-$ROOT/build/npm}
if [ ! -d "$NPM_DIR/node_modules/@elastic/mockotlpserver" ]; then
  mkdir -p "$NPM_DIR"
  npm install --prefix "$NPM_DIR" --no-audit --no-fund --loglevel=error \
    @elastic/mockotlpserver@0.10.0 >"$WORK/npm.log" 2>&1 || { cat "$WORK/npm.log"; exit 1; }
fi
NODE_PATH="$NPM_DIR/node_modules" node "$ROOT/tests/integration/otlp_receiver.js" "$WORK/otlp.jsonl" \
  >"$WORK/receiver.out" 2>"$WORK/receiver.err" &
RECEIVER=$!
PIDS+=("$RECEIVER")
for _ in $(seq 1 100); do [ -s "$WORK/receiver.out" ] && break; sleep 0.1; done
URL=$(head -1 "$WORK/receiver.out")
check "the OTLP receiver is up" contains "$URL" "http://127.0.0.1:"

echo "{\"tracing\": {\"endpoint\": \"${URL%/}\", \"sampling\": 1}}" >"$WORK/config.json"
start_server --config "$WORK/config.json"
cat >"$WORK/agent.sh" <<'EOF'
#!/bin/sh
p=$(cat)
case "$p" in
  flaky) [ "$DROVER_ATTEMPT" = 1 ] && { echo "transient trouble" >&2; exit 75; } ;;
  poison) echo "cannot handle it" >&2; exit 1 ;;
esac
printf %s "$TRACEPARENT"
EOF
chmod +x "$WORK/agent.sh"
start_agent a1 t 2 "$WORK/agent.sh"
T=4bf92f3577b34da6a3ce929d0e0e4736
submit() { TRACEPARENT="00-$T-00f067aa0ba902b7-01" "$DROVER" submit -q --type t --payload "$1"; }
ok=$(submit fine)
flaky=$(submit flaky)
dead=$(submit poison)
for id in $ok $flaky; do "$DROVER" wait --timeout 20s "$id" >/dev/null; done
"$DROVER" wait --timeout 20s "$dead" >/dev/null || true
agent_tp=$("$DROVER" get --json "$ok" | python3 -c 'import json,sys,base64; print(base64.b64decode(json.load(sys.stdin)["result"]).decode())')
sleep 2.5  # the exporter sends every second

check "spans arrive with the right tree, attributes and timings, in OTLP/JSON" \
  python3 - "$WORK/otlp.jsonl" "$T" "$ok" "$flaky" "$dead" "$agent_tp" <<'EOF'
import json, re, sys
path, trace, ok, flaky, dead, agent_tp = sys.argv[1:]
spans = []
for line in open(path):
    req = json.loads(line)
    for rs in req["resourceSpans"]:
        attrs = {a["key"]: a["value"] for a in rs["resource"]["attributes"]}
        assert attrs["service.name"] == {"stringValue": "drover"}, attrs
        for ss in rs["scopeSpans"]:
            spans += ss["spans"]
hexid = lambda n: re.compile("^[0-9a-f]{%d}$" % n)
for s in spans:
    assert hexid(32).match(s["traceId"]) and hexid(16).match(s["spanId"]), s
    assert "parentSpanId" not in s or hexid(16).match(s["parentSpanId"]), s
    assert isinstance(s["kind"], int), s
    for k in ("startTimeUnixNano", "endTimeUnixNano"):
        assert isinstance(s[k], str) and s[k].isdigit(), s
    assert int(s["startTimeUnixNano"]) <= int(s["endTimeUnixNano"]), s
    for a in s["attributes"]:
        v = a["value"]
        assert "intValue" not in v or (isinstance(v["intValue"], str) and v["intValue"].lstrip("-").isdigit()), a
    if "status" in s:
        assert isinstance(s["status"]["code"], int), s
def of(task):
    return [s for s in spans if any(a["key"] == "drover.task.id" and a["value"] == {"intValue": task} for a in s["attributes"])]
for task in (ok, flaky, dead):
    mine = of(task)
    assert mine and all(s["traceId"] == trace for s in mine), (task, mine)
    submit = [s for s in mine if s["name"] == "submit t"]
    assert len(submit) == 1 and submit[0]["kind"] == 4, mine
    assert submit[0]["parentSpanId"] == "00f067aa0ba902b7", submit  # the submitter's span
    rest = [s for s in mine if s is not submit[0]]
    assert all(s["parentSpanId"] == submit[0]["spanId"] for s in rest), rest
    runs = [s for s in mine if s["name"] == "run t"]
    assert all(s["kind"] == 5 and s["links"] == [{"traceId": trace, "spanId": submit[0]["spanId"]}] for s in runs), runs
    assert all(s["kind"] == 1 for s in mine if s["name"] == "queued t"), mine
    ids = [s["spanId"] for s in mine]
    assert len(ids) == len(set(ids)), ids
    if task == ok:
        assert len(runs) == 1 and runs[0]["status"]["code"] == 1, runs
        assert runs[0]["spanId"] == agent_tp.split("-")[2], (runs, agent_tp)  # the agent's TRACEPARENT
    if task == flaky:
        assert [r["status"]["code"] for r in runs] == [2, 1], runs
        assert "transient trouble" in runs[0]["status"]["message"], runs[0]
        assert len([s for s in mine if s["name"] == "queued t"]) == 2, mine
    if task == dead:
        assert runs[-1]["status"]["code"] == 2 and "cannot handle it" in runs[-1]["status"]["message"], runs
print(len(spans), "spans")
EOF
check "exported spans are counted" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_trace_spans_exported_total [1-9]'"

# The receiver goes away: tasks still flow at once; their spans are dropped and counted.
kill -TERM "$RECEIVER"; wait "$RECEIVER" 2>/dev/null || true
start=$(date +%s%N)
ids=$("$DROVER" submit -q --type t --payload fine --count 50)
for id in $ids; do "$DROVER" wait --timeout 20s "$id" >/dev/null; done
ms=$((($(date +%s%N) - start) / 1000000))
check "with the receiver down 50 tasks still run at once ($ms ms)" [ "$ms" -lt 10000 ]
sleep 3
check "their spans are dropped and counted" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_trace_spans_dropped_total{reason=\"export_failed\"} [1-9]'"
check "the server keeps serving" contains "$("$DROVER" stats)" "succeeded"
kill -TERM "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true

bad() { echo "$1" >"$WORK/bad.json"; "$DROVER" serve --data-dir "$WORK/d2" --config "$WORK/bad.json" 2>&1 || true; }
check "a bad endpoint stops start-up naming the key" contains "$(bad '{"tracing": {"endpoint": "ftp://x:1"}}')" "tracing.endpoint: 'ftp://x:1' is not an http:// URL"
check "so does one without a port" contains "$(bad '{"tracing": {"endpoint": "http://collector"}}')" "tracing.endpoint: 'http://collector' has no host:port"
check "and a sampling past 1" contains "$(bad '{"tracing": {"endpoint": "http://127.0.0.1:4318", "sampling": 2}}')" "tracing.sampling: must be 0 to 1"
check "and tracing keys without an endpoint" contains "$(bad '{"tracing": {"sampling": 0.5}}')" "tracing.endpoint: is needed"
finish
