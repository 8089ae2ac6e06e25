#!/usr/bin/env bash
# Installs every build and test dependency of drover from Debian 12's packages.
# Safe to run repeatedly; skips apt entirely when everything is already present.
set -euo pipefail

PACKAGES=(
  build-essential make cmake ninja-build pkg-config git
  libgrpc++-dev libprotobuf-dev protobuf-compiler protobuf-compiler-grpc
  libabsl-dev libfmt-dev libsqlite3-dev libcpp-httplib-dev libssl-dev nlohmann-json3-dev
  libjemalloc-dev libcli11-dev libgtest-dev libgmock-dev libbenchmark-dev clang-format clang openssl
  libtorch-dev libxgboost-dev libpq-dev postgresql-15 pgbouncer
  prometheus sqlite3 curl procps python3 python3-pytest python3-pip python3-venv python3-setuptools python3-grpcio python3-protobuf grpc-proto python3-jsonschema python3-yaml
  podman runc busybox-static nodejs chromium
)

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -eq 0 ]; then
  exit 0
fi
echo "installing: ${missing[*]}"
SUDO=""
[ "$(id -u)" -eq 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
