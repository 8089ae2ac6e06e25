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
source "$(dirname "$0")/pg_lib.sh"
HOLD=${HOLD:-6}

pg_start
PROXY_PORT=$(free_port)
python3 "$HERE/tcp_proxy.py" "$PROXY_PORT" "$(cat "$PGDIR/port")" "$WORK/proxy.pid" &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -f "$WORK/proxy.pid" ] && break; sleep 0.05; done
PROXY=$(cat "$WORK/proxy.pid")
SERVE_URL="postgresql://postgres@127.0.0.1:$PROXY_PORT/drover"

start a
for _ in $(seq 1 250); do [ -f "$WORK/a.ports" ] && break; sleep 0.02; done
start b
for i in 1 2; do start_agent "w$i" crash 4 "$AGENT"; done
start_loader crash
# The servers elect an owner and the loader connects first: on a busy machine that takes a
# few seconds, so wait for the first acknowledgement rather than a fixed time.
for _ in $(seq 1 300); do [ "$(acked)" -gt 0 ] && break; sleep 0.1; done
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
restart_dead
o=$(serving 20)
check "a server owns the work and serves once the path is back" [ -n "$o" ]
before=$(acked)
sleep 1.5
check "submissions are acknowledged again after the stall" [ "$(acked)" -gt "$before" ]

stop_loader_and_drain
pg_final_checks
finish
