"""Both readers, the C one (libprepack through ctypes) and the pure-Python
one, over every shard set fixture: the same rows, and the same batches in
every form, key for key, dtype for dtype."""
import os

import numpy as np
import pytest

import prepack
from conftest import ROOT


def lib_or_skip():
    if not os.environ.get("PREPACK_LIBRARY") and not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


def same(a, b, where):
    assert sorted(a) == sorted(b), where
    for k in a:
        if k == "mask_mod":
            continue
        x, y = a[k], b[k]
        if isinstance(x, (int, float)):
            assert type(x) is type(y) and x == y, (where, k)
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, (where, k)
        assert np.array_equal(x, y), (where, k)


@pytest.fixture(params=["golden", "corpus"])
def shard_dir(request, shard_set):
    return (os.path.join(ROOT, "fixtures", "expected", "set")
            if request.param == "golden" else shard_set)


def test_rows_are_the_same_through_both(shard_dir):
    lib_or_skip()
    c = prepack.ShardSet(shard_dir, backend="c")
    py = prepack.ShardSet(shard_dir, backend="python")
    assert c.backend == "c" and py.backend == "python"
    assert len(c) == len(py)
    for i in range(len(c)):
        same(c[i], py[i], f"row {i}")


@pytest.mark.parametrize("form,options", [
    ("varlen", {}), ("hf", {}),
    ("hf", {"return_flash_attn_kwargs": True, "return_seq_idx": True}),
    ("flex", {}), ("padded", {}), ("padded", {"pad_id": 7, "mask_4d": True}),
    ("padded", {"max_seq_len": "L", "mask_4d": True, "pad_id": 3}),
])
def test_batches_are_the_same_through_both(shard_dir, form, options):
    lib_or_skip()
    c = prepack.ShardSet(shard_dir, backend="c")
    py = prepack.ShardSet(shard_dir, backend="python")
    if options.get("max_seq_len") == "L":
        options = dict(options, max_seq_len=c.max_seq_len)
    rng = np.random.default_rng(0)
    picks = [[0], list(range(min(5, len(c)))), [],
             rng.permutation(len(c))[:9].tolist()]
    for pick in picks:
        want = prepack.collate([py[i] for i in pick], form, **options)
        got = c.batch(pick, form, **options)
        same(got, want, (form, options, pick))


def test_batch_takes_the_c_path_where_it_can(shard_dir, monkeypatch):
    """ShardSet.batch builds in C every batch the C batch lays out, and
    only the rest (a padded width other than L) through Python's collate:
    equal results alone would not show a batch that quietly left the fast
    path."""
    lib_or_skip()
    import prepack._shards as front
    c = prepack.ShardSet(shard_dir, backend="c")

    def python_collate(*args, **kwargs):
        raise AssertionError("collated in Python")
    monkeypatch.setattr(front, "collate", python_collate)
    for form, options in (("varlen", {}), ("hf", {}), ("flex", {}),
                          ("padded", {"max_seq_len": c.max_seq_len}),
                          ("varlen", {"pad_multiple": 1}),
                          ("varlen", {"pad_multiple": 2}),
                          ("flex", {"pad_multiple": 4}),
                          ("hf", {"pad_multiple": 2})):
        c.batch([0, 1], form, **options)
    for form, options in (("padded", {}),
                          ("padded", {"max_seq_len": c.max_seq_len + 1})):
        with pytest.raises(AssertionError, match="collated in Python"):
            c.batch([0, 1], form, **options)


def test_a_c_batch_keeps_no_more_than_its_tokens(shard_set):
    """What a kept array of a C batch holds on to: the per-sequence arrays
    their own (not a view of the n x L sequences a batch has room for),
    the token arrays one block of n x L tokens each, and the dense mask
    apart from them; and the next batch writes over none of it."""
    lib_or_skip()
    s = prepack.ShardSet(shard_set, backend="c")
    L = s.max_seq_len
    b = s.batch(np.arange(4), "varlen")
    for k in ("seq_ids", "cu_seqlens"):
        assert b[k].base is None and b[k].nbytes < 4 * L, k
    assert b["labels"].base.nbytes == 3 * 4 * L * 8  # ids, positions, labels
    kept = {k: b[k].copy() for k in ("seq_ids", "cu_seqlens", "labels")}
    s.batch(np.arange(4, 8), "varlen")
    for k, v in kept.items():
        assert np.array_equal(b[k], v), k
    p = s.batch(np.arange(2), "padded", max_seq_len=L, mask_4d=True)
    assert p["labels"].base.nbytes == 4 * 2 * L * 8  # doc ids too
    assert not np.shares_memory(p["labels"], p["mask_4d"])


def test_packed_dataset_batches_are_the_same_through_both(shard_set):
    lib_or_skip()
    torch = pytest.importorskip("torch")
    from prepack.torch import PackedDataset
    for form in ("varlen", "hf", "padded"):
        opts = {"max_seq_len": 2048} if form == "padded" else {}
        a = list(PackedDataset(shard_set, batch_rows=40, form=form, seed=1,
                               backend="c", **opts))
        b = list(PackedDataset(shard_set, batch_rows=40, form=form, seed=1,
                               backend="python", **opts))
        assert len(a) == len(b)
        for x, y in zip(a, b):
            assert sorted(x) == sorted(y)
            for k in x:
                if isinstance(x[k], torch.Tensor):
                    assert x[k].dtype == y[k].dtype and torch.equal(x[k], y[k]), (form, k)
                else:
                    assert x[k] == y[k], (form, k)


def test_backend_c_without_the_library_says_so(monkeypatch):
    monkeypatch.setenv("PREPACK_LIBRARY", "/nonexistent/libprepack.so")
    monkeypatch.setattr(prepack._native, "_lib", None)
    golden = os.path.join(ROOT, "fixtures", "expected", "set")
    with pytest.raises(RuntimeError, match="libprepack not found"):
        prepack.ShardSet(golden, backend="c")
    assert prepack.ShardSet(golden).backend == "python"  # auto falls back
    with pytest.raises(ValueError, match="backend"):
        prepack.ShardSet(golden, backend="rust")
