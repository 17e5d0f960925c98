"""save_tokens / --save-tokens (python/prepack/_saved_tokens.py): a text
pack keeps its tokenized sequences, and `prepack pack` of the saved file,
with no tokenizer, gives the rows the text gives (every field of every
row, and the same shard bytes), at the L saved and at another; as JSON
lines (plain, zstd, gzip; loss masks and groups too) and as a Megatron
.bin/.idx pair (uint16, int32 once an id needs it). Nothing half-written:
a failed run leaves no saved file and no temporary, a link at the name
is refused, a file there replaced."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from conftest import ROOT

pytest.importorskip("transformers")
pa = pytest.importorskip("pyarrow")

import prepack  # noqa: E402
from prepack import text as ptext  # noqa: E402
from prepack.dataset import (  # noqa: E402
    DatasetError, pack_dataset, stats_dataset)

TOKENIZER = os.path.join(ROOT, "fixtures", "text", "tokenizer")
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))


def lib_or_skip():
    if not os.environ.get("PREPACK_LIBRARY") and \
            not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


@pytest.fixture(scope="module")
def tok():
    return ptext.load_tokenizer(TOKENIZER)


def conversations(n):
    with open(os.path.join(ROOT, "fixtures", "text",
                           "conversations.jsonl")) as f:
        return [json.loads(line) for _, line in zip(range(n), f)]


TEXT = [{"text": "The Python Software Foundation is a non-profit."},
        {"text": "Licence terms, " * 40},
        {"text": ""}]
PROMPT_COMPLETION = [
    {"prompt": "Who holds the copyright?", "completion": " The PSF."},
    {"prompt": "Is it free", "completion": "? Yes, under the licence."}]


def write_jsonl(path, records):
    with open(path, "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in records)
    return str(path)


def same_rows(a, b):
    """Two sets hold the same rows, field for field."""
    x, y = prepack.ShardSet(str(a)), prepack.ShardSet(str(b))
    assert len(x) == len(y) > 0
    for i in range(len(x)):
        rx, ry = x[i], y[i]
        assert sorted(rx) == sorted(ry), i
        for k in rx:
            assert np.array_equal(rx[k], ry[k]), (i, k)


def same_shards(a, b):
    names = sorted(n for n in os.listdir(a) if n.startswith("shard-"))
    assert names == sorted(n for n in os.listdir(b) if n.startswith("shard-"))
    for n in names:
        with open(os.path.join(a, n), "rb") as f, \
                open(os.path.join(b, n), "rb") as g:
            assert f.read() == g.read(), n


def but_inputs(out):
    """A set's manifest but for its inputs (the text files, or the saved
    one)."""
    with open(os.path.join(out, "manifest.json")) as f:
        manifest = json.load(f)
    assert manifest.pop("inputs")
    return manifest


def command_pack(prepack_bin, saved, out, L, *extra):
    p = subprocess.run([prepack_bin, "pack", str(saved), "-o", str(out),
                        "--max-seq-len", str(L), "--quiet", *extra],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    v = subprocess.run([prepack_bin, "verify", str(out)], capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout + v.stderr


def leftovers(folder):
    return sorted(n for n in os.listdir(folder) if ".prepack-" in n)


# ---- the rows of the saved tokens are the rows of the text -----------------

@pytest.mark.parametrize("name,records,options,masked", [
    ("tok.jsonl.zst", "chat", {"assistant_only_loss": True}, True),
    ("tok.jsonl", "mixed", {}, True),
    ("tok.jsonl.gz", "plain", {}, False),
    ("tok.bin", "plain", {}, False),
    ("tok.idx", "plain", {"add_eos": False}, False)])
def test_saved_tokens_pack_as_the_text(tmp_path, prepack_bin, tok, name,
                                       records, options, masked):
    """pack_dataset(text, save_tokens=) at A, then `prepack pack` of the
    saved file at A: the same rows, the same shard bytes; and at another
    L (split there), the rows the text gives at that L."""
    lib_or_skip()
    records = {"chat": conversations(12) + PROMPT_COMPLETION,
               "mixed": TEXT + PROMPT_COMPLETION + conversations(4),
               "plain": TEXT + conversations(6)}[records]
    src = write_jsonl(tmp_path / "in.jsonl", records * 2)
    saved = tmp_path / name
    stats = pack_dataset(src, tmp_path / "text", 1024, tokenizer=tok,
                         save_tokens=saved, **options)
    assert stats["sequences"] == 2 * len(records)
    command_pack(prepack_bin, saved, tmp_path / "again", 1024)
    same_rows(tmp_path / "text", tmp_path / "again")
    same_shards(tmp_path / "text", tmp_path / "again")
    assert but_inputs(tmp_path / "text") == but_inputs(tmp_path / "again")
    assert ("loss_mask" in prepack.ShardSet(str(tmp_path / "text"))[0]) \
        == masked
    # another L: the text packed there, and the saved tokens
    pack_dataset(src, tmp_path / "text200", 200, tokenizer=tok,
                 overlong="split", **options)
    command_pack(prepack_bin, saved, tmp_path / "again200", 200,
                 "--overlong", "split")
    same_rows(tmp_path / "text200", tmp_path / "again200")
    assert leftovers(tmp_path) == []


def test_the_module_saves_and_stats_saves(tmp_path, prepack_bin):
    """python -m prepack pack|stats --save-tokens: the saved file packs as
    the text packs; stats saves too (its figures at several L from one
    tokenizing); --save-tokens without --tokenizer is a usage error."""
    lib_or_skip()
    src = write_jsonl(tmp_path / "chat.jsonl", conversations(8))
    base = [sys.executable, "-m", "prepack"]
    text = ["--tokenizer", TOKENIZER, "--assistant-only-loss"]
    p = subprocess.run(base + ["pack", src, "-o", str(tmp_path / "text"),
                               "--max-seq-len", "1024", "--save-tokens",
                               str(tmp_path / "p.jsonl.zst")] + text,
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    p = subprocess.run(base + ["stats", src, "--max-seq-len", "1024",
                               "--json", "--save-tokens",
                               str(tmp_path / "s.jsonl")] + text,
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 0, p.stderr
    for saved in ("p.jsonl.zst", "s.jsonl"):
        out = tmp_path / ("again-" + saved)
        command_pack(prepack_bin, tmp_path / saved, out, 1024)
        same_rows(tmp_path / "text", out)
    c = subprocess.run([prepack_bin, "stats", str(tmp_path / "s.jsonl"),
                        "--max-seq-len", "1024", "--json"],
                       capture_output=True, text=True)
    figures = ("sequences", "input_tokens", "rows", "lower_bound")
    assert [json.loads(c.stdout)[k] for k in figures] == \
        [json.loads(p.stdout)[k] for k in figures]
    p = subprocess.run(base + ["pack", src, "-o", str(tmp_path / "x"),
                               "--max-seq-len", "64", "--save-tokens",
                               str(tmp_path / "x.jsonl")],
                       capture_output=True, text=True, env=ENV)
    assert p.returncode == 2 and "need --tokenizer" in p.stderr, p.stderr
    with pytest.raises(ValueError, match="needs a tokenizer"):
        pack_dataset(src, tmp_path / "x", 64, save_tokens=tmp_path / "x.bin")
    with pytest.raises(ValueError, match=r"x\.txt: name a JSON lines file"):
        stats_dataset(src, 64, tokenizer=TOKENIZER,
                      save_tokens=tmp_path / "x.txt")
    assert not (tmp_path / "x").exists() and leftovers(tmp_path) == []


def test_groups_are_saved(tmp_path, prepack_bin, tok):
    """A record's group goes into its saved line, so the saved file's
    rows join the same sequences; two inputs whose groups would run
    together in one file are refused, naming the record."""
    lib_or_skip()
    records = [dict(r, group=g) for r, g in zip(
        conversations(6) + TEXT, [1, 1, 3, 3, None, 7, 7, 7, 2])]
    one = write_jsonl(tmp_path / "one.jsonl", records)
    words = write_jsonl(tmp_path / "words.jsonl", [
        dict(r, group=g) for r, g in zip(TEXT * 2, ["a", 'a"', 'a"', None,
                                                     "\u00e9", "\u00e9"])])
    pack_dataset([one, words, one], tmp_path / "text", 2048, tokenizer=tok,
                 save_tokens=tmp_path / "g.jsonl.zst")
    command_pack(prepack_bin, tmp_path / "g.jsonl.zst", tmp_path / "again",
                 2048)
    same_rows(tmp_path / "text", tmp_path / "again")
    two = write_jsonl(tmp_path / "two.jsonl", records[-1:] + records[:2])
    with pytest.raises(ValueError, match=r"two\.jsonl:1: group 2 is the last "
                       r"group of the input before"):
        pack_dataset([one, two], tmp_path / "x", 2048, tokenizer=tok,
                     save_tokens=tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match=r"one\.jsonl:1: a group, and a "
                       r"Megatron"):
        pack_dataset(one, tmp_path / "x", 2048, tokenizer=tok,
                     save_tokens=tmp_path / "x.bin")
    assert not (tmp_path / "x").exists()
    assert sorted(os.listdir(tmp_path)) == ["again", "g.jsonl.zst",
                                            "one.jsonl", "text", "two.jsonl",
                                            "words.jsonl"]


def test_json_lines_a_piece_at_a_time(tmp_path, monkeypatch):
    """A batch is formatted a piece of rows at a time: pieces of a few
    tokens give the lines one piece gives, and a sliced batch its own
    rows' lines (ids, masks, groups)."""
    from prepack import _saved_tokens
    seqs = [[1, 2, 3], [], [65535, 0], [7] * 9, [9]]
    masks = [[0, 1, 1], [], [1, 0], [1] * 9, [0]]
    groups = ["a", None, "3", "3", 'q"']
    offs = pa.array(np.cumsum([0] + [len(s) for s in seqs]), pa.int64())
    batch = pa.RecordBatch.from_arrays([
        pa.LargeListArray.from_arrays(
            offs, np.array(sum(seqs, []), np.uint32)),
        pa.LargeListArray.from_arrays(
            offs, np.array(sum(masks, []), np.uint8)),
        pa.array(groups)], names=["input_ids", "loss_mask", "group"])
    want = [dict({"input_ids": s, "loss_mask": m},
                 **({"group": g} if g is not None else {}))
            for s, m, g in zip(seqs, masks, groups)]

    def saved(name, b):
        with _saved_tokens.open_saved(tmp_path / name, text=object()) as w:
            w.add(b, "here")
            w.commit()
        return [json.loads(line) for line in open(tmp_path / name)]
    assert saved("one.jsonl", batch) == want
    monkeypatch.setattr(_saved_tokens, "_PIECE", 4)
    assert saved("pieces.jsonl", batch) == want
    assert saved("slice.jsonl", batch.slice(2, 2)) == want[2:4]


