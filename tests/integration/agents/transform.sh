#!/bin/sh
# Test agent: result is "<type>:<payload upper-cased>". Payloads steer failures:
#   flaky*  fails retryably (exit 75) on attempt 1, then succeeds;
#   poison* always fails permanently (exit 1);
#   sleep*  runs until killed, leaving a marker when it gets SIGTERM;
#   resume* writes a checkpoint and fails retryably on attempt 1; attempt 2 answers with
#           the checkpoint it was handed.
payload=$(cat)
case "$payload" in
  resume*)
    if [ "$DROVER_ATTEMPT" = 1 ]; then echo "step-7" >"$DROVER_CHECKPOINT_FILE"; exit 75; fi
    printf 'resumed from %s' "$(cat "$DROVER_CHECKPOINT_FILE")"; exit 0 ;;
  flaky*) [ "$DROVER_ATTEMPT" = 1 ] && { echo "transient trouble" >&2; exit 75; } ;;
  poison*) echo "cannot handle $payload" >&2; exit 1 ;;
  sleep*)
    trap 'echo "$DROVER_TASK_ID" >> "${MARKER_DIR:-/tmp}/killed"; exit 143' TERM
    while :; do sleep 0.1; done ;;
esac
printf '%s:%s' "$DROVER_TASK_TYPE" "$(printf '%s' "$payload" | tr a-z A-Z)"
