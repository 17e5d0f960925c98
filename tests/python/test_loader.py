"""The DataLoader trap (issue 29): prepack's torch datasets yield whole
batches, so the DataLoader needs batch_size=None. Its default
(batch_size=1) used to stack each batch into [1, 1, L] tensors in
silence, and batch_size=2 to fail inside torch's stack; both now fail
with a message saying batch_size=None, in the main process and from a
worker, for PackedDataset and StreamingPackedDataset alike, while
batch_size=None gives the dataset's own batches."""
from itertools import islice

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from torch.utils.data import DataLoader  # noqa: E402

import prepack  # noqa: E402
from prepack.stream import StreamingPackedDataset  # noqa: E402
from prepack.torch import PackedDataset  # noqa: E402

SEQS = [list(range(1, n + 1)) for n in (5, 17, 3, 30, 12, 9, 1, 26, 7, 20)]


def datasets(shard_set):
    return {
        "PackedDataset": lambda: PackedDataset(shard_set, batch_rows=2,
                                               shuffle=False),
        "StreamingPackedDataset": lambda: StreamingPackedDataset(
            SEQS, max_seq_len=32, batch_rows=2),
    }


@pytest.fixture(params=["PackedDataset", "StreamingPackedDataset"])
def make(request, shard_set):
    return datasets(shard_set)[request.param]


@pytest.mark.usefixtures("library")
@pytest.mark.parametrize("batch_size,workers", [(1, 0), (2, 0), (2, 1)])
def test_a_batch_size_is_refused_saying_batch_size_none(make, batch_size,
                                                        workers):
    loader = DataLoader(make(), batch_size=batch_size, num_workers=workers)
    with pytest.raises(Exception) as e:
        next(iter(loader))
    assert "batch_size=None" in str(e.value)
    assert "whole batches" in str(e.value)


@pytest.mark.usefixtures("library")
def test_batch_size_none_gives_the_datasets_batches(make):
    """The right use: each item is one batch of batch_rows rows, as the
    dataset yields it (no added dimension), with or without workers."""
    direct = list(islice(make(), 4))
    for workers in (0, 1):
        got = list(islice(DataLoader(make(), batch_size=None,
                                     num_workers=workers), 4))
        assert len(got) == len(direct) > 0
        for a, b in zip(got, direct):
            assert a.keys() == b.keys()
            assert a["input_ids"].shape == b["input_ids"].shape
            assert a["input_ids"].dim() == 1  # varlen: [T], never [1, T]
            assert torch.equal(a["input_ids"], b["input_ids"])
            assert torch.equal(a["cu_seqlens"], b["cu_seqlens"])


def test_a_collate_fn_of_ones_own_still_sees_the_batches(shard_set):
    """Only torch's default collate refuses: a collate_fn given by the
    user gets the batches (here: keeps the first of each pair)."""
    ds = PackedDataset(shard_set, batch_rows=2, shuffle=False)
    got = next(iter(DataLoader(ds, batch_size=2, collate_fn=lambda b: b[0])))
    first = next(iter(ds))
    assert torch.equal(got["input_ids"], first["input_ids"])


@pytest.mark.usefixtures("library")
def test_the_stream_without_torch_tensors_is_unchanged():
    """prepack.collate's own batches (not the datasets') stay plain
    dicts: only the datasets' are guarded."""
    rows = prepack.pack(SEQS[:3], max_seq_len=32)
    batch = prepack.collate(rows, tensors="np")
    assert type(batch) is dict
    assert isinstance(batch["input_ids"], np.ndarray)
