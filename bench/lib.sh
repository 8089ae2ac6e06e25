# Shared by the bench/run_*.sh scripts that start a server of their own. Source it, then:
#   bench_tmp NAME          TMP (removed at exit, with every pid in PIDS stopped first)
#   bench_serve BIN FLAGS…  drover serve on loopback (port 0 for gRPC; HTTP as FLAGS say);
#                           sets SERVER (its pid), ADDR (gRPC host:port) and, with auth on,
#                           DROVER_TOKEN_FILE (the admin token it wrote)
bench_cleanup() {
  for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}

bench_tmp() {
  TMP=$(mktemp -d "/tmp/drover-$1.XXXXXX")
  PIDS=()
  trap bench_cleanup EXIT
}

bench_serve() {
  local bin=$1
  shift
  "$bin/drover" serve --data-dir "$TMP/data" --grpc-listen 127.0.0.1:0 --port-file "$TMP/ports" \
    "$@" 2>"$TMP/serve.log" &
  SERVER=$!
  PIDS+=("$SERVER")
  for _ in $(seq 1 200); do [ -f "$TMP/ports" ] && break; sleep 0.05; done
  [ -f "$TMP/ports" ] || { echo "drover serve did not start:"; tail -20 "$TMP/serve.log"; exit 1; }
  unset DROVER_TOKEN DROVER_TOKEN_FILE
  if [ -f "$TMP/data/admin.token" ]; then export DROVER_TOKEN_FILE="$TMP/data/admin.token"; fi
  ADDR=127.0.0.1:$(cut -d' ' -f1 "$TMP/ports")
}
