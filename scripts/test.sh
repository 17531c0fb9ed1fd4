#!/usr/bin/env bash
# Runs every test: builds the job and fixture components, then the whole
# workspace's tests (the host's tests use those real components and real
# SQLite files; the UI test drives a headless chromium), then the host's
# tests again with Sundial's own tables on Postgres (the server named by
# SUNDIAL_TEST_POSTGRES_URL, default postgres://postgres@127.0.0.1:5432/test).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-guest-toolchain.sh
scripts/install-browser.sh
scripts/install-python-toolchain.sh
cargo xtask build-jobs --fixtures
cargo test --workspace "$@"
SUNDIAL_TEST_STORE=postgres cargo test -p sundial-host --test all "$@" -- --skip postgres:: --skip shared_items::
# OpenTelemetry export is a cargo feature of the host: its test runs with it on.
cargo test -p sundial-host --features otlp --test all -- otlp
