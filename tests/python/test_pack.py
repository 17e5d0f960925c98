"""prepack.pack: in-memory packing through libprepack (ctypes)."""
import os
import re

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


def test_pack_in_memory_split():
    """Every option of the CLI's planner, split included: chunks of at most
    L tokens, each where seq_starts says, covering each sequence once."""
    lib_or_skip()
    rng = np.random.default_rng(1)
    seqs = [rng.integers(0, 1000, rng.integers(1, 200)).tolist() for _ in range(50)]
    rows = prepack.pack(seqs, max_seq_len=64, overlong="split")
    got = {i: [None] * len(s) for i, s in enumerate(seqs)}
    for r in rows:
        assert len(r["input_ids"]) <= 64
        for j, s in enumerate(r["seq_ids"]):
            a, b = r["cu_seqlens"][j], r["cu_seqlens"][j + 1]
            start = int(r["seq_starts"][j])
            for q, t in enumerate(r["input_ids"][a:b].tolist()):
                assert got[int(s)][start + q] is None
                got[int(s)][start + q] = t
    assert got == dict(enumerate(seqs))
    batch = prepack.collate(rows, "varlen")
    assert batch["cu_seqlens"][-1] == sum(map(len, seqs))


def test_missing_library_says_how_to_install(monkeypatch):
    monkeypatch.setenv("PREPACK_LIBRARY", "/nonexistent/libprepack.so")
    monkeypatch.setattr(prepack._native, "_lib", None)
    with pytest.raises(RuntimeError, match="libprepack not found"):
        prepack.pack([[1, 2]])


BAD_IDS = [
    ([[1, -2]], "sequence 0, position 1: -2 is out of range"),
    ([[3], [1, 2**33]], "sequence 1, position 1: 8589934592 is out of range"),
    ([[2**40]], "sequence 0, position 0: 1099511627776 is out of range"),
    ([[1, 1.5]], "sequence 0, position 1: 1.5 is not an integer"),
    ([[1, 2.0]], "sequence 0, position 1: 2.0 is not an integer"),
    ([[True, 2]], "sequence 0, position 0: True is not an integer"),
    ([[1, None]], "sequence 0, position 1: None is not an integer"),
    ([["7"]], "sequence 0, position 0: '7' is not an integer"),
    ([[[1, 2], [3, 4]]], "sequence 0: 2-dimensional"),
    ([np.array([1, -1], dtype=np.int8)], "position 1: -1 is out of range"),
    ([np.array([5, 2**40], dtype=np.int64)], "position 1: 1099511627776"),
    ([np.array([2**64 - 1], dtype=np.uint64)], "18446744073709551615"),
    ([np.array([1.0, 2.0])], "position 0: 1.0 is a float64 value"),
    ([np.array([True])], "is a bool value"),
    ([np.array([1, -2], dtype=object)], "position 1: -2 is out of range"),
    ([np.array([1, 2**70], dtype=object)], "position 1: 1180591620717411303424"),
    ([np.array(["a"], dtype=object)], "position 0: 'a' is not an integer"),
    (["abc"], "sequence 0: not a sequence of token ids"),
    ([5], "sequence 0: not a sequence of token ids"),
]


@pytest.mark.parametrize("sequences,message", BAD_IDS,
                         ids=[str(i) for i in range(len(BAD_IDS))])
@pytest.mark.parametrize("entry", ["pack", "pack_prompts"])
def test_bad_ids_refused_naming_where(sequences, message, entry):
    """Never stored as another number: lists, numpy arrays of any dtype."""
    from prepack.prefill import pack_prompts
    f = prepack.pack if entry == "pack" else pack_prompts
    with pytest.raises(ValueError, match=re.escape(message)):
        f(sequences)


def test_bad_ids_in_torch_tensors_refused():
    torch = pytest.importorskip("torch")
    from prepack.prefill import pack_prompts
    for f in (prepack.pack, pack_prompts):
        with pytest.raises(ValueError, match="position 1: -3 is out of range"):
            f([torch.tensor([1, 2]), torch.tensor([4, -3])])
        with pytest.raises(ValueError, match="sequence 0, position 0: 1.5 is "
                                             "a float32 value"):
            f([torch.tensor([1.5, 2.0])])


def test_every_integer_kind_accepted():
    lib_or_skip()
    seqs = [np.array([1, 2], dtype=np.int8), np.array([3], dtype=np.uint16),
            np.array([4, 2**32 - 1], dtype=np.int64), (5, 6), [7],
            np.array([8], dtype=np.uint64), np.array([9], dtype=object),
            range(10, 11)]
    rows = prepack.pack(seqs, max_seq_len=16)
    got = sorted(int(t) for r in rows for t in r["input_ids"])
    assert got == [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 2**32 - 1]


# ---- odd inputs to pack_dataset (issue 26) ---------------------------------

def _parquet(path, rows, groups=None):
    import pyarrow as pa
    import pyarrow.parquet as pq
    cols = {"input_ids": pa.array(rows, type=pa.list_(pa.int64()))}
    if groups is not None:
        cols["group"] = pa.array(groups, type=pa.string())
    pq.write_table(pa.table(cols), path)
    return str(path)


def test_pack_dataset_an_input_given_twice_is_two_inputs(tmp_path):
    """As `prepack pack a.jsonl a.jsonl`: two inputs in the manifest, and a
    group never spans the two copies (it would be 10 tokens here, over
    max_seq_len 5)."""
    lib_or_skip()
    import json
    from prepack.dataset import pack_dataset
    p = _parquet(tmp_path / "a.parquet", [[1, 2, 3], [4, 5]], ["a", "a"])
    stats = pack_dataset([p, p], tmp_path / "set", max_seq_len=5)
    assert stats["sequences"] == 4 and stats["rows"] == 2
    m = json.loads((tmp_path / "set" / "manifest.json").read_text())
    assert [(i["path"], i["first_sequence"], i["sequences"])
            for i in m["inputs"]] == [(p, 0, 2), (p, 2, 2)]


def test_pack_dataset_no_rows_names_the_input(tmp_path):
    lib_or_skip()
    import pyarrow as pa
    from prepack.dataset import DatasetError, pack_dataset
    empty = _parquet(tmp_path / "empty.parquet", [])
    with pytest.raises(DatasetError, match="empty.parquet"):
        pack_dataset([empty], tmp_path / "s1", max_seq_len=8)
    arrow = str(tmp_path / "empty.arrow")
    schema = pa.schema([("input_ids", pa.list_(pa.int64()))])
    with pa.ipc.new_file(arrow, schema):
        pass
    with pytest.raises(DatasetError, match="empty.arrow"):
        pack_dataset(arrow, tmp_path / "s2", max_seq_len=8)
    with pytest.raises(DatasetError, match="the table"):
        pack_dataset(pa.table({"input_ids": pa.array(
            [], type=pa.list_(pa.int64()))}), tmp_path / "s3", max_seq_len=8)
