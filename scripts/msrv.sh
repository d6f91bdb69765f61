#!/usr/bin/env bash
# Checks that the workspace builds with the oldest Rust it claims to support: the
# `rust-version` of Cargo.toml's [workspace.package]. Installs that toolchain with rustup if
# it is missing (minimal profile), then type-checks every crate and target with it.
set -euo pipefail
cd "$(dirname "$0")/.."
msrv=$(sed -n 's/^rust-version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
[ -n "$msrv" ] || { echo "msrv: no rust-version in Cargo.toml" >&2; exit 1; }
if ! rustup run "$msrv" rustc --version >/dev/null 2>&1; then
  rustup toolchain install "$msrv" --profile minimal
fi
echo "msrv: checking with $(rustup run "$msrv" rustc --version)"
CARGO_TARGET_DIR=target/msrv cargo "+$msrv" check --workspace --all-targets --locked
