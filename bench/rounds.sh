# Sourced by the A/B benchmark scripts: runs `run LEVEL` (which prints one figure) for each
# level, ROUNDS times with the order rotating (the machine's speed drifts between runs, so no
# level always goes first), prints each round, then each level's median and its ratio to the
# first level's.   rounds ROUNDS LABEL LEVEL...
rounds() {
  local n=$1 label=$2
  shift 2
  local levels=("$@") k=$#
  declare -A R
  for i in $(seq 0 $((n - 1))); do
    local line="round $((i + 1)):"
    for j in $(seq 0 $((k - 1))); do
      local l=${levels[$(((i + j) % k))]}
      local r
      r=$(run "$l")
      R[$l]="${R[$l]:-} $r"
      line="$line $l $r"
    done
    echo "$line tasks/s"
  done
  median() { printf '%s\n' $1 | sort -g | awk '{a[NR]=$1} END {print (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2}'; }
  local base
  base=$(median "${R[${levels[0]}]}")
  for l in "${levels[@]}"; do
    local m
    m=$(median "${R[$l]}")
    echo "median $label $l: $m tasks/s ($(awk -v a="$m" -v b="$base" 'BEGIN {printf "%.3f", a / b}') x ${levels[0]})"
  done
}
