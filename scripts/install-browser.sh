#!/usr/bin/env bash
# Makes sure this machine has a headless browser for the UI test: Debian's
# chromium and its chromedriver. Installs them when it can (root or sudo);
# otherwise says what to install.
set -euo pipefail

packages=(chromium chromium-driver)
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
    echo "error: the UI test needs a browser; install: apt-get install ${packages[*]}" >&2
    exit 1
fi
echo "installing the browser for the UI test: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
