#!/usr/bin/env bash
# Two drover servers on one PostgreSQL (its own, started here): one owns the work through a
# lease, the other waits as a standby. Under continuous load through both addresses, with
# agents connected to both: kill -9 the owner (the standby takes over after the lease TTL),
# stop it gracefully (at once), pause it past its lease (it is fenced and exits on waking),
# and restart PostgreSQL itself. Afterwards every acknowledged submission exists and
# succeeded, and the failover times are printed.
#   KILLS=N (default 3) kill -9 rounds; TTL (default 2s) the ownership lease.
#   PGBOUNCER=1: the servers reach PostgreSQL through PgBouncer in transaction mode (Debian 12
#   has 1.18, which cannot keep prepared statements: hence prepare=off).
source "$(dirname "$0")/lib.sh"
ROOT="$(cd "$(dirname "$0")/../.." && pwd)"
PGS="$ROOT/scripts/pg-test-server.sh"
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/record.sh"
KILLS=${KILLS:-3}
TTL=${TTL:-2s}

# Not under $WORK: the server runs as the postgres user, which cannot enter a 0700 dir.
PGDIR=/tmp/drover-pg-it.$$
PG_FSYNC=off bash "$PGS" start "$PGDIR" >/dev/null
trap 'bash "$PGS" stop "$PGDIR" >/dev/null 2>&1 || true; cleanup' EXIT
URL=$(cat "$PGDIR/dsn")
psql() { command psql -X -q -At "$URL" "$@"; }
SERVE_URL=$URL
if [ "${PGBOUNCER:-0}" = 1 ]; then
  command -v pgbouncer >/dev/null || { echo "pgbouncer missing: apt-get install pgbouncer"; exit 1; }
  BPORT=$(free_port)
  PGPORT=$(cat "$PGDIR/port")
  BDIR=/tmp/drover-pgb-it.$$
  mkdir -p "$BDIR"
  echo '"postgres" ""' >"$BDIR/users.txt"
  cat >"$BDIR/pgbouncer.ini" <<INI
[databases]
drover = host=127.0.0.1 port=$PGPORT dbname=drover
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $BPORT
unix_socket_dir =
auth_type = trust
auth_file = $BDIR/users.txt
pool_mode = transaction
max_client_conn = 200
default_pool_size = 20
logfile = $BDIR/pgbouncer.log
pidfile = $BDIR/pgbouncer.pid
server_login_retry = 1
INI
  RUNAS=()
  if [ "$(id -u)" = 0 ]; then chown -R postgres "$BDIR"; RUNAS=(runuser -u postgres --); fi
  "${RUNAS[@]}" pgbouncer -d "$BDIR/pgbouncer.ini"
  trap 'kill "$(cat "$BDIR/pgbouncer.pid" 2>/dev/null)" 2>/dev/null; rm -rf "$BDIR"; bash "$PGS" stop "$PGDIR" >/dev/null 2>&1 || true; cleanup' EXIT
  for _ in $(seq 1 100); do
    command psql -X -q -At "postgresql://postgres@127.0.0.1:$BPORT/drover" -c 'select 1' >/dev/null 2>&1 && break
    sleep 0.05
  done
  SERVE_URL="postgresql://postgres@127.0.0.1:$BPORT/drover?prepare=off"
  echo "     through PgBouncer (transaction mode) on port $BPORT"
fi

echo '{"lease_ttl_ms": 3000, "defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 500}}' >"$WORK/config.json"
declare -A PORT PID
PORT[a]=$(free_port)
PORT[b]=$(free_port)
export DROVER_SERVER="127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]}"

# start NAME: a server on its fixed port; it serves once it owns the work (else it waits).
start() {
  rm -f "$WORK/$1.ports"
  "$DROVER" serve --store "$SERVE_URL" --data-dir "$WORK/$1" --grpc-listen "127.0.0.1:${PORT[$1]}" \
    --http-listen off --port-file "$WORK/$1.ports" --config "$WORK/config.json" \
    --ownership-ttl "$TTL" >>"$WORK/$1.log" 2>&1 &
  PID[$1]=$!
  PIDS+=("$!")
}
# The server that owns the work now (by the lease row's pid), or "" while none does.
owner() {
  local pid
  pid=$(psql -c "SELECT split_part(owner, '/', 2) FROM leases WHERE expires_at > now()")
  for n in a b; do [ "${PID[$n]}" = "$pid" ] && { echo "$n"; return; }; done
  echo ""
}
other() { [ "$1" = a ] && echo b || echo a; }
# Seconds until NAME answers calls (its port file appears once it owns the work).
wait_serving() {
  local t0=$1 name=$2
  for _ in $(seq 1 600); do
    [ -f "$WORK/$name.ports" ] && break
    sleep 0.02
  done
  python3 -c "import time; print(f'{time.time() - $t0:.2f}')"
}
now() { python3 -c 'import time; print(time.time())'; }

