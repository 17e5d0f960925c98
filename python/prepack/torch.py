"""PyTorch datasets over a shard set.

    from torch.utils.data import DataLoader
    from prepack.torch import PackedDataset

    ds = PackedDataset("shards/", batch_rows=8, form="varlen", seed=0,
                       rank=rank, world_size=world_size)
    for batch in DataLoader(ds, batch_size=None, num_workers=3):
        ...

The dataset yields whole batches (batch_rows rows collated) so that a
DataLoader with batch_size=None hands them out in the same order whatever
num_workers is: worker w of W builds batches w, w + W, ... and the
DataLoader takes them round robin. Across ranks every row is in exactly one
rank's share each epoch. A DataLoader with another batch_size (its default
is 1) would stack batches into one with an extra dimension: it is refused
with a message saying batch_size=None (_loader.py).
"""

import numpy as np

from . import _optional
from ._loader import PackedBatch, guard, read_ahead
from ._shards import ShardSet

torch = _optional.require("torch", "torch", "prepack.torch")
_data = _optional.require("torch.utils.data", "torch", "prepack.torch")
Dataset, IterableDataset = _data.Dataset, _data.IterableDataset
get_worker_info = _data.get_worker_info
# DataLoader(dataset) without batch_size=None: an error saying so
guard(_optional.find("torch.utils.data._utils.collate"))


# A state_dict is untrusted (docs/DESIGN.md's threat model): its fields,
# and the most an epoch or batch number may be (an int64, as a checkpoint
# holds it; a batch is also at most the epoch's batches).
_STATE_FIELDS = ("epoch", "batch", "seed", "world_size", "rank",
                 "batch_rows", "rows", "shuffle", "balance",
                 "micro_batches", "balance_window")
MAX_EPOCH = 2 ** 63 - 1


def _int_field(name, value, lo=0, hi=MAX_EPOCH):
    """value as an int when it is one (not a bool, not a float) in lo..hi,
    else a ValueError naming the field."""
    if isinstance(value, (bool, np.bool_)) or \
            not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise ValueError(f"state field {name!r}: {value!r} is not an "
                         f"integer in {lo}..{hi}")
    return int(value)


def epoch_order(rows, seed, epoch, shuffle=True, frames=None):
    """The epoch's row order: a permutation fixed by (seed, epoch). With
    frames (each frame's first row and row count, in row order) and
    shuffle="frames": the frames in a shuffled order, each frame's rows
    shuffled among themselves, so consecutive rows share a frame."""
    if not shuffle:
        return np.arange(rows)
    rng = np.random.default_rng([seed, epoch])
    if shuffle != "frames":
        return rng.permutation(rows)
    out = np.empty(rows, dtype=np.int64)
    at = 0
    for f in rng.permutation(len(frames)):
        first, count = frames[f]
        out[at:at + count] = first + rng.permutation(count)
        at += count
    return out


def frame_spans(shards):
    """(first row, rows) of every zstd frame of a ShardSet, in row order."""
    spans, first = [], 0
    for e in shards.manifest["shards"]:
        for start in range(0, e["rows"], shards.rows_per_frame):
            spans.append((first + start,
                          min(shards.rows_per_frame, e["rows"] - start)))
        first += e["rows"]
    return spans


