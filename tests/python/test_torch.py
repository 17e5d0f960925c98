"""With PyTorch (the venv's 2.13.0, CPU): packed attention equals attention one
sequence at a time, a tiny decoder's loss is the same packed and unpacked
for both label conventions, and the DataLoader covers every row once, in an
order that does not depend on num_workers, resuming exactly."""
import math
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import prepack  # noqa: E402
from prepack.torch import PackedDataset, PackedMapDataset  # noqa: E402


def attention(q, k, v, mask):
    """softmax(QK^T / sqrt(d)) V with a boolean mask (True = may attend),
    written out: an independent reference, not the kernel under test."""
    scores = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    scores = scores.masked_fill(~mask, float("-inf"))
    return torch.softmax(scores, dim=-1) @ v


def causal(n):
    return torch.ones(n, n, dtype=torch.bool).tril()


@pytest.fixture(scope="module")
def rows(shard_set):
    s = prepack.ShardSet(shard_set)
    return [s[i] for i in range(24)]


def test_packed_attention_equals_per_sequence(rows):
    torch.manual_seed(0)
    d = 16
    batch = prepack.collate(rows[:4], "padded", max_seq_len=2048, mask_4d=True,
                            tensors="pt")
    b, width = batch["input_ids"].shape
    q, k, v = (torch.randn(b, width, d) for _ in range(3))
    dense = attention(q, k, v, batch["mask_4d"][:, 0])
    for i, r in enumerate(rows[:4]):
        cu = r["cu_seqlens"].tolist()
        for j in range(len(cu) - 1):
            s, e = cu[j], cu[j + 1]
            alone = attention(q[i, s:e], k[i, s:e], v[i, s:e], causal(e - s))
            # (a) the dense block-diagonal mask
            assert torch.allclose(dense[i, s:e], alone, atol=1e-5)
            # (b) a loop over cu_seqlens on the flat batch
            flat = attention(q[i, s:e], k[i, s:e], v[i, s:e], causal(e - s))
            assert torch.allclose(flat, alone, atol=1e-5)


class TinyDecoder(torch.nn.Module):
    """Embeddings, position embeddings indexed by position_ids, one causal
    attention layer, a head: enough to see cross-sequence leaks."""

    VOCAB = 257  # ids are taken modulo this: a small head, same leak test

    def __init__(self, vocab=VOCAB, d=32, max_pos=2048):
        super().__init__()
        self.tok = torch.nn.Embedding(vocab, d)
        self.pos = torch.nn.Embedding(max_pos, d)
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.head = torch.nn.Linear(d, vocab)

    def forward(self, input_ids, position_ids, mask):
        x = self.tok(input_ids % self.VOCAB) + self.pos(position_ids)
        q, k, v = self.qkv(x).chunk(3, dim=-1)
        return self.head(x + attention(q, k, v, mask))


def test_tiny_decoder_loss_packed_equals_unpacked(rows):
    torch.manual_seed(1)
    model = TinyDecoder().eval()
    picked = rows[:3]
    # unpacked: each sequence alone
    per_token = []
    for r in picked:
        cu = r["cu_seqlens"].tolist()
        ids = torch.from_numpy(r["input_ids"].astype(np.int64))
        for j in range(len(cu) - 1):
            s, e = cu[j], cu[j + 1]
            x = ids[s:e][None]
            logits = model(x, torch.arange(e - s)[None], causal(e - s))
            per_token.append(torch.nn.functional.cross_entropy(
                logits[0, :-1], x[0, 1:] % TinyDecoder.VOCAB,
                reduction="none"))
    want = torch.cat(per_token)
    with torch.no_grad():
        # varlen form, shifted labels, our own loss (mask from doc ids)
        v = prepack.collate(picked, "flex", tensors="pt")
        doc, n = v["doc_ids"], len(v["doc_ids"])
        mask = (doc[:, None] == doc[None, :]) & causal(n)
        logits = model(v["input_ids"][None], v["position_ids"][None], mask)[0]
        keep = v["labels"] != -100
        got = torch.nn.functional.cross_entropy(
            logits[keep], v["labels"][keep] % TinyDecoder.VOCAB,
            reduction="none")
        assert torch.allclose(got, want, atol=1e-4)
        # hf form, unshifted labels shifted as transformers does
        h = prepack.collate(picked, "hf", tensors="pt")
        logits = model(h["input_ids"], h["position_ids"], mask)
        shift_logits, shift_labels = logits[0, :-1], h["labels"][0, 1:]
        keep = shift_labels != -100
        got = torch.nn.functional.cross_entropy(
            shift_logits[keep], shift_labels[keep] % TinyDecoder.VOCAB,
            reduction="none")
        assert torch.allclose(got, want, atol=1e-4)