start a
for _ in $(seq 1 250); do [ -f "$WORK/a.ports" ] && break; sleep 0.02; done
check "the first server owns the work" [ -f "$WORK/a.ports" ]
start b
sleep 0.5
check "the second server waits as a standby (not serving)" [ ! -f "$WORK/b.ports" ]
grep -q "standby" "$WORK/b.log" && echo "     $(grep -m1 standby "$WORK/b.log")"
sleep 1
out=$("$DROVER" cluster 2>&1 || true)
check "drover cluster lists the owner" contains "$out" "owner"
check "drover cluster lists the standby" contains "$out" "standby"
check "drover cluster shows the lease on the work" contains "$out" "partition/0"
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

: >"$WORK/failover"
for k in $(seq 1 "$KILLS"); do
  o=$(owner)
  [ -n "$o" ] || { sleep 0.5; o=$(owner); }
  n=$(other "$o")
  t0=$(now)
  kill -9 "${PID[$o]}"
  wait "${PID[$o]}" 2>/dev/null || true
  took=$(wait_serving "$t0" "$n")
  echo "kill -9 $took" >>"$WORK/failover"
  echo "     kill -9 of the owner ($o): $n served again after $took s"
  start "$o"
  sleep 1
done

o=$(owner)
n=$(other "$o")
t0=$(now)
kill -TERM "${PID[$o]}"
took=$(wait_serving "$t0" "$n")
wait "${PID[$o]}" 2>/dev/null || true
echo "     graceful stop of the owner ($o): $n served again after $took s"
check "after a graceful stop the standby serves within 2 s ($took s)" \
  python3 -c "import sys; sys.exit(0 if $took < 2 else 1)"
check "the stopped owner released its lease" grep -q "released the lease" "$WORK/$o.log"
start "$o"
sleep 1

# A pause past the lease: the standby takes over; the paused one wakes up fenced and exits.
o=$(owner)
n=$(other "$o")
t0=$(now)
kill -STOP "${PID[$o]}"
took=$(wait_serving "$t0" "$n")
sleep 0.5
kill -CONT "${PID[$o]}"
for _ in $(seq 1 100); do kill -0 "${PID[$o]}" 2>/dev/null || break; sleep 0.05; done
echo "     pause of the owner ($o): $n served again after $took s"
check "the paused owner exited on waking (lost ownership, or its first commit fenced)" \
  grep -qE "lost ownership|fenced" "$WORK/$o.log"
check "the paused owner's process is gone" bash -c "! kill -0 ${PID[$o]} 2>/dev/null"
start "$o"
sleep 1

# PostgreSQL itself goes away and comes back under load.
# The owner retries its commits meanwhile; an outage longer than its lease costs the lease
# (it exits, and whichever server gets the lease next serves).
bash "$PGS" restart "$PGDIR" >/dev/null
for _ in $(seq 1 150); do
  o=$(owner)
  [ -n "$o" ] && [ -f "$WORK/$o.ports" ] && kill -0 "${PID[$o]}" 2>/dev/null && break
  sleep 0.1
done
check "a server owns the work and serves after PostgreSQL restarted" [ -n "$o" ]
# Through PgBouncer a commit may instead wait inside PgBouncer until PostgreSQL is back,
# without an error reaching drover, so only the direct run requires the retries.
if [ "${PGBOUNCER:-0}" != 1 ]; then
  check "the owner saw the outage and retried its commits" \
    grep -q "store unavailable, retrying" "$WORK/a.log" "$WORK/b.log"
fi
for n in a b; do kill -0 "${PID[$n]}" 2>/dev/null || start "$n"; done

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
acked=$(wc -l <"$WORK/acked.ids")
echo "     acknowledged submissions: $acked"
check "load was acknowledged at all" [ "$acked" -gt 100 ]
psql -c "SELECT id, state FROM tasks UNION ALL SELECT id, state FROM task_history" |
  tr '|' ' ' | sort -u >"$WORK/stored"
missing=$(cut -d' ' -f1 "$WORK/stored" | sort -u | comm -23 "$WORK/acked.ids" - | wc -l)
check "every acknowledged submission is in PostgreSQL ($missing missing)" [ "$missing" = 0 ]
not_done=$(awk '$2 != 5 {print $1}' "$WORK/stored" | sort -u | comm -12 "$WORK/acked.ids" - | wc -l)
check "every acknowledged submission succeeded ($not_done did not)" [ "$not_done" = 0 ]
dups=$(psql -c "SELECT count(*) FROM (SELECT id FROM task_history GROUP BY id HAVING count(*) > 1) d")
check "no task finished twice ($dups did)" [ "$dups" = 0 ]
worst=$(awk '/kill -9/ {print $3}' "$WORK/failover" | sort -n | tail -1)
echo "     slowest takeover after kill -9: $worst s (lease ttl $TTL)"
check "every takeover after kill -9 took under TTL + 3 s" \
  python3 -c "import sys; sys.exit(0 if $worst < $(echo "$TTL" | tr -d s) + 3 else 1)"
finish
