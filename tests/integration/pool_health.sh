#!/usr/bin/env bash
# Pools beyond the basics, with real processes: the health command (an agent that fails it
# is stopped, its running task goes back to the queue, a new agent takes it), cgroup limits
# on process agents from the controllers this machine offers (memory, cpu, pids), and the
# time to acquire an agent (warm and cold) and agent start times in `drover pools` and the
# metrics.
source "$(dirname "$0")/lib.sh"

# cgfile PID CONTROLLER FILE: the path of FILE in PID's cgroup for CONTROLLER (v1 or v2).
cgfile() {
  python3 - "$@" <<'EOF'
import sys
pid, ctl, name = sys.argv[1:]
mounts = [l.split() for l in open("/proc/self/mountinfo")]
def mount(kind, want):
    for f in mounts:
        i = f.index("-")
        if f[i + 1] == kind and (want is None or want in f[i + 3].split(",")):
            return f[4], f[3]
    return None, None
for line in open(f"/proc/{pid}/cgroup"):
    hid, ctls, path = line.rstrip("\n").split(":", 2)
    if ctl in ctls.split(","):
        mp, root = mount("cgroup", ctl)
        break
else:
    mp, root = mount("cgroup2", None)
    path = [l.split(":", 2)[2].strip() for l in open(f"/proc/{pid}/cgroup") if l.startswith("0::")][0]
if root != "/" and path.startswith(root):
    path = path[len(root):]
print(f"{mp}{path}/{name}")
EOF
}
# Does this machine offer drover the memory, cpu and pids controllers?
offered() {
  python3 - <<'EOF'
import sys
have = set()
v2 = None
for l in open("/proc/self/mountinfo"):
    f = l.split(); i = f.index("-")
    if f[i + 1] == "cgroup": have |= set(f[i + 3].split(","))
    if f[i + 1] == "cgroup2": v2 = f[4]
if v2:
    try: have |= set(open(v2 + "/cgroup.controllers").read().split())
    except OSError: pass
sys.exit(0 if {"memory", "cpu", "pids"} <= have else 1)
EOF
}

