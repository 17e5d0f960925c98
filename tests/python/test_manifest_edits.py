"""Manifest edits and directory changes that make a shard set lie about
itself: both readers (the C one behind `prepack verify`, and Python's
ShardSet) must refuse each one, naming what is wrong. One table drives
both, so the two readers cannot drift apart.

The set is the golden one (fixtures/expected/set): 2 shards, 20 rows, 317
tokens, L 16, with stats and inputs."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from prepack import ShardSet, ShardSetError

GOLDEN = os.path.join(ROOT, "fixtures", "expected", "set")


def edit(fn):
    """An edit of the manifest's parsed JSON, in place."""
    def apply(d):
        path = os.path.join(d, "manifest.json")
        with open(path) as f:
            m = json.load(f)
        fn(m)
        with open(path, "w") as f:
            json.dump(m, f)
    return apply


def shard(m, i):
    return m["shards"][i]


def copy_shard(d, src, dst):
    shutil.copy(os.path.join(d, src), os.path.join(d, dst))


def set_many(**changes):
    def fn(m):
        for path, value in changes.items():
            obj, *keys = path.split("__")
            target = m if obj == "top" else m[obj]
            for k in keys[:-1]:
                target = target[int(k)] if k.isdigit() else target[k]
            last = keys[-1]
            target[int(last) if last.isdigit() else last] = value(
                target[int(last) if last.isdigit() else last])
    return edit(fn)


def swap_shards(m):
    m["shards"].reverse()


def shard0_twice(m):
    m["shards"][1] = dict(m["shards"][0])


def no_shards(m):
    m["shards"] = []


def no_shards_no_totals(m):
    m["shards"] = []
    m["rows"] = m["tokens"] = 0


def huge_rows(m, rows=2**62):
    extra = rows - shard(m, 1)["rows"]
    shard(m, 1)["rows"] += extra
    m["rows"] += extra


def huge_rows_and_bytes(m):
    """Claims the bytes could hold: the file's real size gives it away,
    before anything loops over 2^58 rows."""
    huge_rows(m, 2**58)
    extra = 2**58 - shard(m, 1)["tokens"]
    shard(m, 1)["tokens"] += extra
    m["tokens"] += extra
    shard(m, 1)["bytes"] = 2**63
    m["stats"] = None


def tokens_moved(m):
    """Shard token counts that still add up, and no stats to object."""
    shard(m, 0)["tokens"] -= 1
    shard(m, 1)["tokens"] += 1
    m["stats"] = None


def stats_items(m):
    m["stats"]["items"] += 1


def stats_max_seqs(m):
    m["stats"]["max_seqs_in_row"] -= 1


def fewer_sequences(m):
    m["stats"]["sequences"] = 3
    m["inputs"][0]["sequences"] = 3


def max_seqs_per_row(m):
    m["max_seqs_per_row"] = 2


def add(key, delta):
    def fn(m):
        m[key] += delta
    return fn


def set_to(key, value):
    def fn(m):
        m[key] = value
    return fn


def stats_add(key, delta):
    def fn(m):
        m["stats"][key] += delta
    return fn


def inputs_add(key, delta):
    def fn(m):
        m["inputs"][0][key] += delta
    return fn


def stray_shard(d):
    copy_shard(d, "shard-00001.zst", "shard-00002.zst")


def stray_tmp(d):
    copy_shard(d, "shard-00001.zst", "shard-00002.zst.tmp")


