#!/usr/bin/env bash
# Faults between drover and PostgreSQL, under load, with an owner and a standby that reach
# the database through a TCP proxy written for the tests (tcp_proxy.py):
#   - every drover connection killed from the database side (pg_terminate_backend);
#   - a transaction another client holds open for a while (throughput must go on and
#     recover after it ends);
#   - the proxy dropping every connection (resets);
#   - the proxy stalling past the lease TTL (half-open connections): the owner stops acting
#     before its lease ends and exits; once the path is back a server owns the work again.
# Afterwards every acknowledged submission succeeded exactly once.
source "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
HERE="$(cd "$(dirname "$0")" && pwd)"
PGS="$ROOT/scripts/pg-test-server.sh"
AGENT="$HERE/agents/record.sh"
TTL=${TTL:-2s}
HOLD=${HOLD:-6}

PGDIR=/tmp/drover-pg-faults.$$
PG_FSYNC=off bash "$PGS" start "$PGDIR" >/dev/null
PROXY_PORT=$(free_port)
python3 "$HERE/tcp_proxy.py" "$PROXY_PORT" "$(cat "$PGDIR/port")" "$WORK/proxy.pid" &
PIDS+=("$!")
trap 'bash "$PGS" stop "$PGDIR" >/dev/null 2>&1 || true; cleanup' EXIT
for _ in $(seq 1 100); do [ -f "$WORK/proxy.pid" ] && break; sleep 0.05; done
PROXY=$(cat "$WORK/proxy.pid")
URL=$(cat "$PGDIR/dsn")
SERVE_URL="postgresql://postgres@127.0.0.1:$PROXY_PORT/drover"
psql() { command psql -X -q -At "$URL" "$@"; }

echo '{"lease_ttl_ms": 3000, "defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 500}}' >"$WORK/config.json"
declare -A PORT PID
PORT[a]=$(free_port)
PORT[b]=$(free_port)
export DROVER_SERVER="127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]}"
start() {
  rm -f "$WORK/$1.ports"
  "$DROVER" serve --store "$SERVE_URL" --data-dir "$WORK/$1" --grpc-listen "127.0.0.1:${PORT[$1]}" \
    --http-listen off --port-file "$WORK/$1.ports" --config "$WORK/config.json" \
    --ownership-ttl "$TTL" >>"$WORK/$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
}
owner() {
  local pid
  pid=$(psql -c "SELECT split_part(owner, '/', 2) FROM leases WHERE expires_at > now()")
  for n in a b; do [ "${PID[$n]}" = "$pid" ] && { echo "$n"; return; }; done
  echo ""
}
serving() {  # waits up to $1 s for a live owner that serves; prints it
  local o=""
  for _ in $(seq 1 $(($1 * 10))); do
    o=$(owner)
    [ -n "$o" ] && [ -f "$WORK/$o.ports" ] && kill -0 "${PID[$o]}" 2>/dev/null && break
    o=""
    sleep 0.1
  done
  echo "$o"
}
acked() { tr ' ' '\n' <"$WORK/acked" | grep -cE '^[0-9]+$' || true; }

start a
for _ in $(seq 1 250); do [ -f "$WORK/a.ports" ] && break; sleep 0.02; done
start b
for i in 1 2; do start_agent "w$i" crash 4 "$AGENT"; done
# History for history_check.py: acknowledged batches (client.jsonl) and, from record.sh,
# every lease the agents received.
export RECORD_DIR="$WORK/history"
mkdir -p "$RECORD_DIR"
: >"$RECORD_DIR/client.jsonl"
: >"$WORK/acked"
(
  while [ ! -f "$WORK/stop" ]; do
    if out=$("$DROVER" submit --json --type crash --payload p --count 10 2>>"$WORK/submit.err"); then
      line=$(printf '%s' "$out" | tr -d '\n')
      printf '%s\n' "$line" >>"$RECORD_DIR/client.jsonl"
      { grep -o '"task": *{ *"id": *"[0-9]*"' <<<"$line" || true; } | tr -dc '0-9\n' >>"$WORK/acked"
    else
      sleep 0.05
    fi
  done
) &
PIDS+=("$!")
LOADER=$!
sleep 1
check "load flows through the proxy" [ "$(acked)" -gt 0 ]