cat >"$WORK/config.json" <<EOF
{"pools": [
  {"name": "h", "types": ["checked"], "command": ["sh", "-c", "cat >/dev/null; sleep 4; echo fine"],
   "min": 1, "max": 1, "sync_period_ms": 500,
   "health_command": ["sh", "-c", "echo \"\$DROVER_MEMBER \$DROVER_AGENT_ID \$DROVER_AGENT_PID\" >>$WORK/checks; test \"\$DROVER_MEMBER\" != h/1 -o ! -e $WORK/sick"],
   "health_interval_ms": 200, "health_failures": 2},
  {"name": "z", "types": ["zero"], "command": ["cat"], "min": 0, "max": 1, "sync_period_ms": 300}
EOF
if offered; then
  cat >>"$WORK/config.json" <<EOF
  , {"name": "lim", "types": ["limited"], "command": ["sh", "-s"],
     "min": 1, "max": 1, "memory_bytes": 67108864, "cpus": 0.5, "pids_limit": 40}
EOF
fi
echo "]}" >>"$WORK/config.json"
start_server --config "$WORK/config.json"
field() {  # field POOL KEY: from drover pools --json (a number, or an object as JSON)
  "$DROVER" pools --json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='$1'][0]; v=p.get('$2', 0); print(json.dumps(v) if isinstance(v, dict) else v)"
}
wait_for() {  # wait_for SECONDS 'EXPRESSION'
  local n=$(($1 * 10))
  for _ in $(seq 1 "$n"); do eval "$2" && return 0; sleep 0.1; done
  return 1
}

# --- health ------------------------------------------------------------------------------
check "the pool's agent starts and passes its health checks" wait_for 10 'test -s "$WORK/checks" && test "$(field h idle)" = 1'
read -r member agent_id agent_pid <"$WORK/checks"
check "the health command gets the member, its agent id and pid" \
  test "$member" = h/1 -a "$agent_id" -gt 0 -a "$agent_pid" -gt 1
id=$("$DROVER" submit -q --type checked --payload x)
check "a task runs on it" wait_for 5 'test "$(field h busy)" = 1'
touch "$WORK/sick"
check "two failed checks in a row: the agent is replaced" wait_for 10 'test "$(field h unhealthy_total)" = 1'
check "it is logged" grep -q "agent h/1 failed its health command 2 times in a row; replaced" "$WORK/serve.log"
check "its task went back to the queue and the new agent ran it" \
  wait_for 15 '"$DROVER" get "$id" | grep -q SUCCEEDED'
check "on a second attempt (the first was handed back)" contains "$("$DROVER" get "$id")" "attempts 2 "
check "a stopped agent is no crash" test "$(field h crashed_total)" = 0
check "the new agent keeps passing" wait_for 5 'grep -q "^h/2 " "$WORK/checks"'
sleep 1
check "and stays (started 2 in all)" test "$(field h started_total)" = 2 -a "$(field h unhealthy_total)" = 1

# --- time to acquire an agent ------------------------------------------------------------
# Pool z starts from zero: its first task waits for an agent to start (cold); the next,
# submitted when that agent is idle, finds it running (warm).
"$DROVER" submit --type zero --payload a --wait >/dev/null
"$DROVER" submit --type zero --payload b --wait >/dev/null
count() { field z "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(d.get('count', 0) if d else 0)"; }
mean() { field z "$1" | python3 -c "import json,sys; print(json.load(sys.stdin).get('mean_ms', 0))"; }
# (The pool reads the engine every 250 ms.)
check "a task that waited for the pool to start an agent is a cold acquisition" wait_for 5 'test "$(count acquire_cold)" = 1' 
zc=$(mean acquire_cold); echo "(cold acquisition: $zc ms)"
check "its wait includes the agent's start (a process exec and registration: over 30 ms)" python3 -c "assert $zc > 30"
check "the next task found the agent running: a warm acquisition" wait_for 5 'test "$(count acquire_warm)" = 1' 
check "agent start times are counted (2 starts in pool h)" \
  test "$(field h agent_start | python3 -c "import json,sys; print(json.load(sys.stdin)['count'])")" = 2
out=$("$DROVER" pools)
check "drover pools shows the time to acquire an agent" contains "$out" "time to acquire an agent: warm mean"
curl -s "$HTTP/metrics" >"$WORK/m.txt"
check "metrics: acquire histogram, cold" grep -q '^drover_pool_acquire_seconds_count{pool="z",start="cold"} 1' "$WORK/m.txt"
check "metrics: agent start histogram" grep -q '^drover_pool_agent_start_seconds_count{pool="h"} 2' "$WORK/m.txt"
check "metrics: unhealthy agents" grep -q '^drover_pool_unhealthy_total{pool="h"} 1' "$WORK/m.txt"
check "promtool accepts the metrics" bash -c "promtool check metrics <'$WORK/m.txt'"

# --- cgroup limits -----------------------------------------------------------------------
if offered; then
  check "the limited pool's agent starts" wait_for 10 'test "$(field lim idle)" = 1'
  pid=$("$DROVER" pools --json | python3 -c "import json,sys; p=[p for p in json.load(sys.stdin)['pools'] if p['name']=='lim'][0]; print(p['members'][0]['pid'])")
  mem=$(cgfile "$pid" memory memory.limit_in_bytes)
  [ -e "$mem" ] || mem=$(cgfile "$pid" memory memory.max)
  check "the agent is in a cgroup of its own" contains "$mem" "/drover-lim-1-"
  check "with the memory limit (64 MiB)" test "$(cat "$mem")" = 67108864
  check "the pids limit" test "$(cat "$(cgfile "$pid" pids pids.max)")" = 40
  quota=$(cgfile "$pid" cpu cpu.cfs_quota_us)
  if [ -e "$quota" ]; then q=$(cat "$quota"); else q=$(cut -d' ' -f1 "$(cgfile "$pid" cpu cpu.max)"); fi
  check "and half a CPU (quota 50000 of 100000 us)" test "$q" = 50000
  out=$("$DROVER" submit --type limited --payload 'cat /proc/self/cgroup' --wait)
  check "its tasks run in that cgroup" contains "$out" "drover-lim-1-"
  out=$("$DROVER" submit --type limited --payload 'for i in $(seq 1 100); do sleep 2 & done; wait; echo all-started' --wait 2>&1 || true)
  check "the pids limit holds: 100 processes cannot start" contains "$out" "Cannot fork"
  cgdir=$(dirname "$mem")
else
  echo "(this machine offers no memory, cpu and pids cgroup controllers: checking the refusal)"
  echo '{"pools": [{"name": "p", "types": ["t"], "command": ["true"], "memory_bytes": 67108864}]}' >"$WORK/lim.json"
  check "a limit the machine cannot apply is refused, naming the field" sh -c \
    "'$DROVER' serve --data-dir '$WORK/d2' --grpc-listen 127.0.0.1:0 --http-listen off --config '$WORK/lim.json' 2>&1 | grep -q 'pools\[0\].memory_bytes: this machine offers drover no memory cgroup controller'"
  cgdir=""
fi
echo '{"name": "bad", "types": ["t"], "command": ["true"], "health_interval_ms": 5}' >"$WORK/bad.json"
check "a bad health interval is refused, naming the field and the limit" \
  contains "$("$DROVER" pools apply --file "$WORK/bad.json" 2>&1 || true)" "pool.health_interval_ms: must be 100 to 3600000 (1 h)"

kill -TERM "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
check "stopping the server stops every pool agent" wait_for 15 "! pgrep -f -- '$WORK/data/pools' >/dev/null"
if [ -n "$cgdir" ]; then
  check "and removes their cgroups" test ! -e "$cgdir"
fi
finish
