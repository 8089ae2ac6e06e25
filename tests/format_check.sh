#!/usr/bin/env bash
# Fails when a C++ file is not formatted with the repo's .clang-format (Google, 100 cols).
set -euo pipefail
cd "$(dirname "$0")/.."
bad=$(git ls-files '*.cc' '*.h' | while read -r f; do
  clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || echo "$f"
done)
if [ -n "$bad" ]; then
  echo "not clang-formatted (run: make format):"
  echo "$bad"
  exit 1
fi
echo "all C++ files formatted"
