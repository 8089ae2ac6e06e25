#!/usr/bin/env bash
# The dashboard (docs/dashboard.md) through the real binary: its assets are served from the
# binary (page paths answer index.html, with a content security policy; hashed assets are
# immutable and gzip-compressed), sign-in sets an HttpOnly SameSite=Strict session cookie
# that authenticates reads, writes through the cookie need Sec-Fetch-Site: same-origin, the
# push stream says what changed, the stats series fills, the task filters it uses work and
# refuse bad values naming the field. Then the pages themselves in headless Chromium
# (tests/browser/dashboard.mjs, playwright-core), against real agents, with screenshots in
# $DASHBOARD_ARTIFACTS (default: artifacts/dashboard beside the binary).
source "$(dirname "$0")/lib.sh"
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
AGENT="$(cd "$(dirname "$0")" && pwd)/agents/transform.sh"
ARTIFACTS=${DASHBOARD_ARTIFACTS:-$(dirname "$DROVER")/artifacts/dashboard}
mkdir -p "$ARTIFACTS"
cat >"$WORK/config.json" <<JSON
{"events": {"tasks": "all"},
 "pools": [{"name": "echo-pool", "types": ["echo"], "command": ["sh", "-c", "cat"], "min": 1, "max": 3,
            "sync_period_ms": 500}]}
JSON
start_server --config "$WORK/config.json"
TOKEN=$(cat "$DROVER_TOKEN_FILE")
C() { command curl -s "$@"; }  # without the token

# Assets.
C -D "$WORK/index.h" -o "$WORK/index.html" "$HTTP/"
check "/ serves the dashboard's page" grep -q '<script' "$WORK/index.html"
check "with a content security policy" grep -qi "^content-security-policy: default-src 'self'" "$WORK/index.h"
check "a page path answers the same page" bash -c "command curl -s '$HTTP/tasks/42' | cmp -s - '$WORK/index.html'"
asset=$(grep -o '/assets/[^"]*\.js' "$WORK/index.html" | head -1)
C -D "$WORK/asset.h" -o /dev/null -H 'Accept-Encoding: gzip' "$HTTP$asset"
check "hashed assets are immutable" grep -qi '^cache-control: public, max-age=31536000, immutable' "$WORK/asset.h"
check "and gzip-compressed when asked" grep -qi '^content-encoding: gzip' "$WORK/asset.h"
etag=$(grep -i '^etag:' "$WORK/asset.h" | cut -d' ' -f2 | tr -d '\r')
check "a known ETag answers 304" bash -c "[ \"\$(command curl -s -o /dev/null -w '%{http_code}' -H 'If-None-Match: $etag' '$HTTP$asset')\" = 304 ]"
check "an unknown asset is 404 naming the path" contains "$(C "$HTTP/assets/nope.js")" "the dashboard has no file /assets/nope.js"
check "an unknown path is still the API's 404" contains "$(C "$HTTP/nowhere")" "no route for GET /nowhere"

# Sign-in and the session cookie.
check "the API refuses a browser with no session" contains "$(C "$HTTP/v1/whoami")" "UNAUTHENTICATED"
check "a bad token does not sign in" contains "$(C -X POST -d '{"token":"drv_nope_nope"}' "$HTTP/v1/session")" "UNAUTHENTICATED"
check "no token at all is refused" contains "$(C -X POST -d "{}" "$HTTP/v1/session")" "UNAUTHENTICATED"
C -D "$WORK/signin.h" -o "$WORK/signin.json" -X POST -d "{\"token\":\"$TOKEN\"}" "$HTTP/v1/session"
check "signing in answers who" contains "$(cat "$WORK/signin.json")" '"role":"ROLE_ADMIN"'
check "and sets an HttpOnly SameSite=Strict cookie" grep -qi '^set-cookie: drover_session=.*; Path=/; HttpOnly; SameSite=Strict; Max-Age=43200' "$WORK/signin.h"
COOKIE="drover_session=$TOKEN"
check "the cookie authenticates reads" contains "$(C -b "$COOKIE" "$HTTP/v1/stats")" '"store"'
never=$("$DROVER" submit -q --type never --payload x)
check "a write through the cookie without Sec-Fetch-Site is refused" contains \
  "$(C -b "$COOKIE" -X POST -d '{}' "$HTTP/v1/tasks/$never:cancel")" "Sec-Fetch-Site: same-origin"
check "so is one from another site" contains \
  "$(C -b "$COOKIE" -H 'Sec-Fetch-Site: cross-site' -X POST -d '{}' "$HTTP/v1/tasks/$never:cancel")" "PERMISSION_DENIED"
check "the refusal is audited" bash -c "'$DROVER' audit --jsonl | grep -q 'Sec-Fetch-Site'"
check "a same-origin write goes through" contains \
  "$(C -b "$COOKIE" -H 'Sec-Fetch-Site: same-origin' -X POST -d '{}' "$HTTP/v1/tasks/$never:cancel")" "TASK_STATE_CANCELED"
