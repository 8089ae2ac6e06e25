#!/usr/bin/env bash
# Auth against the real binary over loopback (docs/security.md): the first start's admin
# token file, tokens created, revoked and expired, tenant isolation from the CLI and HTTP,
# the audit log (one record per state change and per refusal, with the right principal,
# surviving kill -9 and a restart), the agent's token kept from its tasks, and --auth off.
source "$(dirname "$0")/lib.sh"

cat >"$WORK/auth.json" <<'JSON'
{"auth": {"hide_payloads_from_viewers": ["team-a"]},
 "tenants": {"noisy": {"max_submits_per_second": 1, "submit_burst": 2},
             "*": {"max_outstanding": 1000}}}
JSON
start_server --config "$WORK/auth.json"
check "the first start wrote the admin token, readable by its owner only" \
  bash -c "[ \"\$(stat -c %a '$WORK/data/admin.token')\" = 600 ]"
check "whoami: the admin on every tenant" contains "$("$DROVER" whoami)" "admin@*"

sub=$("$DROVER" token create team-a-ci --role submitter@team-a 2>/dev/null)
view=$("$DROVER" token create team-a-view --role viewer@team-a 2>/dev/null)
check "a created token is printed once, as drv_<id>_<secret>" bash -c "[[ '$sub' =~ ^drv_[0-9a-f]{12}_[0-9a-f]{64}$ ]]"
check "drover token ls never shows a secret" bash -c "! '$DROVER' token ls | grep -q '${sub:17}'"

as() { local t=$1; shift; DROVER_TOKEN_FILE= DROVER_TOKEN="$t" "$DROVER" "$@"; }
id_a=$(as "$sub" submit -q --type t --tenant team-a --payload a)
check "a submitter submits in its tenant" [ -n "$id_a" ]
out=$(as "$sub" submit --type t --tenant team-b 2>&1 || true)
check "...and not in another" contains "$out" "may not submit in tenant \"team-b\""
out=$(as "$sub" submit --type t --tenant Team-A 2>&1 || true)
check "...nor in one whose name differs only in case" contains "$out" "may not submit in tenant \"Team-A\""
id_b=$("$DROVER" submit -q --type t --tenant team-b --payload b)
out=$(as "$sub" get "$id_b" 2>&1 || true)
check "another tenant's task is not found, worded as an unknown id" contains "$out" "id: task $id_b not found"
check "a listing shows the caller's tenant only" bash -c "as() { DROVER_TOKEN_FILE= DROVER_TOKEN=\"\$1\" '$DROVER' ls; }; out=\$(as '$sub'); grep -q team-a <<<\"\$out\" && ! grep -q team-b <<<\"\$out\""
out=$(as "$view" cancel "$id_a" 2>&1 || true)
check "a viewer cannot cancel" contains "$out" "may not cancel"
check "a hidden tenant's payload is kept from its viewers" bash -c "DROVER_TOKEN_FILE= DROVER_TOKEN='$view' '$DROVER' get --json '$id_a' | grep -q contents_hidden && ! DROVER_TOKEN_FILE= DROVER_TOKEN='$view' '$DROVER' get --json '$id_a' | grep -q '\"payload\"'"
check "...not from its submitters" bash -c "DROVER_TOKEN_FILE= DROVER_TOKEN='$sub' '$DROVER' get --json '$id_a' | grep -q '\"payload\"'"

# Quotas: a tenant past its rate is refused on its own, with a retry-after.
"$DROVER" submit -q --type t --tenant noisy >/dev/null
"$DROVER" submit -q --type t --tenant noisy >/dev/null
out=$("$DROVER" submit --type t --tenant noisy 2>&1 || true)
check "past its rate a tenant is refused, naming its quota" contains "$out" "tenant \"noisy\" may submit 1 tasks/s (tenants.noisy.max_submits_per_second)"
check "...with a retry-after" contains "$out" "the server suggests retrying after"
check "...and the others are not" bash -c "'$DROVER' submit -q --type t --tenant calm >/dev/null"
hdrs=$(curl -s -D - -o "$WORK/body" -XPOST "$HTTP/v1/tasks" -H 'Content-Type: application/json' -d '{"task":{"type":"t","tenant":"noisy"}}')
check "over HTTP: 429 with Retry-After" bash -c "grep -q '^HTTP/1.1 429' <<<'$hdrs' && grep -qi '^Retry-After: ' <<<'$hdrs'"
check "refusals are counted per listed tenant" \
  bash -c "curl -s '$HTTP/metrics' | grep -q 'drover_tenant_quota_rejected_total{tenant=\"noisy\",quota=\"rate\"} 2'"

# HTTP: the same rules.
code() { command curl -s -o "$WORK/body" -w '%{http_code}' "$@"; }
check "HTTP without a token is 401" [ "$(code "$HTTP/v1/tasks/$id_a")" = 401 ]
check "HTTP health checks need no token" [ "$(code "$HTTP/healthz")" = 200 ]
check "HTTP with the viewer's token reads its tenant" [ "$(code -H "Authorization: Bearer $view" "$HTTP/v1/tasks/$id_a")" = 200 ]
check "HTTP: another tenant's task is 404" [ "$(code -H "Authorization: Bearer $view" "$HTTP/v1/tasks/$id_b")" = 404 ]
check "HTTP: a viewer's submission is 403" \
  [ "$(code -H "Authorization: Bearer $view" -XPOST "$HTTP/v1/tasks" -d '{"task":{"type":"t","tenant":"team-a"}}')" = 403 ]

