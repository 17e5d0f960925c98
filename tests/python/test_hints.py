"""What a new user is told when the input or the output is not what
prepack takes (issue 29): each message says what the thing is and what
to run instead, in the words of the front end used (a flag in the
command, a keyword in Python).

- text or conversations where token ids were expected: how to tokenize;
- an output directory holding something other than a shard set: what
  it holds, and that --overwrite / overwrite=True replaces only a set;
- a set that is not there: said of the directory;
- Parquet and Arrow given to the C command: by their magic bytes, with
  python -m prepack to run;
- a report whose ratios have nothing to divide by, or where packing
  adds padding: never a negative percentage nor 0x of nothing."""
import json
import os
import re
import subprocess
import sys

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

import prepack
from conftest import ROOT


def _env():
    return dict(os.environ, PREPACK_PYTHON=sys.executable,
                PYTHONPATH=os.path.join(ROOT, "python"))


def _run(cmd, code, cwd=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=_env(),
                       cwd=cwd)
    assert p.returncode == code, (cmd, p.stdout, p.stderr)
    return p


def _jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


# ---- text where tokens were expected --------------------------------------

TEXT_RECORDS = [
    ({"text": "hello"}, "text"),
    ({"prompt": "2+2?", "completion": "4"}, "text"),
    ({"id": 3, "completion": "4"}, "text"),
    ({"messages": [{"role": "user", "content": "hi"}]}, "conversations"),
    ({"conversations": [{"from": "human", "value": "hi"}]}, "conversations"),
]


@pytest.mark.parametrize("record,kind", TEXT_RECORDS)
@pytest.mark.parametrize("cmd", ["pack", "stats"])
def test_text_jsonl_in_the_command_says_how_to_tokenize(prepack_bin, tmp_path,
                                                        record, kind, cmd):
    src = _jsonl(tmp_path / "chat.jsonl", [record])
    p = _run([prepack_bin, cmd, src, "-o", str(tmp_path / "out"),
              "--max-seq-len", "8"] if cmd == "pack" else
             [prepack_bin, cmd, src, "--max-seq-len", "8"], 1)
    assert f'chat.jsonl:1: no "input_ids" field; it looks like {kind} to ' \
           f'tokenize' in p.stderr, p.stderr
    assert "python -m prepack pack FILE --tokenizer PATH" in p.stderr
    assert "docs/TEXT.md" in p.stderr
    assert not (tmp_path / "out").exists()


def test_a_record_of_neither_gets_no_text_hint(prepack_bin, tmp_path):
    """The hint is for text: a record of other fields is told only what
    is missing (a later text record does not change the first error)."""
    src = _jsonl(tmp_path / "x.jsonl", [{"ids": [1, 2]}, {"text": "a"}])
    p = _run([prepack_bin, "stats", src, "--max-seq-len", "8"], 1)
    assert p.stderr.strip() == 'prepack: ' + src + ':1: no "input_ids" field'


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("record", [r for r, _ in TEXT_RECORDS[:2]] +
                         [TEXT_RECORDS[3][0]])
def test_text_jsonl_in_python_without_a_tokenizer(tmp_path, record):
    src = _jsonl(tmp_path / "t.jsonl", [record])
    p = _run([sys.executable, "-m", "prepack", "pack", src, "-o",
              str(tmp_path / "out"), "--max-seq-len", "8"], 1)
    # JSON lines without --tokenizer go to the prepack command (issue 29),
    # whose message gives the way to tokenize
    assert "python -m prepack pack" in p.stderr and \
        "--tokenizer PATH" in p.stderr and "to tokenize" in p.stderr, p.stderr
    assert "docs/TEXT.md" in p.stderr
    with pytest.raises(ValueError, match="tokenizer=PATH"):
        prepack.pack_dataset(src, tmp_path / "out2", 8)
    assert not (tmp_path / "out").exists()
    assert not (tmp_path / "out2").exists()


# ---- an output directory that holds something else ------------------------

ROWS = [[1, 2, 3], [4, 5]]


@pytest.fixture
def tokens(tmp_path):
    pq.write_table(pa.table({"input_ids": ROWS}), tmp_path / "rows.parquet")
    return _jsonl(tmp_path / "rows.jsonl", [{"input_ids": r} for r in ROWS])


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("others", [["notes.txt"], ["a.txt", "b", "c"],
                                    ["line\nbreak"]])
