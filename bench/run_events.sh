#!/usr/bin/env bash
# What the event log costs (issue 11): engine + runtime + SQLite throughput (bench/engine_bench,
# the server's own path without the network) with task events off, notable (the default)
# and all, back to back in one run, ROUNDS times in a rotating order (the machine's speed
# drifts between runs), then the medians and their ratios to off.
#   bench/run_events.sh BIN_DIR [TASKS] [ROUNDS]
set -euo pipefail
BIN=$1 TASKS=${2:-300000} ROUNDS=${3:-5}
declare -A R
rate() { grep -o '= [0-9]* tasks/s' | grep -o '[0-9]*' | head -1; }
run() {
  "$BIN/engine_bench" --tasks "$TASKS" --batch 1000 --agents 16 --slots 640 \
    --db /tmp/drover-events-bench.db --events "$1" | tee -a /tmp/drover-events-bench.log | rate
}
: >/tmp/drover-events-bench.log
levels=(off notable all)
for i in $(seq 0 $((ROUNDS - 1))); do
  line="round $((i + 1)):"
  for j in 0 1 2; do
    l=${levels[$(((i + j) % 3))]}
    r=$(run "$l")
    R[$l]="${R[$l]:-} $r"
    line="$line $l $r"
  done
  echo "$line tasks/s"
done
median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
off=$(median "${R[off]}")
for l in "${levels[@]}"; do
  m=$(median "${R[$l]}")
  echo "median $l: $m tasks/s ($(awk -v a="$m" -v b="$off" 'BEGIN {printf "%.3f", a / b}') x off)"
done
