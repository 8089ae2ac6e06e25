#!/bin/sh
# Example agent command: "summarizes" the payload. Like a real LLM call it takes a moment
# and sometimes fails: ~12 % of attempts hit a transient error (exit 75: drover retries
# with backoff), ~5 % hit a permanent one (exit 1: dead-letter queue).
payload=$(cat)
r=$(( $(od -An -N2 -tu2 /dev/urandom) % 100 ))
sleep "0.$(( r % 6 + 2 ))"
if [ "$r" -lt 12 ]; then echo "rate limited by the model provider, try later" >&2; exit 75; fi
if [ "$r" -ge 95 ]; then echo "payload is not valid input: $payload" >&2; exit 1; fi
words=$(printf '%s' "$payload" | wc -w)
printf 'summary of "%s": %s words (attempt %s)\n' "$payload" "$words" "$DROVER_ATTEMPT"
