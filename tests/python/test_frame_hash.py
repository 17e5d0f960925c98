"""Frames are held to their seek table entry's hash by both readers,
whatever a frame's zstd framing: without zstd's content checksum, two zstd
frames under one entry (refused as such: a frame is one zstd frame), or
zstd's checksum present (which a reader could be tempted to trust in
place of the entry). Each case below rewrites
frame 1 of a version 1 set's first shard (fixtures/sets/v1-uint16: the
path that decompresses a frame whole before any row) so, with the
entry's hash right (the rows read as before) or wrong (CorruptShardError
naming the frame, never rows). A version 4 set checks a frame's
compressed bytes against its index first: test_format_v4.py."""
import json
import os
import shutil

import numpy as np
import pytest
import xxhash
import zstandard

from prepack import CorruptShardError, ShardSet
from conftest import ROOT

GOLDEN = f"{ROOT}/fixtures/sets/v1-uint16"
SHARD = "shard-00000.zst"


def _frames(data):
    """The shard's seek table entries [compressed, decompressed, hash] and
    where the table starts."""
    n = int.from_bytes(data[-9:-5], "little")
    table = len(data) - (12 * n + 17)
    entries = [[int.from_bytes(data[table + 8 + 12 * i + 4 * k:
                                    table + 8 + 12 * i + 4 * k + 4], "little")
                for k in range(3)] for i in range(n)]
    return entries, table


def _low32(content):
    return xxhash.xxh64_intdigest(content) & 0xFFFFFFFF


def rewrite_frame(tmp_path, make, entry_hash=None):
    """A copy of the version 1 set with frame 1 of its first shard replaced by
    make(content) (compressed bytes) and its entry's hash by
    entry_hash(content, new bytes) (default: the content's, right); the
    seek table and the manifest's bytes and xxh64 follow."""
    d = tmp_path / "set"
    shutil.copytree(GOLDEN, d)
    data = (d / SHARD).read_bytes()
    entries, table = _frames(data)
    at = entries[0][0]  # frame 1 starts where frame 0 ends
    old = data[at:at + entries[1][0]]
    content = zstandard.ZstdDecompressor().decompress(old)
    new = make(content)
    entries[1][0] = len(new)
    entries[1][2] = (entry_hash or (lambda c, b: _low32(c)))(content, new)
    body = data[:at] + new + data[at + len(old):table]
    seek = data[table:table + 8] + b"".join(
        v.to_bytes(4, "little") for e in entries for v in e) + data[-9:]
    out = body + seek
    (d / SHARD).write_bytes(out)
    m = json.loads((d / "manifest.json").read_text())
    m["shards"][0]["bytes"] = len(out)
    m["shards"][0]["xxh64"] = xxhash.xxh64_hexdigest(out)
    (d / "manifest.json").write_text(json.dumps(m))
    return d


def one_frame(checksum):
    return lambda c: zstandard.ZstdCompressor(
        level=3, write_checksum=checksum, write_content_size=True).compress(c)


def two_frames(c):
    """The content as two zstd frames, each with zstd's checksum: the last
    4 bytes are the second part's hash only."""
    z = zstandard.ZstdCompressor(level=3, write_checksum=True,
                                 write_content_size=True)
    half = len(c) // 2
    return z.compress(c[:half]) + z.compress(c[half:])


def rows(path, backend):
    s = ShardSet(path, backend=backend)
    return [s[i] for i in range(len(s))]


def same_rows(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            np.testing.assert_array_equal(x[k], y[k])


CASES = {
    "no zstd checksum": one_frame(False),
    "two frames in one entry": two_frames,
    "zstd checksum": one_frame(True),
}


# the C reader through ctypes needs libprepack loadable (not the sanitizer build)
BACKENDS = [pytest.param("c", marks=pytest.mark.skipif(
    not os.environ.get("PREPACK_LIBRARY"),
    reason="PREPACK_LIBRARY not set (sanitizer builds cannot be loaded)")), "python"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_a_frame_with_the_right_entry_hash_reads(tmp_path, case, backend):
    d = rewrite_frame(tmp_path, CASES[case])
    if case == "two frames in one entry":
        # FORMAT.md: a frame is one zstd frame; zstd alone would read on
        # into the second and serve its rows
        with pytest.raises(CorruptShardError,
                           match="frame 1: not one zstd frame"):
            rows(d, backend)
        return
    same_rows(rows(d, backend), rows(GOLDEN, backend))


WRONG = {
    # zstd checks nothing: the reader's own hash must
    "no zstd checksum": (one_frame(False), lambda c, b: _low32(c) ^ 1),
    # zstd's trailer, right for the frame, is not the entry's hash
    "zstd checksum": (one_frame(True), lambda c, b: _low32(c) ^ 1),
    # the entry holds the last frame's hash (the frame's last 4 bytes),
    # not the whole content's: taking the trailer for the content's hash
    # would pass it
    "two frames, the last one's hash": (
        two_frames, lambda c, b: int.from_bytes(b[-4:], "little")),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("case", sorted(WRONG))
def test_a_frame_with_a_wrong_entry_hash_is_refused(tmp_path, case, backend):
    make, entry_hash = WRONG[case]
    d = rewrite_frame(tmp_path, make, entry_hash)
    s = ShardSet(d, backend=backend)
    per_frame = s.rows_per_frame
    s[0]  # frame 0 is intact
    why = "frame 1: content does not match its seek table" \
        if case != "two frames, the last one's hash" \
        else "frame 1: not one zstd frame"
    with pytest.raises(CorruptShardError, match=why):
        s[per_frame]
