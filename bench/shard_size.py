#!/usr/bin/env python3
"""Shard size against zstd on real corpora: `prepack pack` at the default
settings, against `zstd -3 -T1` of the same tokens as one stream, in input
order and in the set's packed order (the rows' tokens concatenated), at
the store's token width (uint16 for r50k ids, uint32 for o200k and the
wide copies).

    python bench/shard_size.py [--prepack build/prepack] [--max-seq-len 4096]
        [CORPUS.jsonl.zst ...]   (default: both bundled corpora and every
                                  corpus of bench/data/, the wider set that
                                  bench/make_corpora.py writes)
"""
import argparse
import glob
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
CORPORA = [os.path.join(ROOT, "fixtures", "corpus", n)
           for n in ("python-docs.jsonl.zst", "python-docs-o200k.jsonl.zst")] + \
    sorted(glob.glob(os.path.join(HERE, "data", "*.jsonl.zst")))


def zstd_size(path):
    subprocess.run(["zstd", "-3", "-T1", "-q", "-f", path, "-o", path + ".zst"],
                   check=True)
    return os.path.getsize(path + ".zst")


def main():
    from prepack._shards import ShardSet
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpora", nargs="*", default=CORPORA)
    ap.add_argument("--prepack", default=os.path.join(ROOT, "build", "prepack"))
    ap.add_argument("--max-seq-len", type=int, default=4096)
    a = ap.parse_args()
    print(f"{'corpus':<30} {'dtype':<7} {'L':>6} {'R':>5} {'shards_MB':>10} "
          f"{'zstd_in_MB':>11} {'zstd_packed_MB':>15} {'/input':>7} {'/packed':>8}")
    with tempfile.TemporaryDirectory() as work:
        for corpus in a.corpora:
            out = os.path.join(work, "set")
            subprocess.run([a.prepack, "pack", corpus, "-o", out, "--max-seq-len",
                            str(a.max_seq_len), "--overlong", "split", "--overwrite",
                            "--quiet"], check=True, stdout=subprocess.DEVNULL)
            s = ShardSet(out, backend="python")
            dtype = s.token_dtype
            with open(corpus, "rb") as f:
                lines = zstandard.ZstdDecompressor().stream_reader(f).read().splitlines()
            raw_in = os.path.join(work, "input.bin")
            np.concatenate([np.asarray(json.loads(l)["input_ids"], dtype)
                            for l in lines if l]).tofile(raw_in)
            raw_packed = os.path.join(work, "packed.bin")
            np.concatenate([s[i]["input_ids"] for i in range(len(s))]).tofile(raw_packed)
            shards = sum(e["bytes"] for e in s.manifest["shards"])
            zi, zp = zstd_size(raw_in), zstd_size(raw_packed)
            print(f"{os.path.basename(corpus):<30} {dtype.name:<7} {a.max_seq_len:>6} "
                  f"{s.rows_per_frame:>5} {shards / 1e6:>10.3f} {zi / 1e6:>11.3f} "
                  f"{zp / 1e6:>15.3f} {shards / zi:>6.3f}x {shards / zp:>7.3f}x")
    print("/input, /packed: shards over zstd -3 of the same tokens as one stream, "
          "in input order and in packed order (goal: /packed <= 1.05)")


if __name__ == "__main__":
    main()
