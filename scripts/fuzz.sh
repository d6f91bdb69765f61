#!/usr/bin/env bash
# Runs every fuzz target for a while (seconds each; 20 by default) with cargo fuzz.
#   bash scripts/fuzz.sh 20        # the short run CI does
#   bash scripts/fuzz.sh 3600      # the long run recorded in RELIABILITY.md
# cargo fuzz needs nightly features; RUSTC_BOOTSTRAP=1 lets the stable toolchain build them.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds="${1:-20}"
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz
export RUSTC_BOOTSTRAP=1
for target in $(cargo fuzz list --fuzz-dir tests/fuzz); do
  echo "fuzz: $target for ${seconds}s"
  mkdir -p "tests/fuzz/corpus/$target"
  cargo fuzz run --fuzz-dir tests/fuzz "$target" "tests/fuzz/corpus/$target" -- \
    -max_total_time="$seconds" -max_len=65536 -rss_limit_mb=2048 2>&1 | tail -n 3
done