# ---- Megatron --------------------------------------------------------------

def test_megatron_is_megatrons_layout_and_widens(tmp_path, prepack_bin):
    """The .idx is MMIDIDX version 1 with one document a sequence; ids
    are uint16 (code 8) while each fits, and the .bin becomes int32 (code
    4) when one does not, the ids before kept: `prepack pack` reads back
    every sequence."""
    lib_or_skip()
    from prepack._saved_tokens import open_saved
    seqs = [[1, 2, 3], [], [65535, 0], [70000, 5], [9]]

    def batch(part):
        offs = np.cumsum([0] + [len(s) for s in part])
        ids = np.array([i for s in part for i in s], np.uint32)
        return pa.RecordBatch.from_arrays(
            [pa.LargeListArray.from_arrays(pa.array(offs, pa.int64()), ids)],
            names=["input_ids"])

    for name, parts, code in [("u16", [seqs[:3], seqs[4:]], 8),
                              ("i32", [seqs[:3], seqs[3:]], 4)]:
        prefix = str(tmp_path / name)
        with open_saved(prefix + ".bin", text=object()) as saved:
            for part in parts:
                saved.add(batch(part), "here")
            saved.commit()
        want = [s for part in parts for s in part]
        idx = open(prefix + ".idx", "rb").read()
        n = len(want)
        assert idx[:9] == b"MMIDIDX\x00\x00" and idx[9:17] == bytes([1] +
                                                                    [0] * 7)
        assert idx[17] == code and len(idx) == 34 + 12 * n + 8 * (n + 1)
        assert np.frombuffer(idx[34 + 12 * n:], "<i8").tolist() == \
            list(range(n + 1))
        width = 2 if code == 8 else 4
        assert os.path.getsize(prefix + ".bin") == width * sum(map(len, want))
        out = tmp_path / (name + "-set")
        command_pack(prepack_bin, prefix + ".idx", out, 8, "--algo",
                     "nextfit")
        got = {}
        for row in prepack.ShardSet(str(out)):
            cu = row["cu_seqlens"]
            for k, sid in enumerate(row["seq_ids"]):
                got[int(sid)] = row["input_ids"][cu[k]:cu[k + 1]].tolist()
        assert got == {i: s for i, s in enumerate(want) if s}
    assert leftovers(tmp_path) == []


