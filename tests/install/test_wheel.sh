#!/usr/bin/env bash
# The wheel scripts/wheel.sh makes, installed into a fresh venv away from
# the build tree: libprepack.so and the prepack command find zstd,
# simdjson, msgpack-c and xxhash inside the wheel (ldd names nothing else
# but the C/C++ runtime, libm, libgcc_s and zlib), and the package packs,
# prefill-packs and reads with no variable set; python -m prepack's
# generated options (_options.py) are in it.
# Usage: test_wheel.sh SOURCE_DIR PYTHON
set -euo pipefail
src=$1
python=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
wheel=$(PYTHON="$python" bash "$src/scripts/wheel.sh" "$tmp/dist" 2>/dev/null | tail -n 1)
[ -f "$wheel" ] || { echo "FAIL: scripts/wheel.sh made no wheel"; exit 1; }
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install -q "$wheel" 2>&1 | grep -v "WARNING: Location" || true
site=$("$tmp/venv/bin/python" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")
allowed='linux-vdso|ld-linux|libc\.so|libm\.so|libgcc_s|libstdc\+\+|libz\.so|libpthread|libdl'
# the command: an ELF in bin/, or (auditwheel moves it) in
# DISTRIBUTION.scripts/ (prepack_tokens.scripts) behind a launcher script
cli=$tmp/venv/bin/prepack
[ "$(head -c 2 "$cli")" = "#!" ] &&
    cli=$(ls "$site"/*.scripts/prepack 2>/dev/null | head -n 1)
for elf in "$site/prepack/libprepack.so" "$cli"; do
    [ -f "$elf" ] || { echo "FAIL: $elf missing from the wheel"; exit 1; }
    outside=$(ldd "$elf" | grep -vE "$allowed" | grep -v "$site" || true)
    if [ -n "$outside" ]; then
        echo "FAIL: $elf links outside the wheel:"; echo "$outside"; exit 1
    fi
done
cd "$tmp"
env -u PREPACK_LIBRARY -u PYTHONPATH "$tmp/venv/bin/python" - "$src/fixtures" <<'PY'
import os, sys
import prepack, prepack.prefill
lib = prepack._native.library()
assert os.path.dirname(lib._name) == os.path.dirname(prepack.__file__), lib._name
rows = prepack.pack([[1, 2, 3], [4, 5], [6]], max_seq_len=4)
assert sorted(len(r["input_ids"]) for r in rows) == [2, 4]
assert prepack.prefill.pack_prompts([[1, 2], [3]]).num_prompts == 2
s = prepack.ShardSet(os.path.join(sys.argv[1], "expected", "set"))
assert s.backend == "c" and len(s) == 20
s.verify()
# python -m prepack's options, generated from src/cli/options.def
from prepack import _options
from prepack.__main__ import _parser
assert any(o["name"] == "max-seq-len" for o in _options.OPTIONS)
a = _parser().parse_args(["stats", "x.parquet", "--max-seq-len", "8"])
assert a.algo == "ffd" and a.batch_size == 8
PY
"$tmp/venv/bin/prepack" verify "$src/fixtures/expected/set" >/dev/null 2>&1 ||
    { echo "FAIL: the wheel's prepack command"; exit 1; }
echo "test_wheel: ok ($(basename "$wheel"))"
