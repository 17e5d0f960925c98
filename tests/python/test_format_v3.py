"""Format version 3 (docs/FORMAT.md): a uint32 set stored a row's ids in
3 bytes a token when they were all below 2^24. No writer makes one now
(version 4 replaced it); both readers (the C library's, through ctypes,
and the pure-Python one) still read it and version 1:
fixtures/sets/v1-uint32 and v3-uint32 are sets the writers of those
versions made, committed with the JSON lines they were packed from. Rows
whose input_ids length fits no width the set allows are refused by
both."""
import json
import os
import struct
import shutil
import subprocess

import numpy as np
import pytest

from prepack import CorruptShardError, ShardSet, ShardSetError
from shard_edit import read_shard, rewrite

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
OLD = os.path.join(ROOT, "fixtures", "sets", "v1-uint32")
OLD_SOURCE = OLD + ".jsonl"
OLD16 = os.path.join(ROOT, "fixtures", "sets", "v1-uint16")


def backends():
    return ["python"] + (["c"] if os.environ.get("PREPACK_LIBRARY") else [])


def sequences(rows):
    """{sequence id: its tokens} over every row."""
    out = {}
    for r in rows:
        cu = r["cu_seqlens"]
        for j, q in enumerate(r["seq_ids"]):
            out[int(q)] = r["input_ids"][cu[j]:cu[j + 1]].tolist()
    return out


def source(path):
    with open(path) as f:
        return {i: json.loads(line)["input_ids"] for i, line in enumerate(f)}


def raw_rows(set_dir, shard="shard-00000.zst"):
    """The shard's rows as msgpack decoded them, frame by frame."""
    return read_shard(os.path.join(set_dir, shard))[0]


@pytest.mark.parametrize("backend", backends())
def test_old_version_1_set_reads_as_packed(backend):
    m = json.load(open(os.path.join(OLD, "manifest.json")))
    assert (m["version"], m["token_dtype"]) == (1, "uint32")
    s = ShardSet(OLD, backend=backend)
    rows = [s[i] for i in range(len(s))]
    assert all(r["input_ids"].dtype == np.uint32 for r in rows)
    assert sequences(rows) == source(OLD_SOURCE)
    assert any(len(r["loss_mask"]) for r in rows)
    s.verify()


def test_old_version_1_set_verifies_against_its_input(prepack_bin):
    out = subprocess.run([prepack_bin, "verify", OLD, "--input", OLD_SOURCE],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


OLD3 = os.path.join(ROOT, "fixtures", "sets", "v3-uint32")


@pytest.fixture
def wide(tmp_path):
    """A copy of fixtures/sets/v3-uint32: a version 3 set of uint32 ids
    below 2^24 (3 bytes each), but for the rows of sequence 5, whose last
    id needs 4 bytes; written by the version 3 writer, before version 4."""
    shutil.copytree(OLD3, tmp_path / "set")
    return tmp_path / "set", OLD3 + ".jsonl"


def stored_widths(set_dir):
    widths = set()
    for name in sorted(os.listdir(set_dir)):
        if name.startswith("shard-"):
            for rows in raw_rows(set_dir, name):
                for r in rows:
                    t = struct.unpack("<i", r["cu_seqlens"][-4:])[0]
                    widths.add(len(r["input_ids"]) // t)
                    assert len(r["input_ids"]) % t == 0
    return widths


@pytest.mark.parametrize("backend", backends())
def test_version_3_set_stores_3_bytes_and_reads_back(wide, backend):
    set_dir, src = wide
    m = json.load(open(set_dir / "manifest.json"))
    assert (m["version"], m["token_dtype"]) == (3, "uint32")
    assert stored_widths(set_dir) == {3, 4}  # the row of 2^24 + 7 in 4
    s = ShardSet(str(set_dir), backend=backend)
    assert sequences([s[i] for i in range(len(s))]) == source(src)
    s.verify()


def test_version_3_verifies_against_its_input(wide, prepack_bin):
    set_dir, src = wide
    out = subprocess.run([prepack_bin, "verify", str(set_dir), "--input",
                          str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


def refused(set_dir, prepack_bin, backend, pattern):
    """Both the command's verify and ShardSet refuse, naming the shard."""
    out = subprocess.run([prepack_bin, "verify", str(set_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 1 and "shard-00000.zst" in out.stderr + \
        out.stdout, out
    with pytest.raises((CorruptShardError, ShardSetError), match=pattern):
        s = ShardSet(str(set_dir), backend=backend)
        for i in range(len(s)):
            s[i]


def ids_as(row, width):
    """The row's ids (3-byte or 4-byte on disk) re-encoded `width` bytes
    each, little-endian (low bytes kept)."""
    t = struct.unpack("<i", row["cu_seqlens"][-4:])[0]
    w = len(row["input_ids"]) // t
    ids = [int.from_bytes(row["input_ids"][i * w:(i + 1) * w], "little")
           for i in range(t)]
    return b"".join(x.to_bytes(8, "little")[:width] for x in ids)


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("width", [1, 2, 5, 8])
def test_an_id_width_that_is_not_3_or_4_is_refused(wide, prepack_bin,
                                                   backend, width):
    set_dir, _ = wide
    frames = raw_rows(set_dir)
    frames[0][0]["input_ids"] = ids_as(frames[0][0], width)
    rewrite(set_dir, frames)
    refused(set_dir, prepack_bin, backend, "frame 0")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("version", [1, 2])
def test_3_byte_ids_under_an_older_version_are_refused(wide, prepack_bin,
                                                       backend, version):
    """A version 3 set's manifest edited to say 1 (or 2): its rows of
    3-byte ids are not whole uint32 values, whatever their length."""
    set_dir, _ = wide
    frames = raw_rows(set_dir)
    for r in frames[0]:  # every row of frame 0: 4 ids in 3 bytes each
        r["input_ids"] = ids_as(r, 3)[:12]
        r["cu_seqlens"] = struct.pack("<ii", 0, 4)
        r["seq_ids"] = r["seq_ids"][:8]
    rewrite(set_dir, frames)
    s = ShardSet(str(set_dir), backend=backend)  # as version 3: 4 tokens
    assert all(len(s[i]["input_ids"]) == 4 for i in range(len(frames[0])))
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["version"] = version
    mp.write_text(json.dumps(m))
    refused(set_dir, prepack_bin, backend, "frame 0")


@pytest.mark.parametrize("backend", backends())
def test_a_uint16_set_never_reads_3_byte_ids(tmp_path, prepack_bin, backend):
    """token_dtype uint16 in a version 3 manifest: 3 bytes a token is no
    width of uint16 ids (fixtures/sets/v1-uint16, a version 1 set)."""
    set_dir = tmp_path / "set"
    shutil.copytree(OLD16, set_dir)
    frames = raw_rows(set_dir)
    r = frames[0][0]
    r["input_ids"] = b"".join(int(x).to_bytes(3, "little") for x in
                              np.frombuffer(r["input_ids"], "<u2"))
    rewrite(set_dir, frames)
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["version"] = 3
    mp.write_text(json.dumps(m))
    refused(set_dir, prepack_bin, backend, "frame 0")
