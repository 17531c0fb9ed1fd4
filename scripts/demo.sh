#!/usr/bin/env bash
# Runs Sundial's main job on a fresh machine: builds the job components
# (cleanup, snapshot, recommendation, metrics, weekly-report) and the host,
# (re)creates the demo application database with every table those jobs use
# (DEMO_USERS users, 1000 by default), and runs the host in the foreground with
# ./sundial.toml (cleanup every minute, the others on their daily/hourly
# schedules, on the embedded SQLite file sundial-demo.db). Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-guest-toolchain.sh
cargo xtask build-jobs
cargo build --release -p sundial-host
./target/release/sundial demo --users "${DEMO_USERS:-1000}"
exec ./target/release/sundial serve
