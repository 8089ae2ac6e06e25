#!/usr/bin/env bash
# ctest's fuzz.smoke: each libFuzzer target of an already built "fuzz" preset
# (build/fuzz) for SECONDS (default 30), from its seed corpus. Exits 77 (ctest: skipped)
# when the preset is not built, unless DROVER_FUZZ_REQUIRED=1 (scripts/test, CI), where a
# missing build fails.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-30}
for t in http_request config trace runner_lease; do
  if [ ! -x "build/fuzz/fuzz_$t" ]; then
    if [ "${DROVER_FUZZ_REQUIRED:-0}" = 1 ]; then
      echo "build/fuzz/fuzz_$t is missing: cmake --preset fuzz && cmake --build --preset fuzz"
      exit 1
    fi
    echo "the fuzz preset is not built (cmake --build --preset fuzz): skipped"
    exit 77
  fi
done
fails=0
mkdir -p build/fuzz/artifacts
for t in http_request config trace runner_lease; do
  work=$(mktemp -d)
  if ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
    "build/fuzz/fuzz_$t" -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 \
    -artifact_prefix="build/fuzz/artifacts/$t-" -print_final_stats=1 "$work" "fuzz/corpus/$t" \
    >"$work.log" 2>&1; then
    echo "ok   fuzz_$t: $(grep -E '^stat::number_of_executed_units' "$work.log" | awk '{print $2}') runs in ${SECONDS_EACH} s, no crash, no sanitizer report, no leak"
  else
    echo "FAIL fuzz_$t (reproducer in build/fuzz/artifacts/):"
    tail -40 "$work.log"
    fails=$((fails + 1))
  fi
  rm -rf "$work" "$work.log"
done
echo "$((4 - fails)) passed, $fails failed"
[ "$fails" = 0 ]
