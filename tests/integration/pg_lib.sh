# Helpers of the PostgreSQL integration tests (postgres.sh, postgres_faults.sh), on top of
# lib.sh: a throwaway PostgreSQL, two drover servers "a" and "b" on it (an owner and a
# standby), and the checks every such run ends with. Source after lib.sh.
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PGS="$ROOT/scripts/pg-test-server.sh"
AGENT="$HERE/agents/record.sh"
TTL=${TTL:-2s}
declare -A PORT PID

# pg_start: starts PostgreSQL (fsync off: the drover side is what is tested) outside $WORK,
# which the postgres user cannot enter; sets PGDIR, URL and SERVE_URL (what the servers use;
# callers may point it at a proxy), and stops it on exit.
pg_start() {
  PGDIR=/tmp/drover-pg-it.$$
  PG_FSYNC=off bash "$PGS" start "$PGDIR" >/dev/null
  PG_STOP='bash "$PGS" stop "$PGDIR" >/dev/null 2>&1 || true'
  trap "$PG_STOP; cleanup" EXIT
  URL=$(cat "$PGDIR/dsn")
  SERVE_URL=$URL
  echo '{"lease_ttl_ms": 3000, "defaults": {"backoff_base_ms": 50, "backoff_cap_ms": 500}}' >"$WORK/config.json"
  PORT[a]=$(free_port)
  PORT[b]=$(free_port)
  export DROVER_SERVER="127.0.0.1:${PORT[a]},127.0.0.1:${PORT[b]}"
  # record.sh (the agents) writes its lease records here; start_loader its acknowledgements.
  export RECORD_DIR="$WORK/history"
  mkdir -p "$RECORD_DIR"
  # Server a starts first in every run: its first start writes the admin token (the tokens
  # live in the shared store, so b accepts it too).
  export DROVER_TOKEN_FILE="$WORK/a/admin.token"
}
psql() { command psql -X -q -At "$URL" "$@"; }

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
# serving SECONDS: waits for a live owner that serves; prints it ("" if none came).
serving() {
  local o=""
  for _ in $(seq 1 $(($1 * 10))); do
    o=$(owner)
    [ -n "$o" ] && [ -f "$WORK/$o.ports" ] && kill -0 "${PID[$o]}" 2>/dev/null && break
    o=""
    sleep 0.1
  done
  echo "$o"
}
# Restarts whichever of a and b is not running.
restart_dead() { for n in a b; do kill -0 "${PID[$n]}" 2>/dev/null || start "$n"; done; }
acked() { grep -cE '^[0-9]+$' "$WORK/acked" || true; }

# pg_final_checks: after stop_loader_and_drain, with the agents w1 and w2: the history checker,
# then the same from the database's side (every acknowledged task stored and SUCCEEDED, none
# finished twice).
pg_final_checks() {
  check "nothing outstanding after the drain" [ "$OUTSTANDING" = 0 ]
  check "the history checks out (history_check.py)" python3 "$HERE/history_check.py" \
    "$RECORD_DIR" --agent-log "$WORK/agent-w1.log" --agent-log "$WORK/agent-w2.log" \
    --drover "$DROVER" --expect-state SUCCEEDED
  sort -u "$WORK/acked" >"$WORK/acked.ids"
  echo "     acknowledged submissions: $(wc -l <"$WORK/acked.ids")"
  check "load was acknowledged at all" [ "$(wc -l <"$WORK/acked.ids")" -gt 100 ]
  psql -c "SELECT id, state FROM tasks UNION ALL SELECT id, state FROM task_history" |
    tr '|' ' ' | sort -u >"$WORK/stored"
  local missing not_done dups
  missing=$(cut -d' ' -f1 "$WORK/stored" | sort -u | comm -23 "$WORK/acked.ids" - | wc -l)
  check "every acknowledged submission is in PostgreSQL ($missing missing)" [ "$missing" = 0 ]
  not_done=$(awk '$2 != 5 {print $1}' "$WORK/stored" | sort -u | comm -12 "$WORK/acked.ids" - | wc -l)
  check "every acknowledged submission succeeded ($not_done did not)" [ "$not_done" = 0 ]
  dups=$(psql -c "SELECT count(*) FROM (SELECT id FROM task_history GROUP BY id HAVING count(*) > 1) d")
  check "no task finished twice ($dups did)" [ "$dups" = 0 ]
}
