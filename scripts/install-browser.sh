#!/usr/bin/env bash
# Makes sure this machine has a headless browser for the UI test: Debian's
# chromium and its chromedriver. Installs them when it can (root or sudo);
# otherwise says what to install.
set -euo pipefail
source "$(dirname "$0")/apt-ensure.sh"

apt_ensure "the browser for the UI test" chromium chromium-driver
