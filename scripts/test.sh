#!/usr/bin/env bash
# The test command from the README: builds every binary, then runs unit and integration tests.
# Needs root (network namespaces) and Debian's containernetworking-plugins in /usr/lib/cni.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --workspace --locked
cargo test --workspace --locked
