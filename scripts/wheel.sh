#!/usr/bin/env bash
# Builds a wheel that works where the build's -dev packages are absent:
# `pip wheel .` (scikit-build-core over CMake), then `auditwheel repair`
# copies the shared libraries libprepack.so and the prepack command link
# (zstd, simdjson, msgpack-c, xxhash) into the wheel and points them there.
# What stays outside is the manylinux policy's: the C and C++ runtimes,
# libm, libgcc_s and zlib.
# Usage: scripts/wheel.sh [OUT_DIR] (default dist/); prints the wheel's path,
# dist/prepack_tokens-VERSION-py3-none-PLATFORM.whl (the distribution is
# prepack-tokens, imported as prepack). Install it with
#   pip install dist/prepack_tokens-*.whl
# or, with extras, pip install "$(ls dist/prepack_tokens-*.whl)[hf]".
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/dist}
python=${PYTHON:-python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/tools"
"$tmp/tools/bin/pip" install -q -r "$src/requirements/wheel.txt" 2>&1 |
    grep -v "WARNING: Location" || true
"$tmp/tools/bin/pip" wheel -q --no-deps "$src" -w "$tmp/raw" 2>&1 |
    grep -v "WARNING: Location" || true
raw=$(ls "$tmp"/raw/prepack_tokens-*.whl)
# the oldest glibc this machine's build can promise
plat=$("$tmp/tools/bin/auditwheel" show "$raw" |
       sed -n 's/.*platform tag to "\([^"]*\)".*/\1/p' | head -n 1)
mkdir -p "$out"
PATH="$tmp/tools/bin:$PATH" auditwheel repair "$raw" --plat "${plat:-linux_x86_64}" \
    -w "$out" > "$tmp/repair.log" 2>&1 ||
    { cat "$tmp/repair.log" >&2; echo "auditwheel repair failed" >&2; exit 1; }
ls "$out"/prepack_tokens-*"${plat:-linux}"*.whl | tail -n 1