# (name, change, what the C reader says, what Python says, found at open)
CASES = [
    ("rows -1", edit(set_to("rows", -1)), "rows", "rows", True),
    ("rows off by 3", edit(add("rows", 3)), "its shards", "its shards", True),
    ("tokens off by 1", edit(add("tokens", 1)), "its shards", "its shards",
     True),
    ("shards reordered", edit(swap_shards), "shard 0 is shard-00000.zst",
     "shard 0 is shard-00000.zst", True),
    ("shard 0 listed twice", edit(shard0_twice), "shard 1 is shard-00001.zst",
     "shard 1 is shard-00001.zst", True),
    ("max_seq_len raised", edit(add("max_seq_len", 16)), "stats.packed.slots",
     "stats.packed.slots", True),
    ("max_seq_len lowered", edit(add("max_seq_len", -4)), "tokens in",
     "tokens in", True),
    ("inputs sequences", edit(inputs_add("sequences", 1)), "stats.sequences",
     "stats.sequences", True),
    ("inputs tokens", edit(inputs_add("tokens", -1)), "stats.input_tokens",
     "stats.input_tokens", True),
    ("inputs first_sequence", edit(inputs_add("first_sequence", 1)),
     "first_sequence", "first_sequence", True),
    ("stats rows", edit(stats_add("rows", 1)), "stats.rows", "stats.rows",
     True),
    ("stats tokens", edit(stats_add("tokens", -1)), "stats.tokens",
     "stats.tokens", True),
    ("stats lower_bound", edit(stats_add("lower_bound", 5)), "lower_bound",
     "lower_bound", True),
    ("no shards", edit(no_shards), "its shards", "its shards", True),
    ("no shards, totals 0", edit(no_shards_no_totals), "stats.rows",
     "stats.rows", True),
    ("rows 2^62", edit(huge_rows), "more than its", "more than its", True),
    ("rows 2^58, bytes 2^63", edit(huge_rows_and_bytes), "the manifest says",
     "the manifest says", True),
    ("xxh64 in capitals", edit(lambda m: shard(m, 0).update(
        xxh64=shard(m, 0)["xxh64"].upper())), "16 lowercase hex digits",
     "16 lowercase hex digits", True),
    ("xxh64 with 0x", edit(lambda m: shard(m, 0).update(
        xxh64="0x" + shard(m, 0)["xxh64"][2:])), "16 lowercase hex digits",
     "16 lowercase hex digits", True),
    ("rows as text", edit(set_to("rows", "20")), "rows", "rows", True),
    ("stats a list", edit(set_to("stats", [])), "stats", "stats", True),
    ("stray shard", stray_shard, "shard-00002.zst: not listed",
     "shard-00002.zst: not listed", True),
    # only the rows can tell
    ("stray temporary", stray_tmp, "shard-00002.zst.tmp: not listed",
     "shard-00002.zst.tmp: not listed", False),
    ("shard tokens moved", edit(tokens_moved), "its rows hold",
     "its rows hold", False),
    ("stats items", edit(stats_items), "stats.items", "stats.items", False),
    ("stats max_seqs_in_row", edit(stats_max_seqs), "max_seqs_in_row",
     "max_seqs_in_row", False),
    ("fewer sequences", edit(fewer_sequences), "sequences were packed",
     "sequences were packed", False),
    ("max_seqs_per_row", edit(max_seqs_per_row), "max_seqs_per_row 2",
     "max_seqs_per_row 2", False),
    ("token_dtype edited", edit(set_to("token_dtype", "uint32")),
     "token_dtype does not match the shards",
     "token_dtype does not match the shards", False),
]


@pytest.fixture
def golden(tmp_path):
    d = tmp_path / "set"
    shutil.copytree(GOLDEN, d)
    return str(d)


def test_golden_passes_both(golden, prepack_bin):
    p = subprocess.run([prepack_bin, "verify", golden], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    ShardSet(golden).verify()


@pytest.mark.parametrize("name,change,c_says,py_says,at_open", CASES,
                         ids=[c[0] for c in CASES])
def test_edit_refused_by_both(golden, prepack_bin, name, change, c_says,
                              py_says, at_open):
    change(golden)
    p = subprocess.run([prepack_bin, "verify", golden], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert c_says in p.stdout, p.stdout
    with pytest.raises(ShardSetError, match=None) as e:
        s = ShardSet(golden)
        assert not at_open, "opened a set that lies at open"
        s.verify()
    assert py_says in str(e.value), str(e.value)


def test_empty_set_that_says_so(tmp_path, prepack_bin):
    """Packed from sequences that all drop: zero shards, and the stats say
    nothing was placed. Both readers accept it as empty."""
    src = tmp_path / "long.jsonl"
    src.write_text('{"input_ids": [1, 2, 3, 4, 5]}\n')
    out = tmp_path / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                    "--max-seq-len", "4", "--overlong", "drop", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    assert json.load(open(out / "manifest.json"))["shards"] == []
    subprocess.run([prepack_bin, "verify", str(out)], check=True,
                   capture_output=True)
    s = ShardSet(out)
    assert len(s) == 0
    s.verify()


def test_pad_multiple_raised_is_refused_by_every_reader(tmp_path, prepack_bin):
    """pad_multiple edited from 8 to 64 (still dividing L): rows whose
    sequences, padded to 64, no longer fit L. verify refuses the set, and
    so must every reader that pads (ShardSet's rows, PackedDataset's
    batches), by the one rule: a row's padded sequences fit L."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input_ids": list(range(1, n + 1))})
                           + "\n" for n in (40, 30, 20, 10, 9, 50, 7, 60)))
    out = tmp_path / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                    "--max-seq-len", "128", "--pad-multiple", "8", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    edit(lambda m: m.update(pad_multiple=64))(str(out))
    p = subprocess.run([prepack_bin, "verify", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "padded to multiples of 64" in p.stdout
    backends = ["python", "c"] if os.environ.get("PREPACK_LIBRARY") \
        else ["python"]
    for backend in backends:
        s = ShardSet(str(out), backend=backend)
        with pytest.raises(ShardSetError, match="padded to multiples of 64"):
            [s[i] for i in range(len(s))]
    if not os.environ.get("PREPACK_LIBRARY"):
        return
    from prepack.torch import PackedDataset
    for backend in backends:
        ds = PackedDataset(str(out), batch_rows=1, form="varlen",
                           backend=backend)
        with pytest.raises(ShardSetError, match="padded to multiples of 64"):
            for batch in ds:
                assert batch["input_ids"].shape[-1] <= 128
