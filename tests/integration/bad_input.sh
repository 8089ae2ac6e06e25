#!/usr/bin/env bash
# Bad input gets a clear error that names the field (and the limit), and the server keeps
# serving: oversize payload, unknown priority, negative timeout, malformed JSON, unknown
# task id, a completion with a wrong lease token, unknown config keys.
source "$(dirname "$0")/lib.sh"

# A config file with an unknown key or a bad value stops start-up, naming it.
echo '{"capacity": 10, "lease_tll_ms": 5}' >"$WORK/bad.json"
out=$("$DROVER" serve --config "$WORK/bad.json" --data-dir "$WORK/x" 2>&1 || true)
check "unknown config key is named" contains "$out" "lease_tll_ms"
echo '{"shed_fraction": 1.5}' >"$WORK/bad2.json"
out=$("$DROVER" serve --config "$WORK/bad2.json" --data-dir "$WORK/x" 2>&1 || true)
check "bad config value is named" contains "$out" "shed_fraction: must be in (0, 1]"
out=$("$DROVER" serve --store tape --data-dir "$WORK/x" 2>&1 || true)
check "bad flag value is named" contains "$out" "store: 'tape' is not sqlite, memory or a postgres:// URL"

start_server
out=$("$DROVER" serve --data-dir "$WORK/data" --grpc-listen 127.0.0.1:0 --http-listen off 2>&1 || true)
check "a second server on the same data directory is refused" contains "$out" "is in use by another drover serve"
good=$("$DROVER" submit -q --type t --payload keep-me)

# gRPC through the CLI.
head -c 1100000 /dev/zero | tr '\0' a >"$WORK/big"
out=$("$DROVER" submit --type t --payload-file "$WORK/big" 2>&1 || true)
check "oversize payload names field and limit" contains "$out" "task.payload: 1100000 bytes exceeds the limit of 1048576 bytes"
out=$("$DROVER" submit --type t --priority urgent 2>&1 || true)
check "unknown priority (CLI) is named" contains "$out" "--priority: unknown value 'urgent'"
out=$("$DROVER" submit --type "bad type" 2>&1 || true)
check "bad type name is named" contains "$out" "task.type: 'bad type' must be 1 to 64 characters"
out=$("$DROVER" get 999999 2>&1 || true)
check "unknown task id" contains "$out" "task 999999 not found"

