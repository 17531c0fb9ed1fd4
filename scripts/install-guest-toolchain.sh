#!/usr/bin/env bash
# Makes sure this machine can build wasm32-wasip2 components: either rustup's
# wasm32-wasip2 target, or Debian's second Rust toolchain (rustc-web with the
# standard library sources, wasi-libc, and LLVM's wasm-ld). Installs the
# Debian packages when it can (root or sudo); otherwise says what to install.
set -euo pipefail

# rust-web-llvm ships wasm-component-ld (only a Recommends of rustc-web, so it
# must be named when installing without recommends); lld-22 ships wasm-ld.
packages=(rustc-web cargo-web rust-web-src rust-web-llvm wasi-libc lld-22)

if command -v rustup >/dev/null 2>&1 && rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip2; then
    exit 0
fi
source "$(dirname "$0")/apt-ensure.sh"
if ! apt_ensure "the guest toolchain" "${packages[@]}"; then
    echo "  (or, with rustup: rustup target add wasm32-wasip2)" >&2
    exit 1
fi
