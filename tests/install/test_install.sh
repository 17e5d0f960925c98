#!/usr/bin/env bash
# Installs the build into a scratch prefix and builds a small program
# against it, with pkg-config and with CMake's find_package, then runs it.
# Usage: test_install.sh BUILD_DIR SOURCE_DIR
set -euo pipefail
build=$1
here=$2/tests/install
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cmake --install "$build" --prefix "$tmp/prefix" >/dev/null
passed=0
check() { # check NAME OUTPUT
    if grep -q "1 row(s), cu_seqlens 0 9 16" <<<"$2"; then
        passed=$((passed + 1))
    else
        echo "FAIL: $1: $2" >&2
        echo "$passed passed, 1 failed"
        exit 1
    fi
}
export PKG_CONFIG_PATH=$tmp/prefix/lib/pkgconfig
# pkg-config, static: the private dependencies come from prepack.pc
cc "$here/consumer.c" -o "$tmp/pc_static" \
    $(pkg-config --cflags prepack) "$tmp/prefix/lib/libprepack.a" \
    $(pkg-config --libs --static prepack | sed 's/-lprepack//')
check "pkg-config, static" "$("$tmp/pc_static")"
# the consumer's flags are prepack's own: no dependency's defines leak
cflags=$(pkg-config --cflags prepack)
case "$cflags" in *-D*) echo "FAIL: pkg-config --cflags prepack leaks: $cflags"; exit 1 ;; esac
# pkg-config, shared
cc "$here/consumer.c" -o "$tmp/pc_shared" $(pkg-config --cflags --libs prepack)
check "pkg-config, shared" "$(LD_LIBRARY_PATH=$tmp/prefix/lib "$tmp/pc_shared")"
# CMake: find_package(prepack), both targets
cmake -S "$here" -B "$tmp/cm" -DCMAKE_PREFIX_PATH="$tmp/prefix" >/dev/null
cmake --build "$tmp/cm" >/dev/null
check "cmake, prepack::prepack" "$("$tmp/cm/consumer_static")"
check "cmake, prepack::prepack_shared" \
    "$(LD_LIBRARY_PATH=$tmp/prefix/lib "$tmp/cm/consumer_shared")"
# the installed command runs
"$tmp/prefix/bin/prepack" --version | grep -q prepack && passed=$((passed + 1))
echo "$passed passed, 0 failed"
