#!/usr/bin/env bash
# Builds the libFuzzer targets (preset "fuzz": clang, ASan, UBSan) and runs each for
# SECONDS (default 60), starting from its seed corpus in fuzz/corpus/<target>; new inputs
# found go to build/fuzz/corpus/<target> (copy the interesting ones into fuzz/corpus).
# Exit status 1 on any crash, sanitizer report or leak (the reproducer is left in
# build/fuzz/artifacts/). The figures go on issue 12 (docs/fuzzing.md).
#   scripts/fuzz.sh [SECONDS] [TARGET...]
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}
shift || true
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(http_request config trace runner_lease)
command -v clang++ >/dev/null || { echo "clang++ is missing: apt-get install clang"; exit 1; }
cmake --preset fuzz >/dev/null
cmake --build --preset fuzz -j "$(nproc)"
mkdir -p build/fuzz/artifacts
fails=0
for t in "${TARGETS[@]}"; do
  mkdir -p "build/fuzz/corpus/$t"
  log="build/fuzz/$t.log"
  echo "== fuzz_$t for ${SECONDS_EACH}s"
  # detect_leaks: LeakSanitizer after each run; -rss_limit_mb bounds a runaway input.
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "build/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="build/fuzz/artifacts/$t-" -print_final_stats=1 \
    "build/fuzz/corpus/$t" "fuzz/corpus/$t" >"$log" 2>&1; then
    echo "   $(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}') runs, $(ls "build/fuzz/corpus/$t" | wc -l) new corpus inputs, 0 crashes"
  else
    echo "   FAILED: see $log and build/fuzz/artifacts/"
    tail -30 "$log"
    fails=$((fails + 1))
  fi
done
echo "$(( ${#TARGETS[@]} - fails )) passed, $fails failed"
[ "$fails" = 0 ]