class PackedDataset(IterableDataset):
    """Batches of `batch_rows` rows from a shard set, collated in `form`
    (see prepack.collate; tensors are torch tensors).

    Rows are shuffled per epoch with a generator seeded by (seed, epoch);
    shuffle="frames" shuffles the zstd frames and the rows within each
    instead, so a batch's rows mostly share a frame and each frame is
    decompressed once per rank and epoch rather than once per row (pack
    with --shuffle so frames are not runs of similar rows;
    docs/BENCHMARKS.md measures the difference). Rank r of world_size
    takes every world_size-th row of that order, so
    the ranks' shares are disjoint and cover every row; each rank's batches
    come in an order that does not depend on the DataLoader's num_workers.
    The last batch of a rank may hold fewer rows. With libprepack (backend
    "auto" or "c") each batch is built by the C reader in one call.

    Epochs: the order is fixed by (seed, epoch) and iterating again does
    not advance it (the DataLoader's workers iterate copies of this
    object, so no pass can tell the next one). Call set_epoch(e) before
    each epoch, as with DistributedSampler; without it every pass repeats
    the same order.

    Read-ahead: with the C reader, up to read_ahead batches (default 2)
    are decompressed and built in a thread while the loop consumes the
    ones before (the C calls release the GIL), so the reading overlaps the
    training step and the DataLoader's own work; 0 builds each batch when
    it is asked for. Two ahead rather than one spares the thread a wait
    for the loop after every batch (docs/BENCHMARKS.md: as fast or faster
    with a step that waits on its device, one that holds the GIL, and
    none). It changes no batch and no order; damage is raised at the
    batch that holds it, and leaving the loop stops the thread.

    Resuming: state_dict(batches_done) after the training loop consumed
    batches_done batches of this epoch (with num_workers=0 it may be left
    out: the batches this object yielded), load_state_dict(state) in the
    new process, and iteration starts at the next batch.

    Balancing (balance="compute", docs/BALANCE.md): a training step takes
    micro_batches batches from every rank; the epoch's order is cut into
    steps of world_size x micro_batches x batch_rows rows and each step's
    rows are split among the ranks by cost (prepack.balance_epoch;
    `cost` a prepack.CostModel, default a Llama-3-8B shape), every
    rank getting micro_batches x batch_rows rows a step. With one row a
    rank a step there is nothing to split within a step: balance_window W
    regroups each W steps' rows by cost first. Row costs come from one pass
    over the set at start, or from row_costs (prepack.set_costs,
    saved). Same guarantees: every row once an epoch, the order fixed by
    (seed, epoch), resumable at any batch."""

    def __init__(self, path, batch_rows=1, form="varlen", shuffle=True,
                 seed=0, rank=0, world_size=1, backend="auto", balance=None,
                 micro_batches=1, cost=None, balance_window=1, row_costs=None,
                 read_ahead=2, **collate_options):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in 0..{world_size - 1}")
        if balance not in (None, "compute"):
            raise ValueError(f"balance must be None or 'compute', not {balance!r}")
        if micro_batches < 1 or balance_window < 1:
            raise ValueError("micro_batches and balance_window must be at least 1")
        if isinstance(read_ahead, bool) or \
                not isinstance(read_ahead, (int, np.integer)) or \
                not 0 <= read_ahead <= 64:
            raise ValueError(f"read_ahead must be an integer in 0..64 "
                             f"(batches built ahead), not {read_ahead!r}")
        self.read_ahead = int(read_ahead)
        self.path = path
        self.batch_rows = batch_rows
        self.form = form
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.collate_options = collate_options
        self.backend = backend
        self.epoch = 0
        self.start_batch = 0
        self._yielded = None  # batches yielded here (num_workers=0 only)
        if shuffle not in (True, False, "frames"):
            raise ValueError(f"shuffle must be True, False or 'frames', not "
                             f"{shuffle!r}")
        shards = ShardSet(path, backend=backend)
        self._rows = len(shards)
        self._frames = frame_spans(shards) if shuffle == "frames" else None
        # a set planned for context parallelism is padded for it
        if shards.pad_multiple > 1:
            self.collate_options.setdefault("pad_multiple", shards.pad_multiple)
        self.balance = balance
        self.micro_batches = micro_batches
        self.balance_window = balance_window
        self._costs = None
        self._cached = None  # (epoch, this rank's rows)
        if balance:
            from .balancing import set_costs
            self._costs = (np.asarray(row_costs, dtype=np.float64)
                           if row_costs is not None
                           else set_costs(shards, cost))
            if len(self._costs) != self._rows:
                raise ValueError(f"row_costs has {len(self._costs)} rows, the "
                                 f"set {self._rows}")

    def set_epoch(self, epoch):
        self.epoch = epoch
        self.start_batch = 0
        self._yielded = None

    def rank_rows(self):
        """This rank's rows for the current epoch, in order."""
        if self._cached and self._cached[0] == self.epoch:
            return self._cached[1]
        order = epoch_order(self._rows, self.seed, self.epoch, self.shuffle,
                            self._frames)
        if not self.balance:
            rows = order[self.rank::self.world_size]
        else:
            from .balancing import balance_epoch
            order, rank_of = balance_epoch(
                self._costs, self.world_size,
                self.batch_rows * self.micro_batches, order,
                self.balance_window)
            rows = order[rank_of == self.rank].astype(np.int64)
        self._cached = (self.epoch, rows)
        return rows

    def __len__(self):
        return -(-len(self.rank_rows()) // self.batch_rows)

    def state_dict(self, batches_done=None):
        """Where to resume after the training loop consumed batches_done
        batches of this epoch. Left out, the batches this object yielded
        itself (a DataLoader with num_workers=0); with workers they iterate
        copies, so it must be given."""
        if batches_done is None:
            if self._yielded is None:
                raise ValueError(
                    "state_dict(): pass batches_done, the batches your loop "
                    "consumed this epoch (a DataLoader's workers iterate "
                    "copies of this dataset, so it cannot count them)")
            batches_done = self._yielded
        batches_done = _int_field("batches_done", batches_done)
        if not 0 <= batches_done <= len(self) - self.start_batch:
            raise ValueError(f"batches_done {batches_done}: this epoch has "
                             f"{len(self) - self.start_batch} batches left")
        return {"epoch": self.epoch, "batch": self.start_batch + batches_done,
                **self._config()}

    def _config(self):
        config = {"seed": self.seed, "world_size": self.world_size,
                  "rank": self.rank, "batch_rows": self.batch_rows,
                  "rows": self._rows}
        if self.shuffle == "frames":  # absent: rows shuffled one by one
            config["shuffle"] = "frames"
        if self.balance:  # states without these keys predate balancing
            config.update(balance=self.balance, micro_batches=self.micro_batches,
                          balance_window=self.balance_window)
        return config

    def _check_state(self, state):
        """The state's fields by shape, type and against this dataset's
        configuration: (epoch, batch), or ValueError naming the field."""
        if not isinstance(state, dict):
            raise ValueError(f"load_state_dict: the state must be a dict from "
                             f"state_dict(), not {type(state).__name__}")
        unknown = sorted(map(str, set(state) - set(_STATE_FIELDS)))
        if unknown:
            raise ValueError(f"the state has unknown fields {unknown}")
        for key in ("epoch", "batch"):
            if key not in state:
                raise ValueError(f"the state has no {key!r} field")
        mine = self._config()
        for key in ("shuffle", "balance"):
            if state.get(key) != mine.get(key):
                raise ValueError(f"the state was saved with {key} "
                                 f"{state.get(key)!r}, this dataset has "
                                 f"{mine.get(key)!r}")
        for key, value in mine.items():
            if key in state and isinstance(value, int):
                _int_field(key, state[key], hi=max(value, MAX_EPOCH))
            if key in state and state[key] != value:
                raise ValueError(f"the state was saved with {key} "
                                 f"{state[key]}, this dataset has {value}")
        return _int_field("epoch", state["epoch"]), \
            _int_field("batch", state["batch"])

    def load_state_dict(self, state):
        """Resumes at state's batch; ValueError naming the field for a
        state saved by another configuration, one past the end of the
        epoch, or a field of another type or range (a state is untrusted):
        the dataset is then left as it was."""
        epoch, batch = self._check_state(state)
        was = self.epoch
        self.epoch = epoch  # the epoch's batches, for the bound on batch
        try:
            batches = len(self)
        finally:
            self.epoch = was
        if batch > batches:
            raise ValueError(f"the state resumes at batch {batch}, but an "
                             f"epoch of this dataset has {batches} batches")
        self.epoch, self.start_batch, self._yielded = epoch, batch, None

    def __iter__(self):
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info else (0, 1)
        # one per worker: no shared file state
        shards = ShardSet(self.path, backend=self.backend)
        rows = self.rank_rows()
        self._yielded = 0
        mine = range(self.start_batch + worker, len(self), workers)

        def make(b):
            pick = rows[b * self.batch_rows:(b + 1) * self.batch_rows]
            return shards.batch(pick, self.form, tensors="pt",
                                **self.collate_options)
        # the whole batch in the thread: a training step's device waits
        # release the GIL, and the C reader's call does too
        depth = self.read_ahead if shards.backend == "c" else 0
        for batch in read_ahead(make, mine, depth):
            self._yielded += 1
            yield PackedBatch(batch)


class PackedMapDataset(Dataset):
    """Map-style access to single rows, for samplers of your own: item i is
    row i as torch tensors (input_ids int64, cu_seqlens int32, seq_ids int64,
    loss_mask and seq_starts when present)."""

    def __init__(self, path):
        self.path = path
        self._shards = None
        self._rows = len(ShardSet(path))

    def __len__(self):
        return self._rows

    def __getitem__(self, i):
        if self._shards is None:  # opened lazily, in each worker
            self._shards = ShardSet(self.path)
        row = self._shards[i]
        out = {"input_ids": torch.from_numpy(row["input_ids"].astype(np.int64)),
               "cu_seqlens": torch.from_numpy(row["cu_seqlens"].copy()),
               "seq_ids": torch.from_numpy(row["seq_ids"].astype(np.int64))}
        for key in ("loss_mask", "seq_starts"):
            if key in row:
                out[key] = torch.from_numpy(row[key].astype(np.int64))
        return out