def collect(ds, workers):
    loader = torch.utils.data.DataLoader(ds, batch_size=None,
                                         num_workers=workers)
    return [b["seq_ids"].tolist() for b in loader]


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_dataloader_covers_every_row_once_in_a_fixed_order(shard_set):
    total = len(prepack.ShardSet(shard_set))
    for world in (1, 2):
        seen = []
        for rank in range(world):
            ds = PackedDataset(shard_set, batch_rows=64, seed=3, rank=rank,
                               world_size=world)
            orders = [collect(ds, w) for w in (0, 1, 3)]
            assert orders[0] == orders[1] == orders[2]
            assert len(orders[0]) == len(ds)
            seen.extend(ds.rank_rows().tolist())
        assert sorted(seen) == list(range(total))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
@pytest.mark.parametrize("form", ["varlen", "hf", "padded", "megatron",
                                  "flex"])
def test_a_workers_batch_arrives_in_one_shared_block(shard_set, form):
    """Made in a DataLoader worker, a batch's tensors cross to the main
    process in one block of shared memory (one storage, not one an
    array), with the keys, dtypes, shapes and values of the batches made
    in the main process; flex's mask_mod crosses too, and masks alike."""
    more = {"max_seq_len": 2048} if form == "padded" else {}
    ds = PackedDataset(shard_set, batch_rows=8, form=form, seed=1, **more)
    here = list(torch.utils.data.DataLoader(ds, batch_size=None,
                                            num_workers=0))
    # a batch that cannot cross waits forever without a timeout
    there = list(torch.utils.data.DataLoader(ds, batch_size=None,
                                             num_workers=2, timeout=120))
    assert len(here) == len(there) == len(ds)
    for a, b in zip(here, there):
        assert a.keys() == b.keys()
        storages = set()
        for k, v in a.items():
            if k == "mask_mod":
                q = torch.arange(len(a["doc_ids"]))
                assert torch.equal(b[k](0, 0, q[:, None], q[None, :]),
                                   v(0, 0, q[:, None], q[None, :]))
                continue
            if not isinstance(v, torch.Tensor):
                assert b[k] == v, k
                continue
            assert (b[k].dtype, b[k].shape) == (v.dtype, v.shape), k
            assert torch.equal(b[k], v), k
            assert b[k].is_shared(), k
            storages.add(b[k].untyped_storage().data_ptr())
        assert len(storages) == 1, (form, sorted(a))


