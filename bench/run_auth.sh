#!/usr/bin/env bash
# What checking a token on every call costs (issue 12): end-to-end throughput with auth
# off and on, back to back in one run, ROUNDS times alternating (the machine's speed
# drifts between runs), then the medians. BATCH (default 500) is the tasks per submission
# call: BATCH=1 makes every task its own call, each with its token checked and audited.
#   bench/run_auth.sh BIN_DIR [TASKS] [ROUNDS]
set -euo pipefail
BIN=$1 TASKS=${2:-300000} ROUNDS=${3:-5}
HERE=$(cd "$(dirname "$0")" && pwd)
declare -a OFF ON
rate() { grep -o 'load: .*= [0-9.]* tasks/s' | grep -o '[0-9.]* tasks/s' | head -1 | cut -d' ' -f1; }
run() { AUTH=$1 bash "$HERE/run_e2e.sh" "$BIN" throughput "$TASKS" 2>&1 | rate; }
for i in $(seq 1 "$ROUNDS"); do
  # The order alternates, so neither mode always runs second (after the other's shutdown).
  if [ $((i % 2)) = 1 ]; then
    off=$(run off)
    on=$(run on)
  else
    on=$(run on)
    off=$(run off)
  fi
  echo "round $i: auth off $off tasks/s, auth on $on tasks/s"
  OFF+=("$off")
  ON+=("$on")
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
m_off=$(median "${OFF[@]}")
m_on=$(median "${ON[@]}")
echo "median: auth off $m_off tasks/s, auth on $m_on tasks/s, on/off $(awk -v a="$m_on" -v b="$m_off" 'BEGIN {printf "%.3f", a / b}')"