# 1. The database kills every drover connection, three times.
for _ in 1 2 3; do
  psql -c "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = 'drover'" >/dev/null
  sleep 1
done
before=$(acked)
sleep 1
check "submissions are acknowledged again after the connections were killed" [ "$(acked)" -gt "$before" ]
check "a server serves after the connections were killed" [ -n "$(serving 10)" ]

# 2. Another client holds a transaction (and its snapshot) open for HOLD seconds.
command psql -X -q "$URL" -c "BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT count(*) FROM tasks; SELECT pg_sleep($HOLD); COMMIT" >/dev/null &
HOLDER=$!
sleep 0.5
a0=$(acked)
sleep "$((HOLD - 1))"
a1=$(acked)
wait "$HOLDER" || true
sleep 1
a2=$(acked)
sleep 2
a3=$(acked)
during=$(((a1 - a0) / (HOLD - 1)))
after=$(((a3 - a2) / 2))
echo "     acknowledged per second while a transaction was held open: $during, after it ended: $after"
check "work goes on while another client holds a transaction open" [ "$during" -gt 0 ]
check "throughput after the long transaction ended" [ "$after" -gt 0 ]

# 3. The proxy drops every connection, twice.
for _ in 1 2; do kill -HUP "$PROXY"; sleep 1; done
before=$(acked)
sleep 1
check "submissions are acknowledged again after the proxy dropped every connection" [ "$(acked)" -gt "$before" ]

# 4. The proxy stalls past the lease TTL: nothing gets through, connections stay open.
o=$(serving 10)
kill -USR1 "$PROXY"
ttl_s=$(echo "$TTL" | tr -d s)
sleep "$((ttl_s + 3))"
check "the owner ($o) stopped acting before its lease ended and exited" \
  bash -c "! kill -0 ${PID[$o]} 2>/dev/null"
grep -h "lost ownership" "$WORK/$o.log" | tail -1 | sed 's/^/     /'
kill -USR2 "$PROXY"
for n in a b; do kill -0 "${PID[$n]}" 2>/dev/null || start "$n"; done
o=$(serving 20)
check "a server owns the work and serves once the path is back" [ -n "$o" ]
before=$(acked)
sleep 1.5
check "submissions are acknowledged again after the stall" [ "$(acked)" -gt "$before" ]

touch "$WORK/stop"
wait "$LOADER" 2>/dev/null || true
for _ in $(seq 1 600); do
  out=$("$DROVER" stats --json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin).get("outstanding","0"))' || echo x)
  [ "$out" = 0 ] && break
  sleep 0.2
done
check "nothing outstanding after the drain" [ "$out" = 0 ]
check "the history checks out (history_check.py)" python3 "$(dirname "$0")/history_check.py" \
  "$RECORD_DIR" --agent-log "$WORK/agent-w1.log" --agent-log "$WORK/agent-w2.log" \
  --drover "$DROVER" --expect-state SUCCEEDED
tr ' ' '\n' <"$WORK/acked" | grep -E '^[0-9]+$' | sort -u >"$WORK/acked.ids"
echo "     acknowledged submissions: $(wc -l <"$WORK/acked.ids")"
psql -c "SELECT id, state FROM tasks UNION ALL SELECT id, state FROM task_history" |
  tr '|' ' ' | sort -u >"$WORK/stored"
missing=$(cut -d' ' -f1 "$WORK/stored" | sort -u | comm -23 "$WORK/acked.ids" - | wc -l)
check "every acknowledged submission is in PostgreSQL ($missing missing)" [ "$missing" = 0 ]
not_done=$(awk '$2 != 5 {print $1}' "$WORK/stored" | sort -u | comm -12 "$WORK/acked.ids" - | wc -l)
check "every acknowledged submission succeeded ($not_done did not)" [ "$not_done" = 0 ]
dups=$(psql -c "SELECT count(*) FROM (SELECT id FROM task_history GROUP BY id HAVING count(*) > 1) d")
check "no task finished twice ($dups did)" [ "$dups" = 0 ]
finish
