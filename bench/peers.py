#!/usr/bin/env python3
"""prepack against TRL's pack_dataset, side by side in one run, on the same
Hugging Face dataset: real sequence lengths (fixtures/lengths), synthetic
token ids. For each: rows, packing efficiency (tokens / (rows x L)), the
seconds it took (median of RUNS) and the ratio to prepack.

TRL's strategies: "bfd" (its default: best fit decreasing over the whole
dataset, overlong sequences truncated) and "bfd_split" (overlong ones
split). prepack runs the same algorithm and policy (algo="bfd",
overlong="truncate" / "split") and writes a whole shard set, which TRL
does not; prepack.pack() (in memory, no shards) is timed too.

    python bench/peers.py [LENGTHS_FILE] [L] [RUNS]
"""
import os
import shutil
import statistics
import sys
import tempfile
import time

import numpy as np
import pyarrow as pa
from datasets import Dataset, disable_progress_bars
from trl import pack_dataset as trl_pack

import prepack

HERE = os.path.dirname(os.path.abspath(__file__))
lengths_file = sys.argv[1] if len(sys.argv) > 1 else os.path.join(
    HERE, "..", "fixtures", "lengths", "sharegpt_opt_first_turn_total_lengths.txt")
L = int(sys.argv[2]) if len(sys.argv) > 2 else 2048
RUNS = int(sys.argv[3]) if len(sys.argv) > 3 else 3
disable_progress_bars()

lengths = np.loadtxt(lengths_file, dtype=np.int64)
lengths = lengths[lengths > 0]
rng = np.random.default_rng(0)
values = rng.integers(0, 50000, int(lengths.sum()), dtype=np.int32)
offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)
column = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values))
dataset = Dataset(pa.table({"input_ids": column}))
tokens = int(lengths.sum())


def timed(fn):
    times, result = [], None
    for _ in range(RUNS):
        t = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), result


def trl_run(strategy):
    def run():
        packed = trl_pack(dataset, L, strategy=strategy)
        return len(packed), int(sum(sum(x) for x in packed["seq_lengths"]))
    return run


def prepack_run(overlong):
    def run():
        out = tempfile.mkdtemp(prefix="prepack-peers-")
        try:
            s = prepack.pack_dataset(dataset, out, max_seq_len=L, algo="bfd",
                                     overlong=overlong, overwrite=True)
            return s["rows"], s["tokens"]
        finally:
            shutil.rmtree(out)
    return run


def prepack_memory_run(overlong):
    seqs = [values[offsets[i]:offsets[i + 1]] for i in range(len(lengths))]

    def run():
        rows = prepack.pack(seqs, max_seq_len=L, algo="bfd", overlong=overlong)
        return len(rows), int(sum(len(r["input_ids"]) for r in rows))
    return run


print(f"{os.path.basename(lengths_file)}: {len(lengths):,} sequences, "
      f"{tokens:,} tokens, L = {L}; medians of {RUNS}")
print(f"{'tool':<44} {'rows':>8} {'efficiency':>10} {'seconds':>8} "
      f"{'vs prepack':>10}")
for strategy, overlong in (("bfd", "truncate"), ("bfd_split", "split")):
    base, (rows, placed) = timed(prepack_run(overlong))
    results = [(f"prepack.pack_dataset bfd/{overlong} (shards)", base, rows,
                placed)]
    t, (rows, placed) = timed(prepack_memory_run(overlong))
    results.append((f"prepack.pack bfd/{overlong} (in memory)", t, rows, placed))
    t, (rows, placed) = timed(trl_run(strategy))
    results.append((f"TRL pack_dataset {strategy}", t, rows, placed))
    for name, t, rows, placed in results:
        print(f"{name:<44} {rows:>8,} {placed / (rows * L):>10.4%} "
              f"{t:>8.3f} {t / base:>9.2f}x")
