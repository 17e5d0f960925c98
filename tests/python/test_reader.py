"""The Python reader, written from docs/FORMAT.md alone, against the C
reader and against the corpus itself."""
import json
import os
import shutil
import subprocess

import numpy as np
import pytest

import prepack


def test_every_token_back_in_place(shard_set, corpus):
    s = prepack.ShardSet(shard_set)
    assert len(s) == s.manifest["rows"] == 1707
    assert s.manifest["token_dtype"] == "uint16"
    placed = [0] * len(corpus)
    for row in s:
        ids, cu = row["input_ids"], row["cu_seqlens"]
        assert ids.dtype == np.uint16 and cu.dtype == np.int32
        assert len(ids) <= s.max_seq_len
        for j, seq in enumerate(row["seq_ids"]):
            start = int(row["seq_starts"][j])
            chunk = ids[cu[j]:cu[j + 1]]
            assert chunk.tolist() == corpus[seq][start:start + len(chunk)]
            placed[seq] += len(chunk)
    assert placed == [len(c) for c in corpus]  # every token exactly once


def test_rows_equal_the_c_reader(shard_set, prepack_bin):
    s = prepack.ShardSet(shard_set)
    for i in [0, 1, 15, 16, 499, 500, 1000, len(s) - 1]:
        out = subprocess.run([prepack_bin, "inspect", shard_set, "--row", str(i),
                              "--json"], check=True, capture_output=True).stdout
        c = json.loads(out)
        row = s[i]
        assert c["tokens"] == len(row["input_ids"])
        assert [q["id"] for q in c["sequences"]] == row["seq_ids"].tolist()
        assert [q["offset"] for q in c["sequences"]] == row["cu_seqlens"][:-1].tolist()
        assert [q["start"] for q in c["sequences"]] == row["seq_starts"].tolist()


def test_random_access_and_negative_index(shard_set):
    s = prepack.ShardSet(shard_set)
    a = s[-1]["input_ids"].copy()
    s[3], s[900]
    assert np.array_equal(s[len(s) - 1]["input_ids"], a)
    with pytest.raises(IndexError):
        s[len(s)]


def test_verify_passes(shard_set):
    prepack.ShardSet(shard_set).verify()


def test_damage_raises_naming_shard_and_frame(shard_set, tmp_path):
    bad = tmp_path / "bad"
    shutil.copytree(shard_set, bad)
    shard = bad / "shard-00001.zst"
    data = bytearray(shard.read_bytes())
    data[100] ^= 0x5A
    shard.write_bytes(bytes(data))
    s = prepack.ShardSet(bad)
    with pytest.raises(prepack.CorruptShardError, match=r"shard-00001.zst: frame 0"):
        for row in s:
            pass
    with pytest.raises(prepack.CorruptShardError, match="xxh64"):
        s.verify()
    shard.write_bytes(bytes(data[:-3]))
    with pytest.raises(prepack.CorruptShardError, match="the manifest says"):
        prepack.ShardSet(bad)
    os.remove(shard)
    with pytest.raises(prepack.ShardSetError, match="missing"):
        prepack.ShardSet(bad)
    (bad / "manifest.json").write_text("{")
    with pytest.raises(prepack.ShardSetError, match="invalid JSON"):
        prepack.ShardSet(bad)
    os.remove(bad / "manifest.json")
    with pytest.raises(prepack.ShardSetError, match="no manifest"):
        prepack.ShardSet(bad)


@pytest.mark.parametrize("padded", [False, True])
def test_batches_equal_the_c_reader(shard_set, prepack_bin, padded):
    s = prepack.ShardSet(shard_set)
    for pick in ([0, 1, 2], [1706, 3, 500, 16], [42]):
        args = [prepack_bin, "inspect", shard_set, "--batch",
                ",".join(map(str, pick))] + (["--padded"] if padded else [])
        c = json.loads(subprocess.run(args, check=True,
                                      capture_output=True).stdout)
        rows = [s[i] for i in pick]
        if padded:
            b = prepack.collate(rows, "padded", max_seq_len=s.max_seq_len)
            pairs = [("input_ids", "input_ids"), ("position_ids", "position_ids"),
                     ("labels", "labels"), ("doc_ids", "doc_ids"),
                     ("attention_mask", "attention_mask")]
        else:
            b = prepack.collate(rows, "flex")
            b.update(prepack.collate(rows, "varlen"))
            pairs = [("input_ids", "input_ids"), ("position_ids", "position_ids"),
                     ("labels", "labels"), ("doc_ids", "doc_ids"),
                     ("cu_seqlens", "cu_seqlens")]
            assert c["max_seqlen"] == b["max_seqlen"]
        for ours, theirs in pairs:
            assert np.asarray(b[ours]).ravel().tolist() == c[theirs], ours