def test_megatron_refuses_a_loss_mask(tmp_path, tok):
    """A masked set (assistant-only loss) has no place in a .bin/.idx:
    refused, naming the .jsonl.zst to use; nothing written."""
    lib_or_skip()
    src = write_jsonl(tmp_path / "chat.jsonl", conversations(3))
    with pytest.raises(ValueError, match=r"chat\.jsonl: lines 1\.\.3: the "
                       r"sequences carry a loss mask .* save them to a "
                       r"\.jsonl\.zst file instead"):
        pack_dataset(src, tmp_path / "set", 1024, tokenizer=tok,
                     assistant_only_loss=True,
                     save_tokens=tmp_path / "m.bin")
    assert sorted(os.listdir(tmp_path)) == ["chat.jsonl"]


# ---- nothing half-written --------------------------------------------------

@pytest.mark.parametrize("name", ["t.jsonl.zst", "t.idx"])
def test_a_bad_record_leaves_nothing(tmp_path, tok, name):
    """A bad record after batches were saved (read_rows=2: the bad one is
    in the fourth batch): the error names it, and neither the saved file
    nor a temporary nor the set is left; an old file at the name stays
    as it was."""
    lib_or_skip()
    records = TEXT * 2 + [{"text": 5}] + TEXT
    src = write_jsonl(tmp_path / "in.jsonl", records)
    old = tmp_path / name
    old.write_bytes(b"old")
    with pytest.raises(DatasetError, match=r"in\.jsonl:7: text"):
        pack_dataset(src, tmp_path / "set", 1024, tokenizer=tok,
                     read_rows=2, save_tokens=old)
    assert sorted(os.listdir(tmp_path)) == ["in.jsonl", name]
    assert old.read_bytes() == b"old"
    # every record read and saved, then the plan or the writer fails
    src = write_jsonl(tmp_path / "in.jsonl", TEXT)
    with pytest.raises(ValueError, match="more than max_seq_len 8"):
        stats_dataset(src, 8, tokenizer=tok, save_tokens=old)
    (tmp_path / "set").mkdir()
    (tmp_path / "set" / "x").write_text("x")
    with pytest.raises(ValueError, match="not empty"):
        pack_dataset(src, tmp_path / "set", 1024, tokenizer=tok,
                     save_tokens=old)
    assert sorted(os.listdir(tmp_path)) == sorted(["in.jsonl", name, "set"])
    assert old.read_bytes() == b"old"


