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
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1; then
    sudo=(sudo)
else
    echo "error: cannot build wasm32-wasip2 components; install one of:" >&2
    echo "  rustup target add wasm32-wasip2" >&2
    echo "  apt-get install ${packages[*]}" >&2
    exit 1
fi
echo "installing the guest toolchain: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
