#!/bin/sh
# Example agent command: "reviews" a change. Slower than summarize, keeps a checkpoint
# (a resumed attempt starts where the last one stopped) and fails transiently ~10 % of
# the time (exit 75).
payload=$(cat)
step=$(cat "$DROVER_CHECKPOINT_FILE" 2>/dev/null || true)
step=${step:-0}
while [ "$step" -lt 3 ]; do
  sleep 0.2
  step=$((step + 1))
  echo "$step" >"$DROVER_CHECKPOINT_FILE"
  r=$(( $(od -An -N2 -tu2 /dev/urandom) % 100 ))
  if [ "$r" -lt 4 ]; then echo "reviewer lost its context at step $step" >&2; exit 75; fi
done
printf 'review of %s: looks good (3 steps, attempt %s)\n' "$payload" "$DROVER_ATTEMPT"
