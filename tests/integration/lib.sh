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
}

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
