"""The padding report Python users get (python/prepack/_report.py):
pack_dataset and stats_dataset return a PackReport that prints the table
`prepack pack` / `prepack stats` print (src/cli/report_print.c), line for
line but for the inputs' lines and the timings; python -m prepack prints
that same object; it is still the dict of figures it was (mapping access,
json.dumps), and draws the SVG `--svg` draws."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
if os.environ.get("PREPACK_SANITIZED"):
    pytest.skip("an ASan libprepack cannot be loaded into Python",
                allow_module_level=True)

from prepack import _native  # noqa: E402
from prepack.dataset import pack_dataset, stats_dataset  # noqa: E402

ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
# lengths with a tail past every L used below, a zero-length one, repeats
LENGTHS = [5, 17, 3, 30, 12, 9, 1, 26, 0, 70, 41, 8, 8, 8, 33, 2, 19, 64, 7]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("report")
    seqs = [[(7 * i + j) % 50000 + 1 for j in range(n)]
            for i, n in enumerate(LENGTHS)]
    jsonl, parquet = d / "in.jsonl", d / "in.parquet"
    jsonl.write_text("".join(json.dumps({"input_ids": s}) + "\n"
                             for s in seqs))
    pq.write_table(pa.table({"input_ids": seqs}), parquet, row_group_size=7)
    return jsonl, parquet


def comparable(text, out_dir=None):
    """The report's lines but for its first line's input name, the input
    lines (the command lists its files; a dataset has none) and the
    timings; the output directory named OUT."""
    lines = text.rstrip("\n").split("\n")
    assert lines[0].startswith("prepack ")
    head = re.sub(r"^(prepack \w+): .*?, (max_seq_len)", r"\1: IN, \2",
                  lines[0])
    kept = [head] + [ln for ln in lines[1:]
                     if not ln.startswith(("  input ", "  time "))]
    if out_dir is not None:
        kept = [ln.replace(f" {out_dir}: ", " OUT: ") for ln in kept]
    return kept


CASES = [("pack", ["--max-seq-len", "32", "--overlong", "split"]),
         ("pack", ["--max-seq-len", "64", "--overlong", "truncate",
                   "--algo", "bfd", "--batch-size", "3"]),
         ("stats", ["--max-seq-len", "32", "--overlong", "drop",
                    "--max-seqs-per-row", "2"]),
         ("stats", ["--max-seq-len", "128", "--algo", "nextfit"])]


def keywords(opts):
    kw = {}
    for flag, value in zip(opts[::2], opts[1::2]):
        name = flag[2:].replace("-", "_")
        kw[name] = int(value) if value.isdigit() else value
    return kw


@pytest.mark.parametrize("cmd,opts", CASES)
def test_the_report_prints_as_the_command(prepack_bin, inputs, tmp_path, cmd,
                                          opts):
    """str(pack_dataset(...)) is the command's text, and python -m prepack
    prints that object: one table, whichever front end."""
    jsonl, parquet = inputs
    c_out, py_out, mod_out = (tmp_path / n for n in ("c", "py", "mod"))
    c = subprocess.run([prepack_bin, cmd, str(jsonl), *opts, "--quiet"]
                       + (["-o", str(c_out)] if cmd == "pack" else []),
                       capture_output=True, text=True, timeout=60, check=True)
    kw = keywords(opts)
    kw["max_seq_len"] = kw.pop("max_seq_len")
    report = (pack_dataset(parquet, py_out, threads=1, **kw) if cmd == "pack"
              else stats_dataset(parquet, **kw))
    want = comparable(c.stdout, c_out)
    assert comparable(str(report), py_out) == want
    m = subprocess.run([sys.executable, "-m", "prepack", cmd, str(parquet),
                        *opts] + (["-o", str(mod_out)] if cmd == "pack"
                                  else []),
                       capture_output=True, text=True, env=ENV, timeout=60)
    assert m.returncode == 0, m.stderr
    assert comparable(m.stdout, mod_out) == want
    # the lines left out are there too, in the command's words
    assert re.search(r"^  time                 .*read [0-9.]+ s, plan [0-9.]+ s",
                     str(report), re.M)
    assert str(report).split("\n")[0] == f"prepack {cmd}: {parquet}, " \
        f"max_seq_len {kw['max_seq_len']}, {kw.get('algo', 'ffd')}"


def test_the_report_is_still_the_dict(inputs, tmp_path):
    """Code that used the dict pack_dataset returned keeps working: the
    same keys and values, json.dumps, dict(), equality; to_dict() a plain
    copy; the figures beside it in the table's units."""
    _, parquet = inputs
    r = pack_dataset(parquet, tmp_path / "set", 32, overlong="split")
    keys = [k for k, _ in _native.PlanStats._fields_]
    assert list(r) == keys and list(r.to_dict()) == keys
    assert type(r.to_dict()) is dict and r.to_dict() == r == dict(r)
    assert json.loads(json.dumps(r)) == r.to_dict()
    assert r["rows"] == r.output["rows"] and r["sequences"] == len(LENGTHS)
    assert r.layouts["packed"]["attention_cost"] == sum(
        min(n, 32) ** 2 for n in LENGTHS) + sum(
        (n - 32) ** 2 if n - 32 <= 32 else 32 ** 2 + (n - 64) ** 2
        for n in LENGTHS if n > 32)
    assert repr(r).startswith("{'max_seq_len': 32,")


def test_svg_on_request_is_the_commands(prepack_bin, inputs, tmp_path):
    """report.svg(path) draws what `--svg` draws, and refuses a link."""
    jsonl, parquet = inputs
    subprocess.run([prepack_bin, "stats", str(jsonl), "--max-seq-len", "32",
                    "--overlong", "split", "--svg", str(tmp_path / "c.svg"),
                    "--quiet"], check=True, stdout=subprocess.DEVNULL,
                   timeout=60)
    r = stats_dataset(parquet, 32, overlong="split")
    r.svg(tmp_path / "py.svg")
    picture = (tmp_path / "c.svg").read_bytes()
    assert picture.endswith(b"</svg>\n")
    assert (tmp_path / "py.svg").read_bytes() == picture
    (tmp_path / "victim").write_text("kept")
    os.symlink(tmp_path / "victim", tmp_path / "linked.svg")
    with pytest.raises(ValueError, match="symbolic link"):
        r.svg(tmp_path / "linked.svg")
    assert (tmp_path / "victim").read_text() == "kept"
