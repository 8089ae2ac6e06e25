#!/usr/bin/env bash
# `drover loadtest`'s throughput scenario against bench/e2e_bench, back to back, ROUNDS
# times: the issue asks that the loadtest's fast phase report the same throughput as the
# benchmark within 10 %. Both start a server of their own (SQLite, auth on), 8 agents with
# 256 slots, batches of 500 from 4 threads.
#   bench/run_loadtest.sh BIN_DIR [TASKS] [ROUNDS]
set -euo pipefail
BIN=$1 TASKS=${2:-300000} ROUNDS=${3:-3}
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$(mktemp -d /tmp/drover-ltbench.XXXXXX)
trap 'rm -rf "$OUT"' EXIT
bench=() lt=()
for r in $(seq 1 "$ROUNDS"); do
  b=$("$HERE/run_e2e.sh" "$BIN" throughput "$TASKS" | grep -o '= [0-9]* tasks/s' | tr -dc '0-9')
  l=$("$BIN/drover" loadtest --scenario throughput --duration 2s --max-tasks "$TASKS" --quiet \
    --out "$OUT/r$r" | grep -o 'fast phase [0-9]* tasks/s' | tr -dc '0-9')
  echo "round $r: bench/e2e_bench $b tasks/s, drover loadtest $l tasks/s"
  bench+=("$b") lt+=("$l")
done
python3 - "${bench[*]}" "${lt[*]}" <<'PY'
import statistics, sys
b = [int(x) for x in sys.argv[1].split()]
l = [int(x) for x in sys.argv[2].split()]
mb, ml = statistics.median(b), statistics.median(l)
print(f"median: bench/e2e_bench {mb:.0f} tasks/s, drover loadtest {ml:.0f} tasks/s, "
      f"loadtest / bench = {ml / mb:.3f} ({'within' if abs(ml / mb - 1) <= 0.10 else 'NOT within'} 10 %)")
PY