@pytest.mark.parametrize("overwrite", [False, True])
def test_a_directory_not_a_set_says_what_it_holds(prepack_bin, tmp_path,
                                                  tokens, others, overwrite):
    out = tmp_path / "out"
    out.mkdir()
    for name in others:
        (out / name).write_text("mine")
    (out / "manifest.json.tmp").write_text("")  # a set's own: not counted
    flags = ["--overwrite"] if overwrite else []
    p = _run([prepack_bin, "pack", tokens, "-o", str(out), "--max-seq-len",
              "8"] + flags, 1)
    n = len(others)
    said = re.search(r"is not empty: it holds (\d+) (entry|entries) not of "
                     r"a shard set, e\.g\. '([^']+)': choose another output "
                     r"directory or empty it \(--overwrite replaces only a "
                     r"shard set\)", p.stderr)
    assert said, p.stderr
    assert int(said[1]) == n and said[2] == ("entry" if n == 1 else
                                             "entries")
    assert said[3] in [o.replace("\n", "?") for o in others]
    assert len(p.stderr.strip().splitlines()) == 1
    # Python: the same, with the keyword, no flag nor C struct
    with pytest.raises(ValueError) as e:
        prepack.pack_dataset(pa.table({"input_ids": ROWS}), out, 8,
                             overwrite=overwrite)
    text = str(e.value)
    assert f"holds {n} {said[2]} not of a shard set" in text
    assert "(overwrite=True replaces only a shard set)" in text
    assert "--" not in text and "prepack_writer_options" not in text
    # python -m prepack: the flag again
    q = _run([sys.executable, "-m", "prepack", "pack",
              str(tmp_path / "rows.parquet"), "-o", str(out),
              "--max-seq-len", "8"] + flags, 1)
    assert f"holds {n} {said[2]} not of a shard set" in q.stderr, q.stderr
    assert "(--overwrite replaces only a shard set)" in q.stderr
    assert "overwrite=True" not in q.stderr
    assert sorted(os.listdir(out)) == sorted(others + ["manifest.json.tmp"])


@pytest.mark.usefixtures("library")
def test_a_set_without_overwrite_says_how_to_replace_it(prepack_bin, tmp_path,
                                                        tokens):
    out = tmp_path / "out"
    _run([prepack_bin, "pack", tokens, "-o", str(out), "--max-seq-len", "8",
          "--quiet"], 0)
    p = _run([prepack_bin, "pack", tokens, "-o", str(out), "--max-seq-len",
              "8"], 1)
    assert "is not empty: it holds a shard set (--overwrite replaces it)" \
        in p.stderr, p.stderr
    with pytest.raises(ValueError, match=r"holds a shard set \(overwrite="
                                         r"True replaces it\)"):
        prepack.pack_dataset(pa.table({"input_ids": ROWS}), out, 8)
    prepack.pack_dataset(pa.table({"input_ids": ROWS}), out, 8,
                         overwrite=True)  # as the message says


@pytest.mark.usefixtures("library")
def test_python_messages_name_keywords(tmp_path):
    """The library's other flag names, as pack_dataset surfaces them."""
    with pytest.raises(ValueError) as e:
        prepack.pack_dataset(pa.table({"input_ids": [[70000, 1]]}),
                             tmp_path / "a", 8, token_dtype="uint16")
    assert "token_dtype='uint32' or 'auto' keeps it" in str(e.value)
    assert "--" not in str(e.value)
    with pytest.raises(ValueError) as e:
        prepack.pack_dataset(pa.table({"input_ids": [[1] * 5, [2] * 5],
                                       "group": [7, 7]}), tmp_path / "b", 8)
    assert "overlong='drop' leaves them out" in str(e.value), str(e.value)
    assert "--" not in str(e.value)
    from prepack import _native
    for c_words, keyword, flag in _native._PYTHON_WORDS:
        said = _native.python_words(f"x ({c_words}) y")
        assert said == f"x ({keyword}) y"
        if flag is not None:
            assert _native.command_words(said) == f"x ({flag}) y"


# ---- a set that is not there -----------------------------------------------

@pytest.mark.parametrize("cmd", [["verify"], ["inspect"],
                                 ["export", "--to", "nemo-npy", "-o", "e"]])
def test_a_missing_set_is_said_of_its_directory(prepack_bin, tmp_path, cmd):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    cases = {"nope": "nope: no such directory",
             "nope/": "nope: no such directory",
             "empty": "empty is not a shard set (no manifest.json",
             "file": "file is not a directory"}
    for name, said in cases.items():
        p = _run([prepack_bin, cmd[0], name] + cmd[1:], 1, cwd=tmp_path)
        told = p.stdout + p.stderr  # verify reports on stdout
        assert said in told, (name, told)
        assert "cannot read" not in told
        with pytest.raises(prepack.ShardSetError, match=re.escape(said)):
            prepack.ShardSet(tmp_path / name)
    assert not (tmp_path / "e").exists()