def row_key(input_ids, position_ids):
    """A row by its content: its tokens and where each sequence restarts."""
    return (tuple(input_ids), tuple(position_ids))


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_yielded_batches_hold_every_row_once(shard_set):
    """The rows the loader actually yields (not rank_rows()), by content:
    each batch batch_rows rows (a rank's last may be short), and over all
    ranks every row of the set exactly once, for several worker counts and
    world sizes."""
    from collections import Counter
    s = prepack.ShardSet(shard_set)
    want = Counter(row_key(r["input_ids"].tolist(),
                           prepack.collate([r], "hf")["position_ids"][0].tolist())
                   for r in s)
    batch_rows = 50
    for world, workers in ((1, 0), (1, 3), (2, 1), (3, 2)):
        got = Counter()
        for rank in range(world):
            ds = PackedDataset(shard_set, batch_rows=batch_rows, form="padded",
                               max_seq_len=2048, seed=4, rank=rank,
                               world_size=world)
            loader = torch.utils.data.DataLoader(ds, batch_size=None,
                                                 num_workers=workers)
            sizes = []
            for b in loader:
                sizes.append(b["input_ids"].shape[0])
                for i in range(sizes[-1]):
                    t = int(b["attention_mask"][i].sum())
                    got[row_key(b["input_ids"][i, :t].tolist(),
                                b["position_ids"][i, :t].tolist())] += 1
            share = len(ds.rank_rows())
            assert sizes == [batch_rows] * (share // batch_rows) + (
                [share % batch_rows] if share % batch_rows else []), \
                (world, workers, rank)
        assert got == want, (world, workers)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_resume_without_count_and_past_the_end(shard_set):
    ds = PackedDataset(shard_set, batch_rows=400, seed=2)
    with pytest.raises(ValueError, match="pass batches_done"):
        ds.state_dict()  # nothing iterated in this process
    it = iter(ds)
    next(it), next(it)
    state = ds.state_dict()  # num_workers=0: it counted the two batches
    assert state["batch"] == 2
    again = PackedDataset(shard_set, batch_rows=400, seed=2)
    again.load_state_dict(state)
    assert [b["seq_ids"].tolist() for b in again] == \
        [b["seq_ids"].tolist() for b in list(PackedDataset(
            shard_set, batch_rows=400, seed=2))[2:]]
    with pytest.raises(ValueError, match="batches"):
        again.load_state_dict(dict(state, batch=len(ds) + 1))
    with pytest.raises(ValueError, match="batch_rows"):
        PackedDataset(shard_set, batch_rows=10, seed=2).load_state_dict(state)
    with pytest.raises(ValueError, match="rank"):
        PackedDataset(shard_set, batch_rows=400, seed=2, rank=1,
                      world_size=2).load_state_dict(dict(state, world_size=2))
    end = dict(state, batch=len(ds))  # saved after the last batch: nothing left
    again.load_state_dict(end)
    assert list(again) == []


def test_load_state_dict_checks_every_field(shard_set):
    """A state_dict is untrusted: each field by type (int, not bool or
    float), range and presence, a ValueError naming it, the dataset left
    as it was."""
    ds = PackedDataset(shard_set, batch_rows=400, seed=2)
    state = ds.state_dict(1)
    bad = [("batch", 2.5), ("batch", -1), ("batch", True), ("batch", "1"),
           ("epoch", -1), ("epoch", 1.0), ("epoch", True), ("epoch", 2 ** 64),
           ("seed", 2.0), ("rows", float(state["rows"])), ("rank", False),
           ("world_size", 1.0), ("batch_rows", 400.0),
           ("shuffle", "frames"), ("balance", "compute")]
    for key, value in bad:
        with pytest.raises(ValueError, match=key):
            ds.load_state_dict(dict(state, **{key: value}))
        assert (ds.epoch, ds.start_batch) == (0, 0), key
    with pytest.raises(ValueError, match="batch"):  # past another epoch's end
        ds.load_state_dict(dict(state, epoch=5, batch=len(ds) + 1))
    assert (ds.epoch, ds.start_batch) == (0, 0)
    for key in ("epoch", "batch"):
        with pytest.raises(ValueError, match=key):
            ds.load_state_dict({k: v for k, v in state.items() if k != key})
    for broken in ([1], None, "state", dict(state, extra=1)):
        with pytest.raises(ValueError, match="state"):
            ds.load_state_dict(broken)
    for value in (2.5, -1, True, "1"):
        with pytest.raises(ValueError, match="batches_done"):
            ds.state_dict(value)
    ds.load_state_dict(dict(state, epoch=3))
    assert (ds.epoch, ds.start_batch) == (3, 1)


@pytest.mark.filterwarnings("ignore:This DataLoader will create")
def test_resume_mid_epoch(shard_set):
    ds = PackedDataset(shard_set, batch_rows=50, seed=9)
    full = collect(ds, 0)
    state = ds.state_dict(batches_done=7)
    again = PackedDataset(shard_set, batch_rows=50, seed=9)
    again.load_state_dict(state)
    assert collect(again, 3) == full[7:]
    ds.set_epoch(1)
    assert collect(ds, 0) != full  # another epoch, another order


