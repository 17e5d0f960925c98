"""prepack.stream: packing an iterable as it comes, Packer state bytes that
resume exactly, and StreamingPackedDataset over ranks, DataLoader workers
and a resume from state_dict()."""
import os
import random
import types

import numpy as np
import pytest

if not os.environ.get("PREPACK_LIBRARY"):
    pytest.skip("needs libprepack (PREPACK_LIBRARY; sanitizer builds cannot be "
                "loaded)", allow_module_level=True)

import torch  # noqa: E402
import xxhash  # noqa: E402
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
        for a, b in zip(want, got):  # every field of every row
            assert a.keys() == b.keys()
            for k in a:
                if a[k] is None:
                    assert b[k] is None, k
                    continue
                assert a[k].dtype == b[k].dtype, k
                assert np.array_equal(a[k], b[k]), k
    p = Packer(**opts)
    p.push(seqs[0], 0)
    state = bytearray(p.state())
    state[20] ^= 1
    with pytest.raises(StreamError, match="checksum"):
        Packer.restore(bytes(state), **opts)
    with pytest.raises(StreamError, match="other options"):
        Packer.restore(p.state(), **dict(opts, window=17))


def test_restored_packer_is_the_uninterrupted_one():
    """Beside an uninterrupted packer, one restored at every 7th push: the
    same rows (every field, tokens or lengths only), stats and state."""
    seqs = sequences(9, 300, max_len=40)
    for lengths_only in (False, True):
        opts = dict(max_seq_len=64, window=5, lookahead=3, overlong="split",
                    max_seqs_per_row=4)
        a, b = Packer(**opts), Packer(**opts)
        for i, s in enumerate(seqs):
            if i % 7 == 0:
                state = b.state()
                assert state == a.state()
                b.close()
                b = Packer.restore(state, **opts)
            for p in (a, b):
                if lengths_only:
                    p.push_length(len(s), i)
                else:
                    p.push({"input_ids": s,
                            "loss_mask": [k % 2 for k in range(len(s))]}, i)
            ra, rb = a.pop(), b.pop()
            while ra is not None or rb is not None:
                assert ra.keys() == rb.keys()
                for k in ra:
                    if ra[k] is None:
                        assert rb[k] is None
                    else:
                        assert ra[k].dtype == rb[k].dtype, k
                        assert np.array_equal(ra[k], rb[k]), k
                ra, rb = a.pop(), b.pop()
            assert a.stats() == b.stats()
        a.close()
        b.close()


def fixed(state):
    """State bytes with their XXH64 recomputed: a checksum is not a key."""
    body = bytes(state[:-8])
    return body + xxhash.xxh64_intdigest(body).to_bytes(8, "little")


def test_crafted_states_with_a_correct_checksum_are_refused():
    opts = dict(max_seq_len=8, window=2, max_seqs_per_row=2,
                overlong="truncate")
    p = Packer(**opts)
    p.push({"input_ids": [1, 2, 3], "loss_mask": [1, 0, 1]}, 0)
    state = bytearray(p.state())
    # header 96, no buffered item 8, one open row 8 + 20, its item 25 +
    # 12 bytes of tokens, then the mask's 3 bytes, no ready row, XXH64
    assert len(state) == 96 + 8 + 8 + 20 + 25 + 12 + 3 + 8 + 8
    Packer.restore(fixed(state), **opts).close()
    mask = bytearray(state)
    mask[96 + 8 + 8 + 20 + 25 + 12 + 1] = 2
    with pytest.raises(StreamError, match="loss mask"):
        Packer.restore(fixed(mask), **opts)
    arrivals = bytearray(state)  # next arrival 5, one item counted
    arrivals[40:48] = (5).to_bytes(8, "little")
    with pytest.raises(StreamError, match="arrivals"):
        Packer.restore(fixed(arrivals), **opts)
    with pytest.raises(StreamError, match="loss_mask"):
        p.push({"input_ids": [1, 2], "loss_mask": [1, 2]}, 1)
    for state in (10 ** 6, "PPSTRM", [1, 2], None):
        with pytest.raises(StreamError, match="state: bytes"):
            Packer.restore(state, **opts)
    for key, value in (("max_seq_len", 8.5), ("max_seq_len", True),
                       ("window", -1), ("lookahead", "3"),
                       ("max_seqs_per_row", 2.0)):
        with pytest.raises(ValueError, match=key):
            Packer(**dict(opts, **{key: value}))
    p.close()


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


