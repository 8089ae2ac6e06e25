# Shared helpers of the integration tests: start the real drover binary on loopback,
# wait for it, clean everything up on exit. Source it; DROVER must point at the binary.
set -euo pipefail

: "${DROVER:?set DROVER to the drover binary}"
WORK=$(mktemp -d /tmp/drover-it.XXXXXX)
PIDS=()
FAILS=0
CHECKS=0

cleanup() {
  {
    for p in "${PIDS[@]:-}"; do [ -n "$p" ] && kill -9 "$p" || true; done
    pkill -9 -f "$WORK" || true
    wait
  } 2>/dev/null
  if [ "${KEEP_WORK:-0}" = 1 ] || [ "$FAILS" != 0 ]; then
    echo "work dir kept: $WORK"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# start_server [extra serve flags...]: sets GRPC, HTTP, SERVER_PID. Reuses GRPC_PORT and
# HTTP_PORT when set, so a restarted server answers on the same addresses.
start_server() {
  GRPC_PORT=${GRPC_PORT:-$(free_port)}
  HTTP_PORT=${HTTP_PORT:-$(free_port)}
  rm -f "$WORK/ports"
  "$DROVER" serve --data-dir "$WORK/data" --grpc-listen "127.0.0.1:$GRPC_PORT" \
    --http-listen "127.0.0.1:$HTTP_PORT" --port-file "$WORK/ports" "$@" >>"$WORK/serve.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  for _ in $(seq 1 200); do
    [ -f "$WORK/ports" ] && break
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "server exited at start:"; tail -20 "$WORK/serve.log"; exit 1
    fi
    sleep 0.05
  done
  [ -f "$WORK/ports" ] || { echo "server did not start"; tail -20 "$WORK/serve.log"; exit 1; }
  GRPC="127.0.0.1:$GRPC_PORT"
  HTTP="http://127.0.0.1:$HTTP_PORT"
  export DROVER_SERVER="$GRPC"
  use_token_of "$WORK/data"
}

# use_token_of DATA_DIR: the CLI, `drover agent` and curl (below) use the admin token the
# server wrote there at its first start (docs/security.md).
use_token_of() {
  if [ -f "$1/admin.token" ]; then export DROVER_TOKEN_FILE="$1/admin.token"; fi
}

# curl with the token in use, when there is one (every API call but the health checks
# needs it).
curl() {
  if [ -n "${DROVER_TOKEN_FILE:-}" ] && [ -r "$DROVER_TOKEN_FILE" ]; then
    command curl -H "Authorization: Bearer $(cat "$DROVER_TOKEN_FILE")" "$@"
  else
    command curl "$@"
  fi
}
export -f curl  # checks run commands in `bash -c`

# start_agent NAME TYPE CONCURRENCY CMD...: runs `drover agent` in the background.
start_agent() {
  local name=$1 type=$2 conc=$3
  shift 3
  "$DROVER" agent --name "$name" --type "$type" --concurrency "$conc" --work-dir "$WORK/$name" \
    -- "$@" >>"$WORK/agent-$name.log" 2>&1 &
  PIDS+=("$!")
  eval "AGENT_PID_${name//-/_}=$!"
}

check() {  # check DESCRIPTION COMMAND...: counts a check, reports a failure
  local desc=$1
  shift
  CHECKS=$((CHECKS + 1))
  if "$@"; then
    echo "ok   $desc"
  else
    echo "FAIL $desc"
    FAILS=$((FAILS + 1))
  fi
}

contains() { grep -qF -- "$2" <<<"$1"; }

finish() {
  echo "$((CHECKS - FAILS)) passed, $FAILS failed"
  [ "$FAILS" = 0 ]
}

# start_loader TYPE: submits batches of 10 tasks of TYPE through the CLI until $WORK/stop
# exists. An acknowledged batch is recorded as its JSON reply on one line in
# $RECORD_DIR/client.jsonl (ids and idempotency keys, for history_check.py) and its ids in
# $WORK/acked; a refused one is not. Sets RECORD_DIR (default $WORK/history) and LOADER.
start_loader() {
  local type=$1
  export RECORD_DIR="${RECORD_DIR:-$WORK/history}"
  mkdir -p "$RECORD_DIR"
  : >"$RECORD_DIR/client.jsonl"
  : >"$WORK/acked"
  (
    while [ ! -f "$WORK/stop" ]; do
      if out=$("$DROVER" submit --json --type "$type" --payload p --count 10 2>>"$WORK/submit.err"); then
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
}

# stop_loader_and_drain: stops the loader, then waits (up to 2 min) until the server counts
# nothing outstanding; sets OUTSTANDING to the last count read.
stop_loader_and_drain() {
  touch "$WORK/stop"
  wait "$LOADER" 2>/dev/null || true
  for _ in $(seq 1 600); do
    OUTSTANDING=$("$DROVER" stats --json 2>/dev/null | python3 -c 'import sys,json; print(json.load(sys.stdin).get("outstanding","0"))' || echo x)
    [ "$OUTSTANDING" = 0 ] && break
    sleep 0.2
  done
}
