#!/usr/bin/env bash
# Makes sure this machine can build the Python jobs (jobs-python/): installs
# componentize-py, pinned, into a virtual environment at
# target/python-toolchain, where `cargo xtask build-jobs` finds it. Needs
# python3 with venv (Debian's python3-venv, installed when missing and it can:
# root or sudo); componentize-py comes from PyPI. Returns at once when the
# pinned version is already there.
set -euo pipefail
cd "$(dirname "$0")/.."

# Builds components that import WASI 0.2 (as wasmtime 48 provides it) and
# handles sundial:job@0.1.0; change the pin together with the test that runs
# its output (host/tests/all/python.rs).
version=0.25.1
venv=target/python-toolchain
bin="$venv/bin/componentize-py"

if [ -x "$bin" ] && [ "$("$bin" --version 2>/dev/null)" = "componentize-py $version" ]; then
    exit 0
fi

# The interpreter for the venv: python3 on PATH if it can make one, else Debian's.
python=python3
if ! command -v python3 >/dev/null 2>&1 || ! python3 -c 'import ensurepip, venv' >/dev/null 2>&1; then
    source scripts/apt-ensure.sh
    apt_ensure "the Python job toolchain" python3 python3-venv
    python=/usr/bin/python3
fi

echo "installing componentize-py $version into $venv" >&2
rm -rf "$venv"
"$python" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --no-input "componentize-py==$version"
"$bin" --version >&2
