"""A directory the user names, however spelled (issue 29): every command
and function that takes one writes, reads and stages beside the
directory the spelling names, the same one the kernel resolves, and
leaves nothing else behind (a staging directory named from "out/" was
once placed inside OUT). "." and ".." as an output that is written
beside itself are refused by name, never staged in the working
directory nor deleted.

The spellings: trailing slashes (out/, out//, out/.), "." parts (./out,
sub/./out) and ".." parts (sub/../out), each relative to a fresh
working directory. The commands: prepack pack -o (new and --overwrite),
verify, inspect, export -o (four formats), scan/plan/write/finalize -o;
python -m prepack pack -o; prepack.pack_dataset, prepack.export,
ShardSet and PackedDataset. (prepack.stream and prepack.pack take no
directory; save_tokens takes a file.)"""
import os
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

import prepack
from conftest import ROOT

# spelling -> where it puts the directory, relative to the working one
SPELLINGS = {"out/": "out", "out//": "out", "out/.": "out", "./out": "out",
             "sub/./out": "sub/out", "sub/../out": "out"}
ROWS = [[1, 2, 3], [4, 5], [6, 7, 8, 9, 10], [11]]
FORMATS = ("hf", "hf-parquet", "nemo-npy", "nemo-parquet")
STEPS = (["scan", "--task-index", "0", "--task-count", "1"],
         ["plan", "--scan-tasks", "1"],
         ["write", "--task-index", "0", "--task-count", "1"],
         ["finalize", "--write-tasks", "1"])


def _env():
    return dict(os.environ, PREPACK_PYTHON=sys.executable,
                PYTHONPATH=os.path.join(ROOT, "python"))


def _run(cmd, cwd, code=0):
    p = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True,
                       env=_env())
    assert p.returncode == code, (cmd, p.stdout, p.stderr)
    return p


@pytest.fixture
def work(tmp_path):
    """A working directory with sub/ in it, and the input elsewhere."""
    (tmp_path / "in").mkdir()
    src = tmp_path / "in" / "rows.jsonl"
    src.write_text("".join('{"input_ids": %s}\n' % r for r in ROWS))
    pq.write_table(pa.table({"input_ids": ROWS}),
                   tmp_path / "in" / "rows.parquet")
    cwd = tmp_path / "cwd"
    (cwd / "sub").mkdir(parents=True)
    return cwd, src


def _only(cwd, where):
    """Nothing in the working directory but sub/ and `where` (no staging
    directory, no temporary, no stray set) and the set whole there."""
    assert sorted(os.listdir(cwd)) == sorted({"sub", where.split("/")[0]})
    assert os.listdir(cwd / "sub") == (["out"] if where == "sub/out" else [])
    assert len(prepack.ShardSet(cwd / where)) > 0


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_pack_verify_inspect_by_every_spelling(prepack_bin, work, spelling):
    cwd, src = work
    pack = [prepack_bin, "pack", str(src), "-o", spelling, "--max-seq-len",
            "8", "--quiet"]
    _run(pack, cwd)
    _only(cwd, SPELLINGS[spelling])
    _run(pack + ["--overwrite", "--shard-rows", "1"], cwd)  # staged beside
    _only(cwd, SPELLINGS[spelling])
    assert len(os.listdir(cwd / SPELLINGS[spelling])) > 2
    _run([prepack_bin, "verify", spelling, "--input", str(src)], cwd)
    _run([prepack_bin, "inspect", spelling, "--row", "0"], cwd)
    assert len(prepack.ShardSet(os.path.join(cwd, spelling))) == 2
    from prepack.torch import PackedDataset
    assert len(list(PackedDataset(os.path.join(cwd, spelling),
                                  shuffle=False))) == 2


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_steps_by_every_spelling(prepack_bin, work, spelling):
    cwd, src = work
    for step in STEPS:
        _run([prepack_bin] + step + [str(src), "-o", spelling,
                                     "--max-seq-len", "8"], cwd)
    _only(cwd, SPELLINGS[spelling])
    assert sorted(os.listdir(cwd / SPELLINGS[spelling])) == [
        "manifest.json", "shard-00000.zst"]  # .prepack-job removed
    _run([prepack_bin, "verify", spelling, "--input", str(src)], cwd)


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_export_by_every_spelling(prepack_bin, work, spelling):
    cwd, src = work
    _run([prepack_bin, "pack", str(src), "-o", "../set", "--max-seq-len",
          "8", "--quiet"], cwd)
    _run([prepack_bin, "export", "../set/", "--to", "nemo-npy", "-o",
          spelling], cwd)
    where = SPELLINGS[spelling]
    assert sorted(os.listdir(cwd / where)) == [
        ".prepack-export", "8_metadata.jsonl", "training_8.npy"]
    os.chdir(cwd)  # prepack.export, relative to the same directory
    try:
        prepack.export("../set/.", "nemo-parquet", spelling.replace("out",
                                                                    "py"))
    finally:
        os.chdir("/")
    py = where.replace("out", "py")
    assert os.path.isfile(cwd / py / ".prepack-export")
    assert sorted(os.listdir(cwd)) == sorted({"sub", where.split("/")[0],
                                              py.split("/")[0]})
    if not where.startswith("sub/"):
        assert os.listdir(cwd / "sub") == []


