#!/usr/bin/env bash
# The Grafana dashboards (deploy/grafana) and the alert rules (deploy/prometheus) against
# the real thing: each dashboard is valid against dashboard.schema.json and up to date with
# its generator; a real Prometheus (Debian's) scrapes a real drover serve with a pool and
# agents at work, loads the rules (every one evaluates without error), and every query of
# every panel parses and returns data. /metrics passes `promtool check metrics`.
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT="$ROOT/tests/integration/agents/transform.sh"

# The files: schema-valid, and what the generator writes.
check "every dashboard is valid against dashboard.schema.json" python3 - "$ROOT/deploy/grafana" <<'EOF'
import glob, json, sys
import jsonschema
d = sys.argv[1]
schema = json.load(open(f"{d}/dashboard.schema.json"))
jsonschema.Draft202012Validator.check_schema(schema)
files = sorted(glob.glob(f"{d}/drover-*.json"))
assert len(files) == 5, files
for f in files:
    dash = json.load(open(f))
    jsonschema.validate(dash, schema, cls=jsonschema.Draft202012Validator)
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids)), f"{f}: panel ids repeat"
EOF
mkdir -p "$WORK/gen"
cp "$ROOT/deploy/grafana/build_dashboards.py" "$WORK/gen/"
python3 "$WORK/gen/build_dashboards.py" >/dev/null
check "the dashboards are what build_dashboards.py writes" \
  bash -c "for f in '$WORK'/gen/drover-*.json; do cmp -s \"\$f\" '$ROOT/deploy/grafana/'\$(basename \"\$f\") || exit 1; done"

# A server with a priced pool, an agent of its own, and work that sometimes fails.
cat >"$WORK/config.json" <<'EOF'
{"events": {"tasks": "all"},
 "pools": [{"name": "p", "types": ["pooled"], "command": ["sh", "-c", "cat; sleep 0.2"],
            "min": 1, "max": 3, "sync_period_ms": 500, "price_per_agent_hour": 1.5}]}
EOF
start_server --config "$WORK/config.json"
start_agent a1 alpha 4 "$AGENT"
"$DROVER" submit -q --type nobody --payload waits --count 3 >/dev/null  # stay ready: an age
(
  while [ ! -f "$WORK/stop" ]; do
    "$DROVER" submit -q --type alpha --payload fine --count 20 >/dev/null 2>&1 || true
    "$DROVER" submit -q --type alpha --payload flaky --tenant team-a >/dev/null 2>&1 || true
    "$DROVER" submit -q --type alpha --payload poison >/dev/null 2>&1 || true
    "$DROVER" submit -q --type pooled --payload p --count 5 >/dev/null 2>&1 || true
    sleep 0.3
  done
) &
PIDS+=("$!")

PROM_PORT=$(free_port)
mkdir -p "$WORK/prom"
cp "$ROOT/deploy/prometheus/drover-rules.yml" "$ROOT/deploy/prometheus/drover-predictive-rules.yml" "$WORK/prom/"
cat >"$WORK/prom/prometheus.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
rule_files: [drover-rules.yml, drover-predictive-rules.yml]
scrape_configs:
  - job_name: drover
    static_configs: [{targets: ["127.0.0.1:$HTTP_PORT"]}]
    authorization: {credentials_file: $DROVER_TOKEN_FILE}
EOF
prometheus --config.file="$WORK/prom/prometheus.yml" --storage.tsdb.path="$WORK/prom/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=("$!")
PROM="http://127.0.0.1:$PROM_PORT"
up=0
for _ in $(seq 1 60); do
  if command curl -s "$PROM/api/v1/query?query=up" | grep -q '"value":\[[0-9.]*,"1"\]'; then
    up=1
    break
  fi
  sleep 0.5
done
check "Prometheus scrapes drover serve" [ "$up" = 1 ]
sleep 12  # a dozen scrapes: rates over 10 s windows have samples
touch "$WORK/stop"

check "every panel's query returns data from Prometheus" python3 - "$ROOT/deploy/grafana" "$PROM" <<'EOF'
import glob, json, sys, urllib.parse, urllib.request
d, prom = sys.argv[1], sys.argv[2]
bad = []
n = 0
for f in sorted(glob.glob(f"{d}/drover-*.json")):
    for p in json.load(open(f))["panels"]:
        for t in p["targets"]:
            # What Grafana substitutes: the rate interval (4 scrapes here) and "All" pools.
            expr = t["expr"].replace("$__rate_interval", "10s").replace("$pool", ".*")
            url = f"{prom}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
            try:
                r = json.load(urllib.request.urlopen(url, timeout=10))
            except Exception as e:  # a parse error answers 400
                bad.append(f"{f.split('/')[-1]} / {p['title']}: {expr}: {e}")
                continue
            n += 1
            if r.get("status") != "success" or not r["data"]["result"]:
                bad.append(f"{f.split('/')[-1]} / {p['title']}: {expr}: no data")
print(f"{n} queries")
for b in bad:
    print("  ", b)
sys.exit(1 if bad or n == 0 else 0)
EOF
check "every alert rule evaluates without error on real data" python3 - "$PROM" <<'EOF'
import json, sys, urllib.request
r = json.load(urllib.request.urlopen(sys.argv[1] + "/api/v1/rules", timeout=10))
rules = [x for g in r["data"]["groups"] for x in g["rules"]]
bad = [x["name"] + ": " + x.get("lastError", "") for x in rules if x.get("health") != "ok"]
print(f"{len(rules)} rules")
for b in bad:
    print("  ", b)
sys.exit(1 if bad or len(rules) < 11 else 0)
EOF
check "the oldest ready task's age is exported by type" bash -c "curl -s '$HTTP/metrics' | grep -q '^drover_oldest_ready_task_age_seconds{type=\"'"
check "promtool accepts /metrics" bash -c "curl -s '$HTTP/metrics' | promtool check metrics"
finish
