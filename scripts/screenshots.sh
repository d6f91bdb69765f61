#!/usr/bin/env bash
# Regenerates the README's dashboard screenshots (docs/screenshots/*.png) in headless
# chromium: a SQLite store filled with queues, failures, a batch, a schedule and a running
# worker, each main page shot at 1200x900. Needs chromium and chromedriver (scripts/services.sh
# installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/services.sh >/dev/null
export DASHBOARD_SCREENSHOTS="$PWD/docs/screenshots"
cargo test -p queue-dashboard --test browser screenshots -- --ignored --nocapture