def share_batches(monkeypatch, seqs, rank, world, worker, workers, **opts):
    """Batches worker `worker` of `workers` gives, run in this process."""
    info = types.SimpleNamespace(id=worker, num_workers=workers)
    monkeypatch.setattr(prepack.stream, "_worker_info", lambda: info)
    ds = StreamingPackedDataset(seqs, rank=rank, world_size=world, **opts)
    out = list(ds)
    monkeypatch.undo()
    return out


@pytest.mark.parametrize("world,workers", [(1, 2), (2, 1), (2, 3), (3, 2)])
def test_item_i_goes_to_share_i_mod_ranks_times_workers(monkeypatch, world,
                                                        workers):
    """The documented rule itself: item i is rank r's worker w's when
    i % (world x workers) == r x workers + w, each item in one share."""
    seqs = [[i + 1] * (1 + i % 5) for i in range(101)]
    opts = dict(max_seq_len=16, window=4, lookahead=2, batch_rows=2)
    shares = world * workers
    for rank in range(world):
        for w in range(workers):
            got = placed(share_batches(monkeypatch, seqs, rank, world, w,
                                       workers, **opts))
            want = {i: s for i, s in enumerate(seqs)
                    if i % shares == rank * workers + w}
            assert got == want, (rank, w)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_dataloader_workers_take_their_own_share(monkeypatch):
    """Through a real DataLoader (2 workers, rank 1 of 2): batch k comes
    from worker k % 2 while both have batches, and holds its share."""
    seqs = sequences(7, 300)
    opts = dict(max_seq_len=512, window=8, lookahead=4, batch_rows=2,
                overlong="split")
    own = [share_batches(monkeypatch, seqs, 1, 2, w, 2, **opts)
           for w in range(2)]
    ds = StreamingPackedDataset(seqs, rank=1, world_size=2, **opts)
    got = dataset_batches(ds, 2)
    assert len(got) == len(own[0]) + len(own[1])
    for k in range(2 * min(len(own[0]), len(own[1]))):
        want = own[k % 2][k // 2]
        for key in want:
            if hasattr(want[key], "numpy"):
                assert torch.equal(got[k][key], want[key]), (k, key)
            else:
                assert got[k][key] == want[key], (k, key)
        ids = np.asarray(got[k]["seq_ids"])
        assert (ids % 4 == 2 + k % 2).all(), k


def test_streaming_state_dict_fields_are_checked():
    seqs = sequences(8, 80)
    opts = dict(max_seq_len=512, window=8, batch_rows=2, overlong="split")
    ds = StreamingPackedDataset(seqs, **opts)
    good = ds.state_dict(3)
    ds.load_state_dict(good)
    bad = [("batches_done", 2.5), ("batches_done", -1), ("batches_done", True),
           ("batches_done", "3"), ("batches_done", 2 ** 64),
           ("rank", False), ("world_size", 1.0), ("batch_rows", 2.0),
           ("options", dict(good["options"], max_seq_len=512.0)),
           ("options", "x"), ("num_workers", 0), ("num_workers", -2),
           ("num_workers", 2.0), ("num_workers", True),
           ("num_workers", 10 ** 8)]
    for key, value in bad:
        fresh = StreamingPackedDataset(seqs, **opts)
        with pytest.raises(ValueError, match=key):
            fresh.load_state_dict(dict(good, **{key: value}))
        assert fresh.state_dict() == StreamingPackedDataset(
            seqs, **opts).state_dict()  # left as it was
    for broken in ([1], None, {k: v for k, v in good.items()
                               if k != "num_workers"}, dict(good, extra=1)):
        with pytest.raises(ValueError, match="state"):
            StreamingPackedDataset(seqs, **opts).load_state_dict(broken)
    with pytest.raises(ValueError, match="num_workers"):
        StreamingPackedDataset(seqs, **opts).load_state_dict(good,
                                                             num_workers=1.5)
    for value in (2.5, -1, True):
        with pytest.raises(ValueError, match="batches_done"):
            ds.state_dict(value)
    two = StreamingPackedDataset(seqs, **opts)  # 2 workers' state, 1 here
    two.load_state_dict(dict(good, num_workers=2))
    with pytest.raises(StreamError, match="2 DataLoader workers"):
        list(two)