@pytest.mark.parametrize("to", FORMATS)
def test_the_readme_export_in_every_format(prepack_bin, work, to):
    """`prepack export shards/ --to hf -o packed/`, as the README writes
    it, and prepack.export the same."""
    cwd, src = work
    _run([prepack_bin, "pack", str(src), "-o", "shards/", "--max-seq-len",
          "8", "--quiet"], cwd)
    _run([prepack_bin, "export", "shards/", "--to", to, "-o", "packed/"],
         cwd)
    os.chdir(cwd)
    try:
        assert prepack.export("shards/", to, "again//") == 2
    finally:
        os.chdir("/")
    assert sorted(os.listdir(cwd)) == ["again", "packed", "shards", "sub"]
    for d in ("packed", "again"):
        assert ".prepack-export" in os.listdir(cwd / d)


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("spelling", SPELLINGS)
def test_python_pack_by_every_spelling(work, spelling):
    cwd, src = work
    parquet = str(src).replace(".jsonl", ".parquet")
    _run([sys.executable, "-m", "prepack", "pack", parquet, "-o", spelling,
          "--max-seq-len", "8"], cwd)
    _only(cwd, SPELLINGS[spelling])
    os.chdir(cwd)
    try:  # pack_dataset over it, staged beside it
        prepack.pack_dataset(pa.table({"input_ids": ROWS}), spelling, 8,
                             overwrite=True, shard_rows=1)
    finally:
        os.chdir("/")
    _only(cwd, SPELLINGS[spelling])
    assert len(os.listdir(cwd / SPELLINGS[spelling])) == 3  # 2 shards


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("bare", [".", "./", "sub/.."])
def test_a_set_replaced_in_place_is_refused_by_name(prepack_bin, work, bare):
    """A set at "." (or "sub/..") replaced: the new set would be staged
    in the working directory itself, so it is refused, the old set kept
    and nothing made; ".." as the last part is refused as ever."""
    cwd, src = work
    set_dir = cwd / "sub" / "set"
    _run([prepack_bin, "pack", str(src), "-o", str(set_dir),
          "--max-seq-len", "8", "--quiet"], cwd)
    before = sorted(os.listdir(set_dir))
    here = set_dir if bare != "sub/.." else cwd
    p = _run([prepack_bin, "pack", str(src), "-o", bare, "--max-seq-len",
              "8", "--overwrite"], set_dir if bare != "sub/.." else cwd, 1)
    if bare == "sub/..":
        assert "ends in '..'" in p.stderr
    else:
        assert "give the directory by its name" in p.stderr, p.stderr
        assert sorted(os.listdir(set_dir)) == before
    os.chdir(here)
    try:
        with pytest.raises(ValueError, match="its name|ends in '..'"):
            prepack.pack_dataset(pa.table({"input_ids": ROWS}), bare, 8,
                                 overwrite=True)
    finally:
        os.chdir("/")
    assert sorted(os.listdir(set_dir)) == before
    assert sorted(os.listdir(set_dir.parent)) == ["set"]
    _run([prepack_bin, "verify", "."], set_dir)  # reading "." is fine


@pytest.mark.parametrize("bare", [".", "./", "..", "sub/.."])
def test_an_export_to_dot_is_refused(prepack_bin, work, bare):
    cwd, src = work
    _run([prepack_bin, "pack", str(src), "-o", "../set", "--max-seq-len",
          "8", "--quiet"], cwd)
    p = subprocess.run([prepack_bin, "export", "../set", "--to", "nemo-npy",
                        "-o", bare], cwd=cwd, capture_output=True,
                       text=True, env=_env())
    assert p.returncode in (1, 2) and ("its name" in p.stderr or
                                       "'..'" in p.stderr), p.stderr
    os.chdir(cwd)
    try:
        with pytest.raises(ValueError, match="its name|ends in '..'"):
            prepack.export("../set", "nemo-npy", bare)
    finally:
        os.chdir("/")
    assert sorted(os.listdir(cwd)) == ["sub"]
    assert os.listdir(cwd / "sub") == []


@pytest.mark.parametrize("given,spelled", [
    ("out/", "out"), ("out//", "out"), ("out/.", "out"), ("./out", "out"),
    ("a/./out", "a/out"), ("a//out", "a/out"), ("a/../out", "a/../out"),
    (".", "."), ("./", "."), ("/", "/"), ("//x/", "/x"), ("/./x", "/x")])
def test_one_spelling_in_python(given, spelled):
    from prepack._files import dir_path
    assert dir_path(given) == spelled


@pytest.mark.parametrize("given", ["..", "../", "a/..", "a/../.", "/.."])
def test_dot_dot_last_is_refused_in_python(given):
    from prepack._files import dir_path
    with pytest.raises(ValueError, match="ends in '..'"):
        dir_path(given)
