#!/bin/sh
# Test agent for the crash test: takes a moment, then answers with the task id.
cat >/dev/null
sleep 0.0$(( $$ % 5 ))
printf 'done-%s' "$DROVER_TASK_ID"
