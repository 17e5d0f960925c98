"""prepack.stream: packing an iterable as it comes, Packer state bytes that
resume exactly, and StreamingPackedDataset over ranks, DataLoader workers
and a resume from state_dict()."""
import os
import random

import numpy as np
import pytest

if not os.environ.get("PREPACK_LIBRARY"):
    pytest.skip("needs libprepack (PREPACK_LIBRARY; sanitizer builds cannot be "
                "loaded)", allow_module_level=True)

import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

import prepack  # noqa: E402
from prepack.stream import Packer, StreamError, StreamingPackedDataset  # noqa: E402


def sequences(seed, n, max_len=300):
    rng = random.Random(seed)
    out = []
    for i in range(n):
        length = rng.choice([0, 1, rng.randint(1, 40), rng.randint(1, max_len),
                             rng.randint(1, 3 * max_len)])
        out.append([rng.randrange(1, 50000) for _ in range(length)])
    return out


def placed(batches):
    """{seq id: its tokens put back together} from varlen batches."""
    got = {}
    for b in batches:
        ids, cu = np.asarray(b["input_ids"]), np.asarray(b["cu_seqlens"])
        for j, sid in enumerate(np.asarray(b["seq_ids"]).tolist()):
            got.setdefault(sid, []).extend(ids[cu[j]:cu[j + 1]].tolist())
    return got