def test_map_dataset(shard_set):
    ds = PackedMapDataset(shard_set)
    item = ds[5]
    assert item["input_ids"].dtype == torch.int64
    assert item["cu_seqlens"][-1] == len(item["input_ids"])


def test_readme_training_loop_runs(prepack_bin, tmp_path):
    """examples/train_loop.py, the README's loop, on a small shard set."""
    import subprocess
    import sys
    from conftest import CORPUS, ROOT
    out = tmp_path / "small"
    subprocess.run([prepack_bin, "pack", CORPUS, "-o", str(out), "--max-seq-len",
                    "128", "--overlong", "truncate", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run([sys.executable, os.path.join(ROOT, "examples",
                                                       "train_loop.py"), str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    steps = [line.split() for line in run.stdout.splitlines()]
    assert [s[0] for s in steps] == ["0", "1", "2"]
    assert all(float(s[1]) > 0 for s in steps)


def test_frame_shuffle_keeps_frames_together(shard_set):
    """shuffle="frames": every row once over the ranks, the order fixed by
    (seed, epoch), and each frame's rows next to each other in it."""
    from prepack.torch import frame_spans
    s = prepack.ShardSet(shard_set)
    spans = frame_spans(s)
    assert sum(n for _, n in spans) == len(s)
    frame_of = np.empty(len(s), dtype=np.int64)
    for f, (first, n) in enumerate(spans):
        frame_of[first:first + n] = f
    seen = []
    for rank in range(2):
        ds = PackedDataset(shard_set, batch_rows=4, seed=5, rank=rank,
                           world_size=2, shuffle="frames")
        seen += ds.rank_rows().tolist()
        again = PackedDataset(shard_set, batch_rows=4, seed=5, rank=rank,
                              world_size=2, shuffle="frames")
        assert np.array_equal(ds.rank_rows(), again.rank_rows())
    assert sorted(seen) == list(range(len(s)))
    order = PackedDataset(shard_set, seed=5, shuffle="frames").rank_rows()
    runs = 1 + int((np.diff(frame_of[order]) != 0).sum())
    assert runs == len(spans)  # one run per frame
    ds = PackedDataset(shard_set, seed=5, shuffle="frames")
    ds.set_epoch(1)
    assert not np.array_equal(ds.rank_rows(), order)
    state = PackedDataset(shard_set, seed=5, shuffle="frames").state_dict(0)
    with pytest.raises(ValueError, match="shuffle"):
        PackedDataset(shard_set, seed=5).load_state_dict(state)
    with pytest.raises(ValueError, match="shuffle must be"):
        PackedDataset(shard_set, shuffle="rows")


def batches_of(ds):
    return [{k: v.clone() if torch.is_tensor(v) else v for k, v in b.items()}
            for b in ds]


def same_batches(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x.keys() == y.keys()
        for k in x:
            if torch.is_tensor(x[k]):
                assert torch.equal(x[k], y[k]), k
            else:
                assert x[k] == y[k], k


def test_read_ahead_changes_no_batch(shard_set, library):
    """read_ahead builds batches in a thread: the same batches in the same
    order as without it, at any depth, for each form, and resuming from a
    state counts the batches the loop consumed, not those built ahead."""
    for form in ("varlen", "hf", "padded"):
        extra = {"max_seq_len": 2048} if form == "padded" else {}
        runs = [batches_of(PackedDataset(shard_set, batch_rows=37, form=form,
                                         seed=1, read_ahead=d, **extra))
                for d in (0, 1, 4)]
        same_batches(runs[0], runs[1])
        same_batches(runs[0], runs[2])
    ds = PackedDataset(shard_set, batch_rows=37, seed=1, read_ahead=3)
    it = iter(ds)
    next(it), next(it)
    state = ds.state_dict()
    assert state["batch"] == 2
    it.close()
    again = PackedDataset(shard_set, batch_rows=37, seed=1, read_ahead=0)
    again.load_state_dict(state)
    same_batches(batches_of(again), batches_of(
        PackedDataset(shard_set, batch_rows=37, seed=1, read_ahead=0))[2:])


def test_read_ahead_stops_when_the_loop_does(shard_set, library):
    """Leaving the loop early (break, an exception) stops the thread
    before iteration returns: no thread reads on behind the caller."""
    import threading

    def alive():  # not other tests' loops awaiting the collector
        return [t for t in threading.enumerate()
                if t.name == "prepack-read-ahead" and t not in before]
    before = set(threading.enumerate())
    ds = PackedDataset(shard_set, batch_rows=8, seed=1, read_ahead=2)
    for b in ds:
        break
    assert not alive()
    it = iter(ds)
    next(it)
    it.close()
    assert not alive()


def test_read_ahead_raises_at_the_damaged_batch(shard_set, library, tmp_path):
    """Damage met by the thread is raised to the loop at the batch that
    holds it, after every batch before it, as without read-ahead."""
    import shutil
    bad = tmp_path / "bad"
    shutil.copytree(shard_set, bad)
    shards = sorted(p for p in os.listdir(bad) if p.startswith("shard-"))
    last = bad / shards[-1]
    data = bytearray(last.read_bytes())
    data[len(data) // 3] ^= 0xFF  # a frame of the last shard
    last.write_bytes(bytes(data))
    got = {}
    for depth in (0, 2):
        ds = PackedDataset(bad, batch_rows=16, shuffle=False,
                           read_ahead=depth)
        n = 0
        with pytest.raises(prepack.CorruptShardError):
            for _ in ds:
                n += 1
        got[depth] = n
    assert got[0] == got[2] > 0


@pytest.mark.parametrize("value", [-1, 65, 1.0, True, "1", None])
def test_read_ahead_refuses_what_is_not_a_depth(shard_set, value):
    with pytest.raises(ValueError, match="read_ahead"):
        PackedDataset(shard_set, read_ahead=value)


def test_rows_are_independent_copies(shard_set):
    """ShardSet rows own their arrays: writing into one row (the C reader
    hands each row one buffer, its fields views of it) changes no other
    field, no other row, and not the row read again."""
    s = prepack.ShardSet(shard_set)
    a, b = s[3], s[3]
    for k in a:
        a[k][...] = 0 if k != "cu_seqlens" else a[k]
    fresh = s[3]
    for k in b:
        assert np.array_equal(b[k], fresh[k]), k
    assert fresh["input_ids"].any()


def test_read_ahead_builds_no_more_than_its_depth():
    """read_ahead=d holds at most d items built and not yet consumed: the
    memory of d batches, not d + 1 (one in the queue and one more built
    and waiting for room)."""
    import time
    from prepack._loader import read_ahead
    for depth in (1, 3):
        made = []
        it = read_ahead(lambda i: made.append(i) or i, range(50), depth)
        assert next(it) == 0
        time.sleep(0.3)  # time for the thread to run as far as it may
        assert len(made) == 1 + depth
        it.close()


def test_read_ahead_collected_in_its_own_thread_says_nothing():
    """A generator abandoned in a reference cycle may be collected by the
    garbage collector in its own thread (make allocates): closing it
    there stops the thread without joining itself (RuntimeError)."""
    import gc
    import sys
    import threading
    import time
    from prepack._loader import read_ahead
    held, raised = {}, []
    armed = threading.Event()

    def make(i):
        if i == 1:  # built while the caller holds item 0
            armed.wait(30)  # once only the cycle holds the generator
            held.clear()
            gc.collect()
        return i

    def ours():  # other tests' loops may still await the collector
        return {t for t in threading.enumerate()
                if t.name == "prepack-read-ahead"} - before
    before = set(threading.enumerate())
    hook, sys.unraisablehook = sys.unraisablehook, raised.append
    try:
        it = read_ahead(make, range(50), 1)
        next(it)
        cycle = [it]
        cycle.append(cycle)
        held["cycle"] = cycle
        del it, cycle
        armed.set()
        deadline = time.monotonic() + 30  # a loaded machine: poll, not sleep
        while ours() and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        sys.unraisablehook = hook
    assert not raised, [r.exc_value for r in raised]
    assert not ours()
