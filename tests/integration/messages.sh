#!/usr/bin/env bash
# Agent messages with the real binary: `drover message` and HTTP reach the connected
# agents of the target; a `drover agent` command sees them as lines of
# DROVER_MESSAGES_FILE; bad requests are refused naming the fields.
source "$(dirname "$0")/lib.sh"
LISTEN="$(cd "$(dirname "$0")" && pwd)/agents/listen.sh"
start_server
start_agent l1 listen 1 "$LISTEN"
start_agent other render 1 "$LISTEN"
id=$("$DROVER" submit -q --type listen --payload wait)
for _ in $(seq 1 100); do
  "$DROVER" get "$id" | grep -q LEASED && break
  sleep 0.1
done
out=$("$DROVER" message --type listen --topic config "reload the prompts")
check "a message to a type reaches its one connected agent" contains "$out" "pushed to 1 connected agent"
got=$("$DROVER" wait --timeout 20s "$id")
check "the running command read it from DROVER_MESSAGES_FILE" contains "$got" "config	reload the prompts"
check "a message to all agents reaches both" contains "$("$DROVER" message --all hello)" "pushed to 2"
check "a message to a type nobody serves reaches nobody, and says so" \
  contains "$("$DROVER" message --type nobody hi)" "none connected"
resp=$(curl -s -H 'Content-Type: application/json' -d '{"all": true, "topic": "t", "body": "aGk="}' "$HTTP/v1/messages")
check "HTTP: POST /v1/messages" contains "$resp" '"delivered_to"'
check "no target is refused, naming the fields" \
  contains "$("$DROVER" message x 2>&1 || true)" "agent_id, agent_type, all: give exactly one target"
check "an unknown agent is refused" contains "$("$DROVER" message --agent 77 x 2>&1 || true)" "agent 77 not found"
curl -s "$HTTP/metrics" >"$WORK/m.txt"
check "messages are counted" grep -q '^drover_agent_messages_pushed_total [1-9]' "$WORK/m.txt"
finish
