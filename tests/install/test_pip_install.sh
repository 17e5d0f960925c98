#!/usr/bin/env bash
# pip install SOURCE into a fresh venv (nothing of the build tree on its
# path, no PREPACK_LIBRARY): import prepack packs, prefill-packs and reads
# with the libprepack.so the package carries; the prepack command comes
# with it; one version number everywhere.
# Usage: test_pip_install.sh SOURCE_DIR PYTHON
set -euo pipefail
src=$1
python=$2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
# pip builds in a copy of the tree (scikit-build-core drives CMake)
"$tmp/venv/bin/pip" install -q "$src" 2>&1 | grep -v "WARNING: Location" || true
"$tmp/venv/bin/python" -c "import prepack" 2>/dev/null ||
    { echo "FAIL: pip install $src gave no importable prepack"; exit 1; }
cd "$tmp"
want=$(sed -n 's/^project(prepack VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
env -u PREPACK_LIBRARY -u PYTHONPATH PREPACK_FIXTURES="$src/fixtures" \
    "$tmp/venv/bin/python" - "$want" <<'PY'
import os, sys, importlib.metadata
import prepack, prepack.prefill
want = sys.argv[1]
lib = prepack._native.library()
assert os.path.dirname(lib._name) == os.path.dirname(prepack.__file__), lib._name
assert prepack.__version__ == want, (prepack.__version__, want)
assert importlib.metadata.version("prepack-tokens") == want  # the distribution
lib.prepack_version.restype = __import__("ctypes").c_char_p
assert lib.prepack_version().decode() == want, lib.prepack_version()
rows = prepack.pack([[1, 2, 3], [4, 5], [6]], max_seq_len=4)
assert sorted(len(r["input_ids"]) for r in rows) == [2, 4]
p = prepack.prefill.pack_prompts([[1, 2, 3], [4, 5], [6]])
assert p.num_prompts == 3 and p.length.tolist() == [3, 2, 1]
s = prepack.ShardSet(os.path.join(os.environ["PREPACK_FIXTURES"], "expected", "set"))
s.verify()
assert len(s) == 20
print("ok", lib._name)
PY
version=$("$tmp/venv/bin/prepack" --version)
case "$version" in "prepack $want "*) ;; *) echo "FAIL: prepack --version says: $version"; exit 1 ;; esac
grep -q "#define PREPACK_VERSION_STRING \"$want\"" "$src/include/prepack.h" ||
    { echo "FAIL: prepack.h's version is not $want"; exit 1; }
echo "test_pip_install: ok ($want)"
