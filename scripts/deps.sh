#!/usr/bin/env bash
# Installs the Debian packages prepack builds against, and only those missing.
# Used by `make demo` and `make test` (and so by CI): a fresh Debian 12 machine
# with gcc, cmake and make needs nothing else.
set -euo pipefail

# Building needs the C libraries; testing also the Python package's
# dependencies (Debian's, for /usr/bin/python3); `make format` clang-format.
# Usage: deps.sh [build|test|format]
packages=(pkg-config g++ libzstd-dev zlib1g-dev libsimdjson-dev libmsgpack-dev
          libxxhash-dev)
if [ "${1:-test}" = format ]; then
    packages=(clang-format)
elif [ "${1:-test}" = test ]; then
    packages+=(libcmocka-dev python3 python3-pytest python3-numpy
               python3-zstandard python3-msgpack python3-xxhash python3-torch)
fi

is_installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'install ok installed'
}

missing=()
for p in "${packages[@]}"; do
    is_installed "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "prepack: installing missing packages: ${missing[*]}" >&2
sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
export DEBIAN_FRONTEND=noninteractive
# A fresh image has empty package lists: update once before installing.
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