def test_an_existing_file_is_replaced_a_link_refused(tmp_path, tok):
    """A regular file at the name is replaced once the run succeeds (as
    --svg replaces its file); a symbolic link there (the file itself, or
    one file of a Megatron pair) is refused before anything is read, the
    link and what it names untouched."""
    lib_or_skip()
    src = write_jsonl(tmp_path / "in.jsonl", TEXT)
    saved = tmp_path / "t.jsonl"
    saved.write_text("old\n")
    stats_dataset(src, 1024, tokenizer=tok, save_tokens=saved)
    assert [json.loads(line) for line in saved.read_text().splitlines()] == \
        [{"input_ids": ptext.Tokenize(tok)(r, "r")[0]} for r in TEXT]
    target = tmp_path / "target"
    target.write_text("keep")
    for link in ("l.jsonl.zst", "m.idx", "m.bin"):
        os.symlink(target, tmp_path / link)
        with pytest.raises(ValueError, match=f"{link} is a symbolic link"):
            stats_dataset(src, 1024, tokenizer=tok,
                          save_tokens=tmp_path / link.replace(".idx", ".bin"))
        os.unlink(tmp_path / link)
    os.mkdir(tmp_path / "d.jsonl")
    with pytest.raises(ValueError, match=r"d\.jsonl is not a regular file"):
        stats_dataset(src, 1024, tokenizer=tok, save_tokens=tmp_path /
                      "d.jsonl")
    with pytest.raises(ValueError, match=r"cannot create .*nowhere/t\.jsonl: "
                       r"No such file or directory"):
        stats_dataset(src, 1024, tokenizer=tok, save_tokens=tmp_path /
                      "nowhere" / "t.jsonl")
    with pytest.raises(ValueError, match=r"in\.jsonl is an input"):
        pack_dataset([src], tmp_path / "set", 1024, tokenizer=tok,
                     save_tokens=src)
    assert json.loads(open(src).readline()) == TEXT[0]
    assert target.read_text() == "keep" and leftovers(tmp_path) == []
    assert not (tmp_path / "set").exists()


def test_the_module_says_token_files_are_the_commands(tmp_path):
    """python -m prepack without a tokenizer on a saved Megatron pair:
    the command's input, said as for JSON lines of token ids."""
    lib_or_skip()
    for name in ("t.bin", "t.idx", "t.jsonl.zst"):
        with pytest.raises(DatasetError, match="prepack pack"):
            pack_dataset(str(tmp_path / name), tmp_path / "set", 64)
