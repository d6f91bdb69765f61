#!/usr/bin/env bash
# Runs every test: starts (or installs) the backends, then the whole workspace's tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh
cargo test --workspace "$@"
