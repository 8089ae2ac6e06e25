#!/usr/bin/env bash
# What the event log costs (issue 11): engine + runtime + SQLite throughput (bench/engine_bench,
# the server's own path without the network) with task events off, notable (the default)
# and all, back to back in one run, ROUNDS times in a rotating order (the machine's speed
# drifts between runs), then the medians and their ratios to off.
#   bench/run_events.sh BIN_DIR [TASKS] [ROUNDS]
set -euo pipefail
BIN=$1 TASKS=${2:-300000} ROUNDS=${3:-5}
rate() { grep -o '= [0-9]* tasks/s' | grep -o '[0-9]*' | head -1; }
run() {
  "$BIN/engine_bench" --tasks "$TASKS" --batch 1000 --agents 16 --slots 640 \
    --db /tmp/drover-events-bench.db --events "$1" | tee -a /tmp/drover-events-bench.log | rate
}
: >/tmp/drover-events-bench.log
source "$(dirname "$0")/rounds.sh"
rounds "$ROUNDS" events.tasks off notable all
