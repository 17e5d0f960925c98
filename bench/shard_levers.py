#!/usr/bin/env python3
"""What each lever would make of a set's size, measured before any format
change: `prepack pack` at the defaults, then the set's rows regrouped in
Python into independent zstd frames of their ids as format 3 stores them
(msgpack framing left out: 0.4-1.4% of a frame), each figure over `zstd -3 -T1` of the same ids as one
stream in packed order (the CLI, as bench/shard_size.py; issue 31's goal is
<= 1.05).

Levers: frames of x1, x2, x4 the default rows; zstd level 9; and a
dictionary trained on the set's rows (ZDICT fastCover, k 2048, d 8, fixed:
under a second where the searching default takes a minute), counted at
its `zstd -19` size as a set would store it, trained on every n-th row
(`even`, which needs the whole plan before the first frame) or on the
first rows (`first`, what a streaming writer has).

    python bench/shard_levers.py [--prepack build/prepack] [--dict-kib 1024]
        CORPUS.jsonl.zst ...
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
import zstandard as zs

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
sys.path.insert(0, HERE)
from shard_size import zstd_size  # noqa: E402  the one baseline


def stored_bytes(ids):
    """A row's ids as format 3 stores them: 3 bytes a uint32 id where the
    row's ids are all below 2^24 (docs/FORMAT.md), else the dtype's."""
    if ids.dtype.itemsize == 4 and (len(ids) == 0 or ids.max() < 1 << 24):
        return ids.astype("<u4").view(np.uint8).reshape(-1, 4)[:, :3].tobytes()
    return ids.tobytes()


def framed_size(rows, per_frame, level=3, dictionary=None):
    """Bytes of rows' ids in independent frames of per_frame rows."""
    c = zs.ZstdCompressor(level=level, dict_data=dictionary)
    return sum(len(c.compress(b"".join(rows[i:i + per_frame])))
               for i in range(0, len(rows), per_frame))


def trained(rows, sample, kib):
    """A dictionary trained on `sample` rows, its stored size, seconds."""
    t = time.perf_counter()
    d = zs.train_dictionary(kib << 10, sample, k=2048, d=8, f=20, accel=1,
                            steps=0, threads=1)
    seconds = time.perf_counter() - t
    stored = len(zs.ZstdCompressor(level=19).compress(d.as_bytes()))
    return d, stored, seconds


def levers(corpus, prepack_bin, kib, work):
    from prepack._shards import ShardSet
    out = os.path.join(work, "set")
    subprocess.run([prepack_bin, "pack", corpus, "-o", out, "--max-seq-len",
                    "4096", "--overlong", "split", "--overwrite", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    s = ShardSet(out)
    rows = [s[i]["input_ids"] for i in range(len(s))]
    packed = os.path.join(work, "packed.bin")
    np.concatenate(rows).tofile(packed)  # the baseline: the store's width
    rows = [stored_bytes(r) for r in rows]
    base, r = zstd_size(packed), s.rows_per_frame
    cells = {f"x{x}": framed_size(rows, r * x) / base for x in (1, 2, 4)}
    cells["level 9"] = framed_size(rows, r, level=9) / base
    samples = {"even": rows[::max(1, len(rows) // 2000)],
               "first": rows[:1024]}
    for name, sample in samples.items():
        d, stored, seconds = trained(rows, sample, kib)
        for x in (1, 2):
            cells[f"dict {name} x{x}"] = \
                (framed_size(rows, r * x, dictionary=d) + stored) / base
        cells[f"train s ({name})"] = seconds
    return s.token_dtype.name, cells


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpora", nargs="+")
    ap.add_argument("--prepack", default=os.path.join(ROOT, "build", "prepack"))
    ap.add_argument("--dict-kib", type=int, default=1024)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as work:
        for i, corpus in enumerate(a.corpora):
            dtype, cells = levers(corpus, a.prepack, a.dict_kib, work)
            if i == 0:
                print(f"| corpus | dtype | {' | '.join(cells)} |")
                print("| --- | --- |" + " ---: |" * len(cells))
            name = os.path.basename(corpus).split(".")[0]
            print(f"| {name} | {dtype} | "
                  + " | ".join(f"{v:.3f}" if "train" not in k else f"{v:.2f}"
                               for k, v in cells.items()) + " |", flush=True)
    print(f"ratios over zstd -3 -T1 of the packed ids as one stream; dict "
          f"{a.dict_kib} KiB counted at its zstd -19 size")


if __name__ == "__main__":
    main()