check "the sign-in is audited" bash -c "'$DROVER' audit --jsonl | grep -q 'http/SignIn'"
C -D "$WORK/signout.h" -o /dev/null -X POST -d '{}' "$HTTP/v1/session:end"
check "signing out clears the cookie" grep -qi '^set-cookie: drover_session=; .*Max-Age=0' "$WORK/signout.h"

# The push stream.
check "a bad stream interval is refused naming the field" contains "$(C -b "$COOKIE" "$HTTP/v1/stream?interval_ms=5")" "interval_ms: must be 250 to 10000"
C -N -b "$COOKIE" --max-time 4 "$HTTP/v1/stream?interval_ms=250" >"$WORK/stream.txt" &
STREAM=$!
sleep 1
start_agent a1 alpha 2 "$AGENT"
ok=$("$DROVER" submit -q --type alpha --payload fine)
"$DROVER" wait --timeout 20s "$ok" >/dev/null
wait "$STREAM" 2>/dev/null || true
check "the stream says hello" grep -q '^event: hello' "$WORK/stream.txt"
check "and that tasks changed" bash -c "grep -A1 '^event: change' '$WORK/stream.txt' | grep -q '\"tasks\"'"
check "and agents" bash -c "grep -A1 '^event: change' '$WORK/stream.txt' | grep -q '\"agents\"'"

# The stats series and the task filters.
series=$(curl -s "$HTTP/v1/stats/series?window_s=600")
check "the stats series has samples" python3 -c "import json,sys; d=json.loads(sys.argv[1]); assert d['step_ms']=='5000' and len(d['samples'])>=1 and 'queue_by_priority' in d['samples'][0], d" "$series"
check "a bad series window names the field" contains "$(curl -s "$HTTP/v1/stats/series?window_s=5")" "window_s: must be"
l1=$("$DROVER" submit -q --type never --payload a --label team=red)
l2=$("$DROVER" submit -q --type never --payload b --label team=blue)
check "label filters" bash -c "curl -s '$HTTP/v1/tasks?label=team=red' | grep -q '\"id\":\"$l1\"' && ! curl -s '$HTTP/v1/tasks?label=team=red' | grep -q '\"id\":\"$l2\"'"
check "a label key alone matches any value" bash -c "[ \$(curl -s '$HTTP/v1/tasks?label=team' | grep -o '\"id\":' | wc -l) = 2 ]"
dead=$("$DROVER" submit -q --type alpha --payload poison --max-attempts 1)
"$DROVER" wait --timeout 20s "$dead" >/dev/null || true
check "error text filters" bash -c "curl -s '$HTTP/v1/tasks?error=poison' | grep -q '\"id\":\"$dead\"' && [ \$(curl -s '$HTTP/v1/tasks?error=poison' | grep -o '\"id\":' | wc -l) = 1 ]"
check "newest first" python3 -c "import json,sys; ids=[int(t['id']) for t in json.loads(sys.argv[1])['tasks']]; assert ids==sorted(ids,reverse=True) and len(ids)>3, ids" "$(curl -s "$HTTP/v1/tasks?order=newest")"
check "a newest-first page goes on from its token" python3 -c "
import json,subprocess
def get(q): return json.loads(subprocess.run(['bash','-c','curl -s \"$HTTP/v1/tasks?order=newest&page_size=2'+q+'\"'],capture_output=True,text=True).stdout)
a=get(''); b=get('&page_token='+a['next_page_token'])
ids=[int(t['id']) for t in a['tasks']+b['tasks']]
assert ids==sorted(ids,reverse=True) and len(set(ids))==4, ids"
check "a bad order names the field" contains "$(curl -s "$HTTP/v1/tasks?order=sideways")" "order: must be newest or oldest"
check "so does an overlong error filter" contains "$(curl -s "$HTTP/v1/tasks?error=$(head -c 300 /dev/zero | tr '\0' x)")" "error_contains: at most 256 bytes"
check "and drover ls takes the same filters" bash -c "'$DROVER' ls --label team=blue --newest | grep -q '^ *$l2 '"

# The pages in a real browser.
if [ "${DASHBOARD_BROWSER:-1}" = 1 ]; then
  export DROVER_URL="$HTTP" DROVER_TOKEN="$TOKEN" ARTIFACTS="$ARTIFACTS"
  export NODE_MODULES="$ROOT/web/node_modules"
  check "the browser test passes (screenshots in $ARTIFACTS)" \
    bash -c "node '$ROOT/tests/browser/dashboard.mjs' >'$WORK/browser.log' 2>&1; rc=\$?; cat '$WORK/browser.log'; exit \$rc"
fi
finish
