#!/usr/bin/env bash
# The Python SDK's figures (docs/benchmarks.md#python-sdk): a drover serve (SQLite, auth on),
# then the asyncio client submitting TASKS tasks in batches, then one Worker process
# completing them (async handler), then a quarter as many at concurrency 64, then with a
# sync handler.
#   bench/run_python_sdk.sh BIN_DIR [TASKS]
set -euo pipefail
BIN=$(cd "$1" && pwd) TASKS=${2:-200000}
HERE=$(cd "$(dirname "$0")" && pwd)
PY=/usr/bin/python3  # Debian's, with python3-grpcio and python3-protobuf
TMP=$(mktemp -d /tmp/drover-pysdk.XXXXXX)
PIDS=()
cleanup() {
  for p in "${PIDS[@]:-}"; do kill -TERM "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$TMP"
}
trap cleanup EXIT
"$BIN/drover" serve --data-dir "$TMP/data" --grpc-listen 127.0.0.1:0 --http-listen off \
  --port-file "$TMP/ports" 2>"$TMP/serve.log" &
PIDS+=("$!")
for _ in $(seq 1 200); do [ -f "$TMP/ports" ] && break; sleep 0.05; done
export DROVER_TOKEN_FILE="$TMP/data/admin.token" PYTHONPATH="$BIN/sdk/python"
ADDR=127.0.0.1:$(cut -d' ' -f1 "$TMP/ports")
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$TASKS" --type async-bench
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$TASKS" --type async-bench
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$((TASKS / 4))" --type small-bench >/dev/null
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$((TASKS / 4))" --type small-bench --concurrency 64
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$((TASKS / 4))" --type sync-bench >/dev/null
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$((TASKS / 4))" --type sync-bench --sync
