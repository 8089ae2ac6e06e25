#!/usr/bin/env bash
# Runs a throwaway PostgreSQL 15 server for tests and benchmarks.
#
#   scripts/pg-test-server.sh start DIR     create DIR (absent or empty), initdb, start on a
#                                           free 127.0.0.1 port, create database "drover",
#                                           write the DSN to DIR/dsn and print it on stdout
#   scripts/pg-test-server.sh stop DIR      fast shutdown and remove DIR (OK if DIR is absent)
#   scripts/pg-test-server.sh restart DIR   fast shutdown + start again, same port and data
#   scripts/pg-test-server.sh dsn DIR       print the DSN
#
# Layout of DIR: data/ (PGDATA), sock/ (unix socket), log (server log), port, dsn.
# When run as root, initdb and the server run as the "postgres" OS user (runuser).
#
# Environment (read by "start"; the settings are kept in DIR/data, so "restart" keeps them):
#   PG_FSYNC=off            turn fsync off for quick tests (default: on; synchronous_commit
#                           stays on either way)
#   PG_MAX_CONNECTIONS=N    default 200
#   PG_SHARED_BUFFERS=SIZE  default 256MB
#   PG_BIN=DIR              where initdb/pg_ctl/postgres live (default
#                           /usr/lib/postgresql/15/bin, then $PATH)
set -euo pipefail

PROG=$(basename "$0")
MARKER=.pg-test-server   # marks a DIR created by this script; "stop" only removes such dirs

die() { echo "$PROG: $*" >&2; exit 1; }
note() { echo "$PROG: $*" >&2; }

usage() {
  echo "usage: $PROG start|stop|restart|dsn DIR" >&2
  exit 2
}

find_bin() {
  local d
  for d in "${PG_BIN:-}" /usr/lib/postgresql/15/bin; do
    if [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ]; then
      echo "$d"; return 0
    fi
  done
  if command -v initdb >/dev/null 2>&1 && command -v pg_ctl >/dev/null 2>&1; then
    dirname "$(command -v pg_ctl)"; return 0
  fi
  die "initdb/pg_ctl not found (looked in \${PG_BIN}, /usr/lib/postgresql/15/bin and \$PATH);" \
      "install PostgreSQL 15 with: apt-get install postgresql-15"
}

IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

# Runs a command as the user that owns the cluster, from "/" so that an unreadable current
# directory (e.g. /root) does not upset the PostgreSQL tools.
as_pg() {
  if [ "$IS_ROOT" = 1 ]; then
    (cd / && runuser -u postgres -- "$@")
  else
    (cd / && "$@")
  fi
}

free_port() {
  if command -v python3 >/dev/null 2>&1; then
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])' \
      && return 0
  fi
  # Fallback: random ports until one refuses a connection (nothing is listening there).
  local p
  for _ in $(seq 1 200); do
    p=$(( 20000 + RANDOM % 30000 ))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      echo "$p"; return 0
    fi
  done
  die "could not find a free TCP port on 127.0.0.1"
}

write_conf() {   # DIR PORT
  local dir=$1 port=$2
  local fsync=on
  case "${PG_FSYNC:-on}" in
    off|0|false|no) fsync=off ;;
    on|1|true|yes) fsync=on ;;
    *) die "PG_FSYNC must be on or off (got '${PG_FSYNC}')" ;;
  esac
  # A separate file (included from postgresql.conf) so the port can be rewritten on retry.
  cat >"$dir/data/pg-test-server.conf" <<EOF
# Written by $PROG; included from postgresql.conf.
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/sock'
max_connections = ${PG_MAX_CONNECTIONS:-200}
shared_buffers = '${PG_SHARED_BUFFERS:-256MB}'
fsync = $fsync
synchronous_commit = on
wal_level = replica
max_wal_size = '2GB'
checkpoint_timeout = '15min'
huge_pages = off
logging_collector = off
log_line_prefix = '%m [%p] '
log_min_messages = warning
log_checkpoints = off
EOF
  if [ "$IS_ROOT" = 1 ]; then chown postgres:postgres "$dir/data/pg-test-server.conf"; fi
}