# HTTP/JSON.
code() { curl -s -o "$WORK/body" -w '%{http_code}' "$@"; }
c=$(code -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t","priority":"URGENT"}}')
check "unknown priority (HTTP) is 400 naming task.priority" bash -c "[ $c = 400 ] && grep -q 'task.priority' '$WORK/body'"
c=$(code -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t","priority":9}}')
check "out-of-range priority number is 400" bash -c "[ $c = 400 ] && grep -q 'task.priority: unknown value 9' '$WORK/body'"
c=$(code -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t","execution_timeout_ms":-5}}')
check "negative timeout is 400 naming the field" bash -c "[ $c = 400 ] && grep -q 'task.execution_timeout_ms: must be >= 0, got -5' '$WORK/body'"
c=$(code -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t",')
check "malformed JSON is 400 naming the body" bash -c "[ $c = 400 ] && grep -q '\"body: ' '$WORK/body'"
c=$(code -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t","colour":"red"}}')
check "unknown JSON field is 400 naming it" bash -c "[ $c = 400 ] && grep -q 'colour' '$WORK/body'"
c=$(code "$HTTP/v1/tasks/424242")
check "unknown task id is 404" bash -c "[ $c = 404 ] && grep -q 'task 424242 not found' '$WORK/body'"
c=$(code "$HTTP/v1/tasks?page_size=5000")
check "page size over the limit is 400" bash -c "[ $c = 400 ] && grep -q 'page_size: must be 0' '$WORK/body'"
c=$(code "$HTTP/v1/tasks?state=sleeping")
check "unknown state filter is 400" bash -c "[ $c = 400 ] && grep -q \"state: unknown value 'sleeping'\" '$WORK/body'"
c=$(code "$HTTP/v1/nothing-here")
check "unknown route is 404 with a message" bash -c "[ $c = 404 ] && grep -q 'no route for GET /v1/nothing-here' '$WORK/body'"

# A completion with a wrong lease token is refused (409) and records nothing.
reg=$(curl -s -XPOST "$HTTP/v1/agents" -d '{"types":["t"],"max_concurrency":1}')
agent=$(python3 -c 'import sys,json; print(json.loads(sys.argv[1])["agent_id"])' "$reg")
c=$(code -XPOST "$HTTP/v1/leases:complete" -d "{\"agent_id\":\"$agent\",\"task_id\":\"$good\",\"lease_token\":\"12345\",\"result\":\"\"}")
check "completion with a wrong token is 409 naming lease_token" bash -c "[ $c = 409 ] && grep -q 'lease_token: completion refused' '$WORK/body'"
c=$(code -XPOST "$HTTP/v1/agents" -d '{"types":["t"],"max_concurrency":0}')
check "agent with 0 slots is refused naming max_concurrency" bash -c "[ $c = 400 ] && grep -q 'max_concurrency: must be 1 to 1024, got 0' '$WORK/body'"

# Admission control answers 429 with Retry-After.
"$DROVER" serve --data-dir "$WORK/small" --grpc-listen 127.0.0.1:0 --http-listen "127.0.0.1:$(free_port)" \
  --capacity 10 --port-file "$WORK/small-ports" >>"$WORK/small.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -f "$WORK/small-ports" ] && break; sleep 0.05; done
shp=$(cut -d' ' -f2 "$WORK/small-ports")
sgp=$(cut -d' ' -f1 "$WORK/small-ports")
use_token_of "$WORK/small"
"$DROVER" --server "127.0.0.1:$sgp" submit -q --type t --count 9 >/dev/null
out=$("$DROVER" --server "127.0.0.1:$sgp" submit --type t 2>&1 || true)
check "at 90 % normal priority is shed" contains "$out" "load shedding: 9 of 10 outstanding"
check "at 90 % high priority is admitted" "$DROVER" --server "127.0.0.1:$sgp" submit -q --type t --priority high
hdrs=$(curl -s -D - -o "$WORK/body" -XPOST "http://127.0.0.1:$shp/v1/tasks" -d '{"task":{"type":"t","priority":"PRIORITY_CRITICAL"}}')
check "at 100 % even critical gets 429 with Retry-After" bash -c "grep -q '^HTTP/1.1 429' <<<'$hdrs' && grep -qi '^Retry-After: ' <<<'$hdrs' && grep -q 'queue full' '$WORK/body'"

use_token_of "$WORK/data"

# Auth: no token, a malformed one, a revoked one; auth off refuses a non-loopback address.
c=$(command curl -s -o "$WORK/body" -w '%{http_code}' "$HTTP/v1/stats" -H "Authorization: Bearer nope")
check "a malformed token is 401 saying so" bash -c "[ $c = 401 ] && grep -q 'malformed token' '$WORK/body'"
c=$(command curl -s -o "$WORK/body" -w '%{http_code}' "$HTTP/v1/stats" -H "Authorization: Basic Zm9vOmJhcg==")
check "a non-bearer authorization header is 401 saying so" bash -c "[ $c = 401 ] && grep -q 'not .Bearer <token>.' '$WORK/body'"
out=$(DROVER_TOKEN= DROVER_TOKEN_FILE= "$DROVER" stats 2>&1 || true)
check "the CLI without a token says how to give one" contains "$out" "give a token: DROVER_TOKEN"
out=$(DROVER_TOKEN_FILE="$WORK/none.token" "$DROVER" stats 2>&1 || true)
check "an unreadable token file is named" contains "$out" "token file $WORK/none.token: cannot read it"
out=$("$DROVER" serve --auth off --grpc-listen 0.0.0.0:0 --data-dir "$WORK/open" 2>&1 || true)
check "auth off refuses a non-loopback address" contains "$out" "grpc_listen: '0.0.0.0:0' is not a loopback address, and auth is off"
out=$("$DROVER" serve --auth maybe --data-dir "$WORK/open" 2>&1 || true)
check "a bad auth mode is named" contains "$out" "auth.mode: 'maybe' is not on or off"
out=$("$DROVER" token create x --role wizard 2>&1 || true)
check "an unknown role is named" contains "$out" "--role: unknown role 'wizard'"

# After all that, the server still serves and nothing accepted was lost.
check "server still healthy" contains "$(curl -s "$HTTP/readyz")" "SERVING"
check "the accepted task is intact" contains "$("$DROVER" get "$good")" "payload: keep-me"
# PostgreSQL: an unreachable database and an out-of-range lease TTL are named.
out=$(timeout 20 "$DROVER" serve --store postgres://postgres@127.0.0.1:1/drover --data-dir "$WORK/pgx" 2>&1 || true)
check "an unreachable PostgreSQL is named" contains "$out" "cannot connect"
out=$("$DROVER" serve --store postgres://postgres@127.0.0.1:1/drover --ownership-ttl 1s --data-dir "$WORK/pgx" 2>&1 || true)
check "a too short ownership TTL is named" contains "$out" "ownership_ttl_ms: must be 1500 to 600000"
finish
