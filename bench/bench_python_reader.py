#!/usr/bin/env python3
"""Python reader throughput: rows/s and tokens/s through the PyTorch
DataLoader (PackedDataset, varlen batches, in order), with the C reader
(libprepack through ctypes, the default) and the pure-Python one, and
ShardSet[i] row by row collated 64 rows at a time (prepack.collate, torch
tensors), each against `zstd -dc > /dev/null` on the same shards in the
same run (the runs interleaved), medians of RUNS (default 5). It prints
issue 31's two ratios: PackedDataset in order at >= 1x zstd -dc, and
ShardSet[i] + collate of 64 rows at >= 0.5x, and the floor under the
first: the DataLoader alone over the same batches built beforehand.
Then (STEP_MS=0 skips it) PackedDataset's read_ahead under a training
step: each batch followed by a step of STEP_MS (default 2) that releases
the GIL, as a GPU step waiting on the device does, the epoch with
read_ahead 0 and the default. Then (SHUFFLED=0 skips it) the C reader in
the epoch's shuffled order: rows shuffled one by one (each row
decompresses its frame) against shuffle="frames" (frames shuffled, rows
within each: a frame once).

    python bench/bench_python_reader.py SHARD_DIR [WORKERS]
"""
import glob
import os
import statistics
import subprocess
import sys
import time

import torch

import prepack
from prepack._collate import _to_torch as to_torch  # PackedDataset's
from prepack.torch import PackedBatch, PackedDataset

path = sys.argv[1]
workers = int(sys.argv[2]) if len(sys.argv) > 2 else 0
shards = sorted(glob.glob(os.path.join(path, "shard-*.zst")))
rows = len(prepack.ShardSet(path))
tokens = prepack.ShardSet(path).manifest["tokens"]


def zstd_run():
    t = time.perf_counter()
    for s in shards:
        subprocess.run(f"zstd -dc -q '{s}' > /dev/null", shell=True, check=True)
    return time.perf_counter() - t


def reader_run(backend, batch_rows=int(os.environ.get("BATCH_ROWS", "16")),
               shuffle=False, read_ahead=None, step=0.0):
    # read_ahead None: the dataset's default
    more = {} if read_ahead is None else {"read_ahead": read_ahead}
    ds = PackedDataset(path, batch_rows=batch_rows, form="varlen", shuffle=shuffle,
                       backend=backend, **more)
    t = time.perf_counter()
    n = 0
    for batch in torch.utils.data.DataLoader(ds, batch_size=None,
                                             num_workers=workers):
        n += len(batch["input_ids"])
        if step:
            time.sleep(step)  # releases the GIL, as a device wait does
    assert n == tokens
    return time.perf_counter() - t


class ReadyBatches(torch.utils.data.IterableDataset):
    """The floor under reader_run: the same epoch's batches, built before
    the clock starts, through the same DataLoader (its __next__, torch's
    profiler hooks, default_convert and, with workers, the crossing, each
    batch handed over as PackedDataset hands it: torch tensors over the
    numpy arrays, in a worker copied into one block of shared memory)."""

    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        info = torch.utils.data.get_worker_info()  # each worker its share
        mine = self.batches if info is None else \
            self.batches[info.id::info.num_workers]
        for b in mine:
            yield PackedBatch(to_torch(b))


def ready_batches():
    s = prepack.ShardSet(path, backend="c")
    step = int(os.environ.get("BATCH_ROWS", "16"))
    return [s.batch(range(i, min(i + step, rows)), "varlen")
            for i in range(0, rows, step)]


def floor_run(ready):
    t = time.perf_counter()
    n = 0
    for batch in torch.utils.data.DataLoader(ReadyBatches(ready),
                                             batch_size=None,
                                             num_workers=workers):
        n += len(batch["input_ids"])
    assert n == tokens
    return time.perf_counter() - t


def rows_run(per_batch=64):
    """ShardSet[i] for every row, collated per_batch rows at a time."""
    s = prepack.ShardSet(path)
    t = time.perf_counter()
    n = 0
    for first in range(0, rows, per_batch):
        batch = prepack.collate([s[i] for i in
                                 range(first, min(first + per_batch, rows))],
                                "varlen", tensors="pt")
        n += len(batch["input_ids"])
    assert n == tokens
    return time.perf_counter() - t


runs = int(os.environ.get("RUNS", "5"))
z, c, p, r, f = [], [], [], [], []
ready = ready_batches()
for _ in range(runs):
    z.append(zstd_run())
    f.append(floor_run(ready))
    c.append(reader_run("c"))
    p.append(reader_run("python"))
    r.append(rows_run())
z, c, p, r, f = (statistics.median(v) for v in (z, c, p, r, f))
del ready
print(f"{rows} rows, {tokens} tokens, {len(shards)} shards, workers={workers}, "
      f"medians of {runs}")
print(f"zstd -dc       : {z:.3f} s  {tokens / z / 1e6:.1f} M tokens/s")
for name, t in (("C reader", c), ("Python reader", p)):
    print(f"{name:<15}: {t:.3f} s  {rows / t:.0f} rows/s  "
          f"{tokens / t / 1e6:.1f} M tokens/s  ({z / t:.2f}x zstd's speed)")
print(f"C reader / Python reader: {p / c:.2f}x")
print(f"DataLoader alone: {f:.3f} s  ({z / f:.2f}x zstd's speed: the same "
      f"batches built beforehand); PackedDataset above it {c - f:.3f} s")
print(f"ShardSet[i] + collate of 64 rows: {r:.3f} s  {rows / r:.0f} rows/s  "
      f"{tokens / r / 1e6:.1f} M tokens/s")
print(f"PackedDataset in order / zstd -dc: {z / c:.2f}x (goal >= 1)")
print(f"ShardSet[i] + collate(64 rows) / zstd -dc: {z / r:.2f}x (goal >= 0.5)")
step_ms = float(os.environ.get("STEP_MS", "2"))
if step_ms > 0:
    off, on = [], []
    for _ in range(3):
        off.append(reader_run("c", read_ahead=0, step=step_ms / 1e3))
        on.append(reader_run("c", step=step_ms / 1e3))
    off, on = statistics.median(off), statistics.median(on)
    batches = len(PackedDataset(path, batch_rows=int(os.environ.get(
        "BATCH_ROWS", "16")), shuffle=False))
    alone = batches * step_ms / 1e3
    depth = PackedDataset(path).read_ahead
    print(f"with a {step_ms:g} ms step a batch ({batches} batches, "
          f"{alone:.3f} s of steps): read_ahead=0 {off:.3f} s, "
          f"read_ahead={depth} {on:.3f} s; reading exposed "
          f"{off - alone:.3f} s and {on - alone:.3f} s")
if os.environ.get("SHUFFLED", "1") == "0":
    sys.exit(0)

shuffled, frames = [], []
for _ in range(3):
    shuffled.append(reader_run("c", shuffle=True))
    frames.append(reader_run("c", shuffle="frames"))
shuffled, frames = statistics.median(shuffled), statistics.median(frames)
for name, t in (("C, rows shuffled", shuffled), ('C, "frames"', frames)):
    print(f"{name:<17}: {t:.3f} s  {rows / t:.0f} rows/s  "
          f"{tokens / t / 1e6:.1f} M tokens/s")
print(f'shuffle="frames" / rows shuffled: {shuffled / frames:.1f}x faster')
