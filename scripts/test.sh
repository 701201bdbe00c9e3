#!/usr/bin/env bash
# All of skiff's checks: formatting, lints, unit and end-to-end tests (as root).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets -- -D warnings
cargo build --workspace
cargo nextest run --workspace --no-fail-fast "$@"
