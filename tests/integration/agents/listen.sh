#!/bin/sh
# Test agent for agent messages: waits (up to 10 s) for a line in DROVER_MESSAGES_FILE and
# answers with the last one.
cat >/dev/null
for _ in $(seq 1 100); do
  if [ -s "$DROVER_MESSAGES_FILE" ]; then tail -1 "$DROVER_MESSAGES_FILE"; exit 0; fi
  sleep 0.1
done
echo "no message arrived" >&2
exit 75
