#!/usr/bin/env bash
# Runs Sundial's main job on a fresh machine: builds the example job
# components and the host, seeds a demo application database, and runs the
# host in the foreground with ./sundial.toml (cleanup every minute, on the
# embedded SQLite file sundial-demo.db). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-guest-toolchain.sh
cargo xtask build-jobs
cargo build --release -p sundial-host
./target/release/sundial demo --users "${DEMO_USERS:-1000}"
exec ./target/release/sundial serve
