#!/usr/bin/env python3
"""Random row reads, issue 31's budget: one row of a set packed with
--shuffle, read at random, through ShardSet[i] (the C reader and the
pure-Python one) and through PackedDataset (batch_rows 1, shuffled, the C
reader), ms a row, medians of RUNS passes (default 5) of ROWS rows
(default 100). Reads whichever library and package it is run with, so a
format change is measured by running it under each build on the set each
build packed (bench/random_read.sh does, alternating).

    python bench/bench_random_read.py SHARD_DIR
"""
import os
import random
import statistics
import sys
import time

import prepack
from prepack.torch import PackedDataset

path = sys.argv[1]
runs = int(os.environ.get("RUNS", "5"))
per = int(os.environ.get("ROWS", "100"))


def shardset(backend):
    s = prepack.ShardSet(path, backend=backend)
    rng, out = random.Random(0), []
    for _ in range(runs):
        rows = [rng.randrange(len(s)) for _ in range(per)]
        t = time.perf_counter()
        for i in rows:
            s[i]
        out.append((time.perf_counter() - t) / per * 1e3)
    return statistics.median(out)


def dataset():
    out = []
    for seed in range(runs):
        ds = PackedDataset(path, batch_rows=1, form="varlen", shuffle=True,
                           seed=seed, backend="c", read_ahead=0)
        it = iter(ds)
        t = time.perf_counter()
        for _ in range(per):
            next(it)
        out.append((time.perf_counter() - t) / per * 1e3)
    return statistics.median(out)


m = prepack.ShardSet(path).manifest
print(f"{os.path.basename(path.rstrip('/'))}: version {m['version']}, "
      f"{m['rows_per_frame']} rows a frame; ms a random row: "
      f"ShardSet C {shardset('c'):.3f}, ShardSet Python "
      f"{shardset('python'):.3f}, PackedDataset {dataset():.3f}", flush=True)
