#!/usr/bin/env bash
# Installs dependencies (Debian packages) and builds drover with a CMake preset.
#   scripts/build.sh [preset]     (default: release; also dev, asan)
set -euo pipefail
cd "$(dirname "$0")/.."
PRESET=${1:-release}
bash scripts/install-deps.sh
cmake --preset "$PRESET" >/dev/null
cmake --build --preset "$PRESET" -j "$(nproc)"
