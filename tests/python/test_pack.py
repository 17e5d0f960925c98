"""prepack.pack: in-memory packing through libprepack (ctypes)."""
import os

import numpy as np
import pytest

import prepack


def lib_or_skip():
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("PREPACK_LIBRARY not set (sanitizer builds cannot be loaded)")


def test_pack_in_memory():
    lib_or_skip()
    rng = np.random.default_rng(0)
    seqs = [rng.integers(0, 70000, rng.integers(1, 60)).tolist() for _ in range(200)]
    rows = prepack.pack(seqs, max_seq_len=64, algo="bfd")
    seen = {}
    for r in rows:
        assert len(r["input_ids"]) <= 64 and r["cu_seqlens"][0] == 0
        assert r["cu_seqlens"][-1] == len(r["input_ids"])
        for j, s in enumerate(r["seq_ids"]):
            a, b = r["cu_seqlens"][j], r["cu_seqlens"][j + 1]
            seen[int(s)] = r["input_ids"][a:b].tolist()
    assert seen == dict(enumerate(seqs))
    b = prepack.collate(rows, "varlen")
    assert b["cu_seqlens"][-1] == sum(map(len, seqs))
    with pytest.raises(ValueError, match="more than max_seq_len"):
        prepack.pack([[1] * 10], max_seq_len=4)


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PREPACK_LIBRARY", "/nonexistent/libprepack.so")
    monkeypatch.setattr(prepack._native, "_lib", None)
    with pytest.raises(RuntimeError, match="libprepack not found"):
        prepack.pack([[1, 2]])
