#!/bin/sh
# Test agent for workflows: prints "<step>(<parent results, in order, comma-separated>)".
# Payload "poison" fails permanently; "sleep" runs until killed (leaving a marker on TERM).
payload=$(cat)
case "$payload" in
  poison*) echo "step $DROVER_STEP refuses" >&2; exit 1 ;;
  sleep*)
    trap 'echo "$DROVER_TASK_ID" >> "${MARKER_DIR:-/tmp}/killed"; exit 143' TERM
    while :; do sleep 0.1; done ;;
esac
out=""
for entry in $DROVER_PARENTS; do
  name=${entry%%=*}
  state=${entry#*=}
  if [ "$state" = succeeded ]; then
    part=$(cat "$DROVER_PARENTS_DIR/$name")
  else
    part="$name:$state"
  fi
  out="${out:+$out,}$part"
done
printf '%s(%s)' "${DROVER_STEP:-$DROVER_TASK_ID}" "$out"
