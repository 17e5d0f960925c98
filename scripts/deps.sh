#!/usr/bin/env bash
# Installs the Debian packages prepack builds against, and only those missing.
# Used by `make demo` and `make test` (and so by CI): a fresh Debian 12 machine
# with gcc, cmake and make needs nothing else.
set -euo pipefail

# Building needs the C libraries; testing also cmocka (the Python packages
# come from PyPI into the project's venv: Makefile, venv); `make format`
# clang-format.
# Usage: deps.sh [build|test|slurm|format]
packages=(pkg-config g++ libzstd-dev zlib1g-dev libsimdjson-dev libmsgpack-dev
          libxxhash-dev)
if [ "${1:-test}" = format ]; then
    packages=(clang-format)
elif [ "${1:-test}" = test ] || [ "${1:-test}" = slurm ]; then
    packages+=(libcmocka-dev)
    # tests/slurm: a single-node Slurm started by the test
    packages+=(slurmctld slurmd munge slurm-client zstd)
    # the test venv needs a python3 that can make one: a machine without
    # one (or with Debian's python3 alone) gets Debian's venv support
    if ! python3 -c 'import venv, ensurepip' 2>/dev/null; then
        packages+=(python3 python3-venv python3-pip)
    fi
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

# A fresh machine often runs unattended-upgrades at boot: apt's and dpkg's
# locks are then held for minutes. Wait for them (apt's own wait, then
# retries) up to PREPACK_APT_LOCK_TIMEOUT seconds, saying what is awaited.
lock_timeout=${PREPACK_APT_LOCK_TIMEOUT:-900}
apt() {
    local deadline=$((SECONDS + lock_timeout)) out status
    while :; do
        local wait=$((deadline - SECONDS))
        [ "$wait" -gt 30 ] && wait=30
        [ "$wait" -lt 0 ] && wait=0
        out=$($sudo apt-get -o DPkg::Lock::Timeout="$wait" "$@" 2>&1) && status=0 || status=$?
        if [ "$status" -eq 0 ]; then
            return 0
        fi
        if ! grep -qE 'Could not get lock|Unable to acquire|Unable to lock' <<<"$out"; then
            printf '%s\n' "$out" >&2
            return "$status"
        fi
        local holder
        holder=$(grep -oE 'held by process [0-9]+( \([^)]*\))?' <<<"$out" | head -n 1)
        if [ "$SECONDS" -ge "$deadline" ]; then
            echo "prepack: gave up after ${lock_timeout} s waiting for the package manager's lock (${holder:-held by another process}); rerun when it is done, or set PREPACK_APT_LOCK_TIMEOUT" >&2
            printf '%s\n' "$out" >&2
            return "$status"
        fi
        echo "prepack: waiting for the package manager's lock (${holder:-held by another process}, e.g. unattended-upgrades): $((deadline - SECONDS)) s left" >&2
        sleep "${PREPACK_APT_LOCK_POLL:-5}"
    done
}

# A fresh image has empty package lists: update once before installing.
apt update -qq
apt install -y -qq --no-install-recommends "${missing[@]}"
