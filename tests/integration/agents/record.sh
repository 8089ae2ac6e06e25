#!/bin/sh
# Test agent for the crash tests: takes a moment, then answers with the task id.
# With RECORD_DIR set it also records, for history_check.py, one JSON line as it starts
# (the lease: task, attempt, and the task as `drover get --json` shows it then, which while
# the lease is current holds its token, agent id, start and expiry) and one as it ends, in
# $RECORD_DIR/leases-<agent>.jsonl, <agent> being the name of the agent's --work-dir.
cat >/dev/null
if [ -n "${RECORD_DIR:-}" ]; then
  agent=$(basename "$(dirname "${DROVER_CHECKPOINT_FILE:-unknown/x}")" | tr -d '"\\')
  out="$RECORD_DIR/leases-$agent.jsonl"
  at=$(date +%s%3N)
  view=null
  if [ -n "${DROVER:-}" ]; then
    view=$(timeout 2 "$DROVER" get --json "$DROVER_TASK_ID" 2>/dev/null | tr -d '\n') || true
    case "$view" in '{'*'}') ;; *) view=null ;; esac
  fi
  line=$(printf '{"type":"lease","agent":"%s","task":%s,"attempt":%s,"at":%s,"server_view":%s}' \
    "$agent" "$DROVER_TASK_ID" "$DROVER_ATTEMPT" "$at" "$view")
  printf '%s\n' "$line" >>"$out"
fi
sleep 0.0$(( $$ % 5 ))
if [ -n "${RECORD_DIR:-}" ]; then
  printf '{"type":"done","agent":"%s","task":%s,"attempt":%s,"at":%s}\n' \
    "$agent" "$DROVER_TASK_ID" "$DROVER_ATTEMPT" "$(date +%s%3N)" >>"$out"
fi
printf 'done-%s' "$DROVER_TASK_ID"
