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
source "$HERE/lib.sh"
bench_tmp pysdk
bench_serve "$BIN" --http-listen off
export PYTHONPATH="$BIN/sdk/python"
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$TASKS" --type async-bench
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$TASKS" --type async-bench
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$((TASKS / 4))" --type small-bench >/dev/null
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$((TASKS / 4))" --type small-bench --concurrency 64
"$PY" "$HERE/python_sdk_bench.py" submit --server "$ADDR" --tasks "$((TASKS / 4))" --type sync-bench >/dev/null
"$PY" "$HERE/python_sdk_bench.py" worker --server "$ADDR" --tasks "$((TASKS / 4))" --type sync-bench --sync
