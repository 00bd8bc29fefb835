#!/usr/bin/env bash
# The test command from the README: builds every binary, then runs unit and integration tests.
# Needs root (network namespaces) and Debian's containernetworking-plugins in /usr/lib/cni.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
cargo test --workspace --locked
# End-to-end scripts: simulated multi-LAN clusters in network namespaces.
passed=0
failed=0
for t in tests/e2e/*.sh; do
  case "$t" in */lib.sh | */*-lib.sh | */lib-*.sh) continue ;; esac
  echo "--- $t"
  if bash "$t"; then passed=$((passed + 1)); else failed=$((failed + 1)); echo "FAILED: $t"; fi
done
echo "e2e: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