# ---- Parquet and Arrow given to the C command ------------------------------

def _arrow_files(tmp_path):
    t = pa.table({"input_ids": ROWS})
    pq.write_table(t, tmp_path / "d.parquet")
    feather.write_feather(t, tmp_path / "d.feather")  # Arrow IPC, LZ4
    feather.write_feather(t, tmp_path / "plain.bin",  # any name: magic
                          compression="uncompressed")
    (tmp_path / "v1.feather").write_bytes(b"FEA1" + bytes(60))  # v1's magic
    with pa.ipc.new_stream(tmp_path / "d.arrows", t.schema) as w:
        w.write_table(t)
    return {"d.parquet": "a Parquet file",
            "d.feather": "an Arrow (Feather) file",
            "plain.bin": "an Arrow (Feather) file",
            "v1.feather": "an Arrow (Feather) file",
            "d.arrows": "an Arrow IPC stream"}


@pytest.mark.usefixtures("library")
def test_parquet_and_arrow_are_named_and_pointed_to_python(prepack_bin,
                                                           tmp_path):
    for name, kind in _arrow_files(tmp_path).items():
        path = str(tmp_path / name)
        for cmd in (["pack", path, "-o", str(tmp_path / "out")],
                    ["stats", path]):
            p = _run([prepack_bin] + cmd + ["--max-seq-len", "8"], 1)
            assert f"{path} is {kind}: read it with python -m prepack pack " \
                   f"{path}" in p.stderr, p.stderr
            assert "cannot tell its format" not in p.stderr
        if name in ("d.parquet", "d.feather"):  # what it suggests works
            q = _run([sys.executable, "-m", "prepack", "stats", path,
                      "--max-seq-len", "8"], 0)
            assert re.search(r"sequences +2 ", q.stdout), q.stdout
    assert not (tmp_path / "out").exists()
    odd = tmp_path / "odd.dat"
    odd.write_bytes(b"PAQ1\x00\x00\x00\x00")  # no magic: as before
    p = _run([prepack_bin, "stats", str(odd), "--max-seq-len", "8"], 1)
    assert "cannot tell its format" in p.stderr


# ---- the report's ratios ---------------------------------------------------

NEGATIVE = re.compile(r"-\d[\d.,]*\s*(%|x\b)")


@pytest.mark.parametrize("lengths,L,said", [
    ([3, 2], 4, "packing removes none of 1 naive pad tokens (packed rows "
                "hold 3, 2 more)"),
    ([4, 4], 4, "packing removes nothing: no pad tokens either way"),
    ([5, 5, 5], 8, "packing removes nothing: naive batches have no pad "
                   "tokens, packed rows hold 9"),
    ([0], 4, "packing removes nothing: no pad tokens either way"),
    ([6, 2, 5, 3], 8, "packing removes 8 of 8 naive pad tokens (100.000%)"),
])
def test_the_report_prints_no_negative_ratio(prepack_bin, tmp_path, lengths,
                                             L, said):
    src = _jsonl(tmp_path / "in.jsonl",
                 [{"input_ids": [1] * n} for n in lengths])
    out = _run([prepack_bin, "pack", src, "-o", str(tmp_path / "out"),
                "--max-seq-len", str(L)], 0).stdout
    assert said in out, out
    assert not NEGATIVE.search(out), out
    if not any(lengths):  # nothing to divide by: n/a, never 0x or 0%
        assert "computes n/a the token slots" in out
        assert "varlen packed is n/a naive batches" in out
        assert "efficiency           n/a" in out
        assert " 0.000x" not in out and "0.00%" not in out
        _run([prepack_bin, "stats", src, "--max-seq-len", str(L), "--svg",
              str(tmp_path / "r.svg")], 0)
        svg = (tmp_path / "r.svg").read_text()
        assert svg.count("n/a: no token slots") == 3
        assert "% padding" not in svg and "nan" not in svg.lower()
    j = json.loads(_run([prepack_bin, "stats", src, "--max-seq-len", str(L),
                         "--json"], 0).stdout)
    for layout in j["padding"].values():  # --json: 0 where nothing
        assert 0 <= layout["pad_fraction"] <= 1
    assert j["efficiency"] >= 0
