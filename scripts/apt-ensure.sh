#!/usr/bin/env bash
# Sourced by the install-* scripts: `apt_ensure <what they are for> <package>...`
# returns at once when every package is installed, installs the missing ones
# when it can (root or sudo), and otherwise says what to install and fails.

apt_ensure() {
    local purpose=$1
    shift
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0

    local sudo=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            echo "error: $purpose needs: apt-get install ${missing[*]}" >&2
            return 1
        fi
    fi
    echo "installing $purpose: ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