cmd_start() {
  local dir=$1 bin
  bin=$(find_bin)
  if [ -e "$dir" ]; then
    [ -d "$dir" ] || die "$dir exists and is not a directory"
    [ -z "$(ls -A "$dir")" ] || die "$dir is not empty (use a new directory, or '$PROG stop $dir' first)"
  fi
  mkdir -p "$dir"
  # The unix socket path (DIR/sock/.s.PGSQL.NNNNN) must fit in sun_path (107 bytes).
  [ "${#dir}" -le 80 ] || die "DIR path too long for a unix socket directory (max 80 chars): $dir"
  touch "$dir/$MARKER"
  mkdir -p "$dir/data" "$dir/sock"
  chmod 700 "$dir/data"
  if [ "$IS_ROOT" = 1 ]; then
    id postgres >/dev/null 2>&1 || die "running as root but there is no 'postgres' OS user" \
      "(apt-get install postgresql-15 creates it)"
    chown -R postgres:postgres "$dir"
    runuser -u postgres -- test -w "$dir" ||
      die "user postgres cannot write to $dir (is a parent directory unreadable, e.g. /root?)"
  fi

  local locale=C
  if locale -a 2>/dev/null | grep -qix 'c\.utf-\?8'; then locale=C.UTF-8; fi
  if ! as_pg "$bin/initdb" -D "$dir/data" --auth=trust -U postgres --encoding=UTF8 \
      --locale="$locale" --no-sync >"$dir/initdb.log" 2>&1; then
    cat "$dir/initdb.log" >&2
    die "initdb failed (output above, also in $dir/initdb.log)"
  fi
  echo "include_if_exists = 'pg-test-server.conf'" >>"$dir/data/postgresql.conf"

  local port started=0
  for _ in 1 2 3 4 5; do
    port=$(free_port)
    write_conf "$dir" "$port"
    if as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null 2>&1; then
      started=1; break
    fi
    if grep -q 'could not bind\|Address already in use' "$dir/log" 2>/dev/null; then
      note "port $port was taken, retrying with another port"
      continue
    fi
    break
  done
  if [ "$started" != 1 ]; then
    tail -n 30 "$dir/log" >&2 2>/dev/null || true
    die "server failed to start (log: $dir/log)"
  fi

  "$bin/createdb" -h 127.0.0.1 -p "$port" -U postgres drover 2>"$dir/createdb.log" ||
    { cat "$dir/createdb.log" >&2; die "createdb drover failed"; }
  rm -f "$dir/createdb.log"
  echo "$port" >"$dir/port"
  local dsn="postgresql://postgres@127.0.0.1:$port/drover"
  echo "$dsn" >"$dir/dsn"
  echo "$dsn"
}

cmd_stop() {
  local dir=$1
  [ -e "$dir" ] || return 0
  [ -d "$dir" ] || die "$dir is not a directory"
  if [ ! -e "$dir/$MARKER" ]; then
    # Never remove a directory this script did not create; an empty one is fine.
    [ -z "$(ls -A "$dir")" ] || die "$dir was not created by $PROG (no $MARKER); not removing it"
    rmdir "$dir"
    return 0
  fi
  if [ -f "$dir/data/postmaster.pid" ]; then
    local bin
    bin=$(find_bin)
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      { "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1 &&
        die "pg_ctl stop failed for $dir/data (log: $dir/log)"; }
  fi
  rm -rf "$dir"
}

cmd_restart() {
  local dir=$1 bin
  if [ ! -e "$dir/$MARKER" ] || [ ! -f "$dir/data/PG_VERSION" ]; then
    die "$dir is not a server created by '$PROG start'"
  fi
  bin=$(find_bin)
  if [ -f "$dir/data/postmaster.pid" ]; then
    as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w -t 60 stop >/dev/null 2>&1 ||
      note "pg_ctl stop reported an error; starting anyway"
  fi
  as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -t 60 start >/dev/null 2>&1 ||
    { tail -n 30 "$dir/log" >&2 2>/dev/null || true; die "server failed to restart (log: $dir/log)"; }
}

cmd_dsn() {
  local dir=$1
  [ -f "$dir/dsn" ] || die "no DSN in $dir (not started with '$PROG start'?)"
  cat "$dir/dsn"
}

[ $# -eq 2 ] || usage
CMD=$1
DIR=$(realpath -m -- "$2")
[ "$DIR" != / ] || die "refusing to use / as DIR"

case "$CMD" in
  start) cmd_start "$DIR" ;;
  stop) cmd_stop "$DIR" ;;
  restart) cmd_restart "$DIR" ;;
  dsn) cmd_dsn "$DIR" ;;
  *) usage ;;
esac
