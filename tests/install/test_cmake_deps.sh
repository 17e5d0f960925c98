#!/usr/bin/env bash
# A configure without one of the C libraries' development packages fails
# with the Debian packages to install (the names scripts/deps.sh uses) and
# the wheel to use instead, not pkg-config's bare "package not found":
# each library hidden in turn (a pkg-config directory of every other .pc
# file), then all of them; with none hidden the configure succeeds.
# Usage: test_cmake_deps.sh SOURCE_DIR
set -euo pipefail
src=$1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
search=$(pkg-config --variable pc_path pkg-config)

# configure NAME [HIDDEN .pc FILE...]: the configure's output in $tmp/NAME.log
configure() {
    local name=$1; shift
    mkdir -p "$tmp/pc-$name"
    local dir f
    for dir in ${search//:/ }; do
        for f in "$dir"/*.pc; do
            [ -e "$f" ] || continue
            case " $* " in *" $(basename "$f") "*) continue ;; esac
            ln -sf "$f" "$tmp/pc-$name/"
        done
    done
    PKG_CONFIG_LIBDIR=$tmp/pc-$name PKG_CONFIG_PATH= cmake -S "$src" \
        -B "$tmp/build-$name" -DPREPACK_BUILD_TESTS=OFF \
        -DPREPACK_BUILD_BENCH=OFF > "$tmp/$name.log" 2>&1
}

fail() { echo "FAIL: $*"; cat "$tmp/$last.log"; exit 1; }

last=none
configure none || fail "the configure fails with every library there"
for pair in libzstd-dev:libzstd.pc zlib1g-dev:zlib.pc \
            libsimdjson-dev:simdjson.pc \
            "libmsgpack-dev:msgpack.pc msgpack-c.pc" \
            libxxhash-dev:libxxhash.pc; do
    debian=${pair%%:*}
    last=$debian
    grep -q "$debian" "$src/scripts/deps.sh" ||
        fail "$debian is not a package scripts/deps.sh installs"
    # shellcheck disable=SC2086 # the .pc files, one word each
    if configure "$debian" ${pair#*:}; then
        fail "the configure passes without $debian"
    fi
    grep -qx "  *sudo apt-get install -y $debian" "$tmp/$debian.log" ||
        fail "no 'apt-get install -y $debian' line without it"
    grep -q "pip install dist/prepack_tokens-\*.whl" "$tmp/$debian.log" ||
        fail "the wheel is not named without $debian"
done
last=all
configure all libzstd.pc zlib.pc simdjson.pc msgpack.pc msgpack-c.pc \
    libxxhash.pc pkg-config.pc && fail "the configure passes with nothing"
grep -qx "  *sudo apt-get install -y libzstd-dev zlib1g-dev libsimdjson-dev libmsgpack-dev libxxhash-dev" \
    "$tmp/all.log" || fail "not every package named with nothing there"
echo "test_cmake_deps: ok"