@pytest.mark.parametrize("window,lookahead", [(1, 0), (8, 0), (64, 16), (256, 100)])
def test_every_sequence_once_in_any_input_type(window, lookahead):
    seqs = sequences(1, 400)
    kinds = [list, np.array, lambda s: torch.tensor(s, dtype=torch.int64),
             lambda s: {"input_ids": s, "labels": [-100] * (len(s) // 2) + s[len(s) // 2:]}]
    items = [kinds[i % 4](s) for i, s in enumerate(seqs)]
    batches = list(prepack.stream.pack(items, 512, window=window, lookahead=lookahead,
                                       batch_rows=4, overlong="split"))
    got = placed(batches)
    assert got == {i: s for i, s in enumerate(seqs) if s}
    for b in batches:
        assert np.diff(np.asarray(b["cu_seqlens"])).max() <= 512
    hf = list(prepack.stream.pack(items, 512, window=window, form="hf", overlong="split"))
    # labels: -100 where the dicts said so (the first half of each)
    labels = np.concatenate([np.asarray(b["labels"]).ravel() for b in hf])
    assert (labels == -100).sum() > sum(len(s) // 2 for i, s in enumerate(seqs) if i % 4 == 3)


def test_close_to_offline_and_next_fit_at_window_one():
    rng = random.Random(2)
    lengths = [min(4096, int(rng.lognormvariate(6.1, 1.0)) + 1) for _ in range(20000)]
    offline = prepack.pack([np.zeros(n, np.uint32) for n in lengths], max_seq_len=4096)
    rows = {}
    for window in (1, 256):
        p = Packer(4096, window=window)
        for i, n in enumerate(lengths):
            p.push_length(n, i)
        p.flush()
        rows[window] = p.stats()["rows"]
    nextfit = prepack.pack([np.zeros(n, np.uint32) for n in lengths], max_seq_len=4096,
                           algo="nextfit")
    assert rows[1] == len(nextfit)
    assert rows[256] <= len(offline) * 1.01


def test_state_bytes_resume_exactly():
    seqs = sequences(3, 600)
    masks = [[(k * 7 + i) % 3 != 0 for k in range(len(s))] for i, s in enumerate(seqs)]
    items = [{"input_ids": s, "loss_mask": m} if i % 3 else s
             for i, (s, m) in enumerate(zip(seqs, masks))]
    opts = dict(max_seq_len=256, window=16, lookahead=20, overlong="split")

    def drain(p):
        out = []
        row = p.pop()
        while row is not None:
            out.append(row)
            row = p.pop()
        return out

    def run(cuts):
        p, out = Packer(**opts), []
        for i, item in enumerate(items):
            if i in cuts:
                state = p.state()
                p.close()
                p = Packer.restore(state, **opts)
            p.push(item, i)
            if i % 5 == 0:
                out += drain(p)
        p.flush()
        return out + drain(p)

    want = run(set())
    for seed in range(5):
        cuts = set(random.Random(seed).sample(range(len(items)), 4))
        got = run(cuts)
        assert len(got) == len(want)
        for a, b in zip(want, got):
            assert a.keys() == b.keys()
            for k in a:
                assert np.array_equal(a[k], b[k])
    p = Packer(**opts)
    p.push(seqs[0], 0)
    state = bytearray(p.state())
    state[20] ^= 1
    with pytest.raises(StreamError, match="checksum"):
        Packer.restore(bytes(state), **opts)
    with pytest.raises(StreamError, match="other options"):
        Packer.restore(p.state(), **dict(opts, window=17))


def test_refusals():
    p = Packer(16, window=4)
    with pytest.raises(StreamError, match="more than max_seq_len"):
        p.push(list(range(20)), 7)
    p.push([1, 2], 0)
    with pytest.raises(StreamError, match="every sequence or with none"):
        p.push_length(3, 1)
    with pytest.raises(ValueError, match="sequence 2, position 1"):
        p.push([1, -5], 2)


def dataset_batches(ds, workers):
    loader = DataLoader(ds, batch_size=None, num_workers=workers)
    return list(loader)


@pytest.mark.parametrize("workers", [0, 2])
def test_ranks_and_workers_split_the_stream_and_resume(workers):
    seqs = sequences(4, 500)
    opts = dict(max_seq_len=512, window=32, lookahead=8, batch_rows=2,
                overlong="split", form="varlen")
    union = {}
    for rank in range(2):
        ds = StreamingPackedDataset(seqs, rank=rank, world_size=2, **opts)
        got = placed(dataset_batches(ds, workers))
        assert not set(got) & set(union)
        union.update(got)
    assert union == {i: s for i, s in enumerate(seqs) if s}

    ds = StreamingPackedDataset(seqs, rank=1, world_size=2, **opts)
    full = dataset_batches(ds, workers)
    for done in (0, 1, 5, len(full) // 2):
        ds2 = StreamingPackedDataset(seqs, rank=1, world_size=2, **opts)
        state = {"batches_done": done, "num_workers": max(workers, 1), "rank": 1,
                 "world_size": 2, "options": ds2.options, "batch_rows": 2}
        ds2.load_state_dict(state)
        rest = dataset_batches(ds2, workers)
        assert len(rest) == len(full) - done
        for a, b in zip(full[done:], rest):
            for k in a:
                if hasattr(a[k], "numpy"):
                    assert torch.equal(a[k], b[k]), k
                else:
                    assert a[k] == b[k], k


def test_state_dict_in_the_main_process_and_datasets_iterable():
    import datasets
    seqs = sequences(5, 200)
    src = datasets.IterableDataset.from_generator(
        lambda: ({"input_ids": s} for s in seqs))
    ds = StreamingPackedDataset(lambda: (r["input_ids"] for r in src), max_seq_len=512,
                                window=16, batch_rows=3, overlong="split")
    it = iter(ds)
    first = [next(it) for _ in range(4)]
    state = ds.state_dict()
    assert state["batches_done"] == 4
    rest = list(it)
    ds2 = StreamingPackedDataset(lambda: (r["input_ids"] for r in src), max_seq_len=512,
                                 window=16, batch_rows=3, overlong="split")
    ds2.load_state_dict(state)
    again = list(ds2)
    assert len(again) == len(rest)
    for a, b in zip(rest, again):
        assert torch.equal(a["input_ids"], b["input_ids"])
    assert placed(first + rest) == {i: s for i, s in enumerate(seqs) if s}
    # the IterableDataset itself (re-iterable; rows are dicts)
    direct = list(StreamingPackedDataset(src, max_seq_len=512, window=16,
                                         batch_rows=3, overlong="split"))
    assert len(direct) == len(first) + len(rest)
    for a, b in zip(first + rest, direct):
        assert torch.equal(a["input_ids"], b["input_ids"])