# Revoked and expired tokens stop at once.
"$DROVER" token revoke team-a-view >/dev/null
out=$(as "$view" get "$id_a" 2>&1 || true)
check "a revoked token is refused at once, saying so" contains "$out" "was revoked"
short=$("$DROVER" token create short-lived --role viewer@team-a --ttl 1s 2>/dev/null)
check "a token with a TTL works until it expires" bash -c "DROVER_TOKEN_FILE= DROVER_TOKEN='$short' '$DROVER' get '$id_a' >/dev/null"
sleep 1.2
out=$(as "$short" get "$id_a" 2>&1 || true)
check "...and is refused after, saying so" contains "$out" "has expired"
out=$(as "$sub" token create evil --role admin 2>&1 || true)
check "a submitter cannot mint tokens" contains "$out" "may not manage tokens"

# The audit log: a principal's known sequence of calls, each with exactly one record.
aud=$("$DROVER" token create auditee --role submitter@team-a 2>/dev/null)
for i in 1 2 3; do as "$aud" submit -q --type t --tenant team-a >/dev/null; done
as "$aud" submit --type t --tenant team-b >/dev/null 2>&1 || true
as "$aud" stats >/dev/null 2>&1 || true
as "$aud" get "$id_a" >/dev/null  # a read: not audited
"$DROVER" audit --principal auditee --jsonl >"$WORK/audit1.jsonl"
check "each submission and each refusal left exactly one record (3 + 2)" [ "$(wc -l <"$WORK/audit1.jsonl")" = 5 ]
check "...3 allowed submissions" [ "$(grep -c '"method":"drover.v1.TaskService/SubmitTask".*"allowed":true' "$WORK/audit1.jsonl")" = 3 ]
check "...2 refusals, each saying why" [ "$(grep -c '"reason":".*may not' "$WORK/audit1.jsonl")" = 2 ]
check "...with the token, the peer, the user agent and the tenant" \
  bash -c "head -1 '$WORK/audit1.jsonl' | grep -q '\"credential\":\"token drv_' && head -1 '$WORK/audit1.jsonl' | grep -q '\"peer\":\"ipv4:127.0.0.1' && head -1 '$WORK/audit1.jsonl' | grep -q '\"user_agent\":\"grpc-c++' && head -1 '$WORK/audit1.jsonl' | grep -q '\"tenant\":\"team-a\"'"
check "...and no payload" bash -c "! grep -q payload '$WORK/audit1.jsonl'"
command curl -s "$HTTP/v1/stats" -H "Authorization: Bearer drv_000000000000_$(printf '0%.0s' $(seq 64))" >/dev/null
check "an unknown token's refusal is recorded with the token id, no principal" \
  contains "$("$DROVER" audit --jsonl | tail -1)" '"credential":"token drv_000000000000"'
total=$("$DROVER" audit --limit 0 --jsonl | wc -l)

# kill -9 and a restart: the records, and the tokens, are still there.
kill -9 "$SERVER_PID"
wait "$SERVER_PID" 2>/dev/null || true
start_server
"$DROVER" audit --principal auditee --jsonl >"$WORK/audit2.jsonl"
check "audit records survive kill -9 and a restart" cmp -s "$WORK/audit1.jsonl" "$WORK/audit2.jsonl"
check "...all of them" [ "$("$DROVER" audit --limit 0 --jsonl | wc -l)" -ge "$total" ]
check "tokens survive too" bash -c "DROVER_TOKEN_FILE= DROVER_TOKEN='$sub' '$DROVER' get '$id_a' >/dev/null"
check "the revoked one stays revoked" contains "$(as "$view" get "$id_a" 2>&1 || true)" "was revoked"
check "the restart did not make another admin token" \
  [ "$("$DROVER" token ls | grep -c '^drv_.*admin-')" = 1 ]
check "drover audit filters by tenant" bash -c "'$DROVER' audit --tenant team-b --jsonl | grep -q . && ! '$DROVER' audit --tenant team-b --jsonl | grep -v '\"tenant\":\"team-b\"' | grep -q ."

# The agent's token never reaches its tasks.
"$DROVER" submit -q --type envcheck >/dev/null
start_agent env envcheck 1 sh -c 'env | grep -c "^DROVER_TOKEN" || true'
for _ in $(seq 1 100); do "$DROVER" ls --state succeeded --type envcheck | grep -q envcheck && break; sleep 0.1; done
eid=$("$DROVER" ls --state succeeded --type envcheck | awk '/envcheck/ {print $1; exit}')
check "a task's command does not see the agent's token" contains "$("$DROVER" get "$eid")" "result: 0"

# Auth off: development only, loopback only, still audited.
"$DROVER" serve --auth off --data-dir "$WORK/open" --grpc-listen 127.0.0.1:0 --http-listen off \
  --port-file "$WORK/open-ports" >>"$WORK/open.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 1 100); do [ -f "$WORK/open-ports" ] && break; sleep 0.05; done
op="127.0.0.1:$(cut -d' ' -f1 "$WORK/open-ports")"
check "auth off says so at start" grep -q "AUTH IS OFF" "$WORK/open.log"
check "auth off: no token needed" bash -c "DROVER_TOKEN_FILE= '$DROVER' --server '$op' submit -q --type t >/dev/null"
check "auth off: state changes are still audited, as anonymous" \
  contains "$(DROVER_TOKEN_FILE= "$DROVER" --server "$op" audit --jsonl)" '"principal":"anonymous (auth off)"'
finish
