#!/usr/bin/python3
"""Python reader throughput: rows/s and tokens/s through the PyTorch
DataLoader (PackedDataset, varlen batches) against `zstd -dc > /dev/null`
on the same shards, in one run (goal: >= 50% of zstd's speed).

    PYTHONPATH=python /usr/bin/python3 bench/bench_python_reader.py SHARD_DIR [WORKERS]
"""
import glob
import os
import statistics
import subprocess
import sys
import time

import torch

import prepack
from prepack.torch import PackedDataset

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


def reader_run(batch_rows=int(os.environ.get("BATCH_ROWS", "16"))):
    ds = PackedDataset(path, batch_rows=batch_rows, form="varlen", shuffle=False)
    t = time.perf_counter()
    n = 0
    for batch in torch.utils.data.DataLoader(ds, batch_size=None,
                                             num_workers=workers):
        n += len(batch["input_ids"])
    assert n == tokens
    return time.perf_counter() - t


z, r = [], []
for _ in range(3):
    z.append(zstd_run())
    r.append(reader_run())
z, r = statistics.median(z), statistics.median(r)
print(f"{rows} rows, {tokens} tokens, {len(shards)} shards, workers={workers}")
print(f"zstd -dc : {z:.3f} s  {tokens / z / 1e6:.1f} M tokens/s")
print(f"reader   : {r:.3f} s  {rows / r:.0f} rows/s  {tokens / r / 1e6:.1f} M tokens/s"
      f"  ({z / r:.2f}x zstd's speed; goal >= 0.5)")
