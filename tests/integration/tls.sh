#!/usr/bin/env bash
# TLS and mTLS against the real binary (docs/security.md#tls), gRPC and HTTP alike, with
# certificates made here by the openssl command: plaintext refused; a client with no
# certificate, one from another CA, an expired one, one whose name maps to no principal, and
# a valid one; a server name that does not match; the certificate reloaded while serving;
# a client certificate as a principal; pool agents connecting over TLS; drover certs dev.
source "$(dirname "$0")/lib.sh"
# A failing setup command says which, with openssl's own words (set -e would end quietly).
trap 'echo "tls.sh: line $LINENO: $BASH_COMMAND failed (exit $?)"; cat "$WORK/openssl.log" 2>/dev/null | tail -20; FAILS=$((FAILS + 1))' ERR
C="$WORK/certs"
mkdir -p "$C"
cd "$C"
ossl() { openssl "$@" 2>>"$WORK/openssl.log"; }
key() { ossl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1"; }
ca() {  # ca NAME
  key "$1.key"
  ossl req -x509 -new -key "$1.key" -subj "/CN=$1" -days 30 -out "$1.pem" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}
leaf() {  # leaf NAME CN CA EXTFILE_LINES...
  local name=$1 cn=$2 ca=$3
  shift 3
  key "$name.key"
  ossl req -new -key "$name.key" -subj "/CN=$cn" -out "$name.csr"
  printf '%s\n' "$@" >"$name.ext"
  ossl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial -days 30 \
    -extfile "$name.ext" -out "$name.pem"
}
ca ca1
ca ca2
SERVER_EXT=("subjectAltName=DNS:localhost,IP:127.0.0.1" "extendedKeyUsage=serverAuth,clientAuth")
leaf server localhost ca1 "${SERVER_EXT[@]}"
leaf server2 localhost ca1 "${SERVER_EXT[@]}"
leaf client ci-bot ca1 "extendedKeyUsage=clientAuth"
leaf stranger stranger ca1 "extendedKeyUsage=clientAuth"
leaf foreign ci-bot ca2 "extendedKeyUsage=clientAuth"
# An expired client certificate: `openssl ca` can date one in the past.
mkdir -p db && : >db/index.txt && echo 01 >db/serial
cat >ca.cnf <<CNF
[ca]
default_ca = c
[c]
dir = $C/db
database = \$dir/index.txt
serial = \$dir/serial
new_certs_dir = \$dir
default_md = sha256
policy = p
copy_extensions = none
[p]
commonName = supplied
CNF
key expired.key
ossl req -new -key expired.key -subj "/CN=ci-bot" -out expired.csr
ossl ca -config ca.cnf -batch -cert ca1.pem -keyfile ca1.key -in expired.csr -out expired.pem \
  -startdate 20200101000000Z -enddate 20200201000000Z
cd - >/dev/null
check "the test made its certificates (openssl)" bash -c "[ -s '$C/server.pem' ] && [ -s '$C/expired.pem' ] && [ -s '$C/foreign.pem' ]"

cat >"$WORK/tls.json" <<JSON
{"tls": {"cert_file": "$C/live.pem", "key_file": "$C/live.key", "client_ca_file": "$C/ca1.pem",
         "client_certs": "request", "reload_interval_ms": 1000},
 "auth": {"certificates": {"ci-bot": {"grants": ["viewer"]}}},
 "pools": [{"name": "p", "types": ["echo"], "command": ["sh", "-c", "cat"], "min": 1, "max": 1,
            "sync_period_ms": 500}]}
JSON
cp "$C/server.pem" "$C/live.pem"
cp "$C/server.key" "$C/live.key"
start_server --config "$WORK/tls.json"
H="https://127.0.0.1:$HTTP_PORT"
tok=$(cat "$WORK/data/admin.token")
run() { timeout 20 "$DROVER" "$@" 2>&1; }
tlsrun() { DROVER_CA_FILE="$C/ca1.pem" run "$@"; }
# With "request", a token is enough; a certificate, when presented, must verify.
check "gRPC in plaintext is refused" bash -c "! timeout 20 '$DROVER' stats >/dev/null 2>&1"
check "...and the CLI says TLS may be needed" contains "$(run stats || true)" "needs --ca-file"
check "HTTP in plaintext is refused" bash -c "! command curl -sf 'http://127.0.0.1:$HTTP_PORT/healthz' >/dev/null"
check "gRPC over TLS with a token" contains "$(tlsrun stats)" "outstanding 0"
check "HTTPS with a token" bash -c "command curl -sf --cacert '$C/ca1.pem' -H 'Authorization: Bearer $tok' '$H/v1/stats' | grep -q capacity"
out=$(DROVER_TLS_SERVER_NAME=other.example tlsrun stats || true)
check "a server name the certificate does not carry is refused" bash -c "! grep -q outstanding <<<'$out'"
check "a server certificate from another CA is refused" bash -c "! DROVER_CA_FILE='$C/ca2.pem' timeout 20 '$DROVER' stats >/dev/null 2>&1"

# Client certificates: the valid one is a principal (ci-bot, a viewer); others are refused.
cert() { DROVER_TOKEN= DROVER_TOKEN_FILE=/dev/null DROVER_CA_FILE="$C/ca1.pem" DROVER_CERT_FILE="$C/$1.pem" DROVER_KEY_FILE="$C/$1.key" timeout 20 "$DROVER" "${@:2}" 2>&1; }
check "gRPC: a valid client certificate is its principal" contains "$(cert client whoami)" "ci-bot (certificate CN=ci-bot): viewer@*"
check "...with the principal's roles only" contains "$(cert client submit --type t || true)" "ci-bot may not submit"
check "gRPC: a certificate from another CA is refused" bash -c "! grep -q ci-bot <<<\"\$(DROVER_TOKEN= DROVER_TOKEN_FILE=/dev/null DROVER_CA_FILE='$C/ca1.pem' DROVER_CERT_FILE='$C/foreign.pem' DROVER_KEY_FILE='$C/foreign.key' timeout 20 '$DROVER' whoami 2>&1)\""
check "gRPC: an expired certificate is refused" bash -c "! grep -q ci-bot <<<\"\$(DROVER_TOKEN= DROVER_TOKEN_FILE=/dev/null DROVER_CA_FILE='$C/ca1.pem' DROVER_CERT_FILE='$C/expired.pem' DROVER_KEY_FILE='$C/expired.key' timeout 20 '$DROVER' whoami 2>&1)\""
check "gRPC: a valid certificate whose name maps to no principal is refused, saying so" \
  contains "$(cert stranger whoami || true)" "certificate CN=stranger maps to no principal"
curlc() { command curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca1.pem" --cert "$C/$1.pem" --key "$C/$1.key" "$H/v1/whoami"; }
check "HTTPS: a valid client certificate is its principal" [ "$(curlc client)" = 200 ]
check "HTTPS: a certificate from another CA is refused" [ "$(curlc foreign)" != 200 ]
check "HTTPS: an expired certificate is refused" [ "$(curlc expired)" != 200 ]
check "HTTPS: an unmapped name is 401" [ "$(curlc stranger)" = 401 ]
check "HTTPS: no certificate and no token is 401" [ "$(command curl -s -o /dev/null -w '%{http_code}' --cacert "$C/ca1.pem" "$H/v1/whoami")" = 401 ]
check "the audit log names the certificate" contains "$(tlsrun audit --principal ci-bot --jsonl)" '"credential":"certificate CN=ci-bot"'

# Pool agents connect over TLS with their own token.
tlsrun submit -q --type echo --payload over-tls >/dev/null
for _ in $(seq 1 100); do tlsrun ls --state succeeded --type echo | grep -q echo && break; sleep 0.1; done
check "a pool agent ran a task over TLS" bash -c "DROVER_CA_FILE='$C/ca1.pem' '$DROVER' ls --state succeeded --type echo | grep -q echo"

# Reload: the certificate files change while serving; both ports serve the new one.
# s_client's own exit status depends on how the server closes after the stdin EOF (a reset
# makes it 1 though the handshake and certificate were fine), so only the serial it printed
# counts; an empty one fails the checks below instead of stopping the script (pipefail).
serial() {
  { echo | timeout 10 openssl s_client -connect "127.0.0.1:$1" -alpn "$2" 2>/dev/null || true; } |
    openssl x509 -noout -serial 2>/dev/null || true
}
old=$(serial "$GRPC_PORT" h2)
want=$(openssl x509 -in "$C/server2.pem" -noout -serial)
check "before the reload, gRPC serves the first certificate" [ "$old" = "$(openssl x509 -in "$C/server.pem" -noout -serial)" ]
cp "$C/server2.key" "$C/live.key.new" && cp "$C/server2.pem" "$C/live.pem.new"
mv "$C/live.key.new" "$C/live.key" && mv "$C/live.pem.new" "$C/live.pem"
for _ in $(seq 1 50); do [ "$(serial "$GRPC_PORT" h2)" = "$want" ] && [ "$(serial "$HTTP_PORT" http/1.1)" = "$want" ] && break; sleep 0.2; done
check "after the files change, gRPC serves the new certificate" [ "$(serial "$GRPC_PORT" h2)" = "$want" ]
check "...and so does HTTPS" [ "$(serial "$HTTP_PORT" http/1.1)" = "$want" ]
check "calls go on after the reload" contains "$(tlsrun stats)" "outstanding"

# "require": no certificate, no handshake.
stop_pid() { kill -TERM "$1"; wait "$1" 2>/dev/null || true; }
stop_pid "$SERVER_PID"
sed -i 's/"client_certs": "request"/"client_certs": "require"/' "$WORK/tls.json"
start_server --config "$WORK/tls.json"
check "require: a token without a client certificate is refused at the handshake" \
  bash -c "! grep -q outstanding <<<\"\$(DROVER_CA_FILE='$C/ca1.pem' timeout 20 '$DROVER' stats 2>&1)\""
check "require: HTTPS without a client certificate fails the handshake" \
  bash -c "! command curl -sf --cacert '$C/ca1.pem' -H 'Authorization: Bearer $tok' 'https://127.0.0.1:$HTTP_PORT/v1/stats' >/dev/null"
check "require: a certificate and a token" contains "$(DROVER_CA_FILE="$C/ca1.pem" DROVER_CERT_FILE="$C/client.pem" DROVER_KEY_FILE="$C/client.key" run stats)" "outstanding"

# Bad TLS settings are named; drover certs dev makes a working set.
echo '{"tls": {"cert_file": "'"$C"'/server.pem", "key_file": "'"$C"'/client.key"}}' >"$WORK/bad.json"
check "a key that does not match its certificate is named" \
  bash -c "'$DROVER' serve --config '$WORK/bad.json' --data-dir '$WORK/bad' 2>&1 | grep -q 'tls.key_file: .* does not match the certificate'"
: >"$WORK/empty.pem"
check "a certificate file without one is named" \
  bash -c "'$DROVER' serve --tls-cert '$WORK/empty.pem' --tls-key '$C/server.key' --data-dir '$WORK/bad' 2>&1 | grep -q 'tls.cert_file: .*empty.pem: no PEM certificate'"
check "a device is not read as a certificate" \
  bash -c "'$DROVER' serve --tls-cert /dev/zero --tls-key '$C/server.key' --data-dir '$WORK/bad' 2>&1 | grep -q 'tls.cert_file: /dev/zero: not a regular file'"
check "drover certs dev writes a CA, server and client certificates" \
  bash -c "'$DROVER' certs dev --out '$WORK/dev' >/dev/null && openssl verify -CAfile '$WORK/dev/ca.pem' '$WORK/dev/server.pem' '$WORK/dev/client.pem' >/dev/null"
finish
