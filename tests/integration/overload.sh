#!/usr/bin/env bash
# Overload, bounded for CI (the long run is `SECONDS_FLOOD=300 CLIENTS=128 ...`): many
# clients submit as fast as the server answers, far past what its agents complete; memory
# stays bounded, /healthz answers, agents keep completing, every refusal is a clear
# RESOURCE_EXHAUSTED with a retry-after, and nothing accepted is lost (bench/overload_bench).
source "$(dirname "$0")/lib.sh"
BIN=$(dirname "$DROVER")
start_server --capacity 5000
for i in 1 2; do start_agent "a$i" flood 4 sh -c 'cat >/dev/null'; done
sleep 1
out=$("$BIN/overload_bench" --server "$GRPC" --http "127.0.0.1:$HTTP_PORT" --pid "$SERVER_PID" \
  --clients "${CLIENTS:-48}" --seconds "${SECONDS_FLOOD:-30}" --type flood --max-rss-mib 768 2>&1) || true
echo "$out" | sed 's/^/     /'
ratio=$(grep -o '[0-9.]* x the' <<<"$out" | cut -d' ' -f1)
check "the flood offered at least 10 x what the agents completed (${ratio:-?} x)" \
  awk -v r="${ratio:-0}" 'BEGIN { exit !(r >= 10) }'
check "every refusal was RESOURCE_EXHAUSTED with a retry-after" contains "$out" "all RESOURCE_EXHAUSTED: yes, without a retry-after: 0), other errors 0"
check "/healthz answered every probe within 1 s" contains "$out" ", 0 failed or over 1 s"
check "nothing accepted was lost" contains "$out" "accepted tasks lost 0, not succeeded after the drain 0"
check "all checks of the run held (memory bound, completions in every window)" contains "$out" "every check held"
check "the server still serves after the flood" contains "$(curl -s "$HTTP/readyz")" "SERVING"
finish
