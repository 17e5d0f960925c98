#!/usr/bin/env python3
"""Full shard sets against plan-only ones (`pack --plan-only`), in one run:
time and bytes written by `prepack pack` for each, re-planning the
plan-only set at other max_seq_len values, and reading every row back
through the C reader (batches of 8 rows in order, and 8 rows at random
places). Medians over RUNS, the two kinds alternated; the rows are
checked equal.

The corpus is bench_ingest's generated one (log-uniform token ranks, the
bundled corpus's length mix): Megatron corpus.bin/.idx (uint16) and the
same tokens as an llm.c file, SIZE_MB of tokens.

    python bench/bench_plan_only.py [--size-mb 1024] [--runs 3]
        [--prepack build/prepack] [--bench-ingest build/bench/bench_ingest]
"""
import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))


def pack(prepack, inp, out, L, plan_only):
    args = [prepack, "pack", inp, "-o", out, "--max-seq-len", str(L),
            "--overlong", "split", "--overwrite", "--json", "--quiet"]
    if plan_only:
        args.append("--plan-only")
    t0 = time.perf_counter()
    p = subprocess.run(args, capture_output=True, text=True, check=True)
    wall = time.perf_counter() - t0
    report = json.loads(p.stdout)
    set_bytes = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    return wall, report["io"]["write_bytes"], set_bytes, report["output"]["rows"]


def read_all(path, order):
    """Every row through the C reader's batches: seconds, tokens."""
    from prepack._creader import CReader
    r = CReader(path)
    t0 = time.perf_counter()
    tokens = 0
    for i in range(0, len(order), 8):
        b = r.batch(order[i:i + 8], doc_ids=False)
        tokens += len(b["input_ids"])
    dt = time.perf_counter() - t0
    r.close()
    return dt, tokens


def same_rows(a, b, sample):
    from prepack._creader import CReader
    x, y = CReader(a), CReader(b)
    assert x.rows == y.rows
    for i in sample:
        ra, rb = x.row(i), y.row(i)
        assert ra.keys() == rb.keys()
        for k in ra:
            assert np.array_equal(ra[k], rb[k]), (i, k)


def repeat_megatron(src, dst, k):
    """dst.bin/.idx: src's documents k times over (one file each)."""
    import struct
    with open(src + ".idx", "rb") as f:
        head = f.read(9 + 8 + 1)
        n, ndoc = struct.unpack("<QQ", f.read(16))
        sizes = np.frombuffer(f.read(4 * n), np.int32)
        ptrs = np.frombuffer(f.read(8 * n), np.int64)
        docs = np.frombuffer(f.read(8 * ndoc), np.int64)
    size = os.path.getsize(src + ".bin")
    with open(dst + ".bin", "wb") as out:
        for _ in range(k):
            with open(src + ".bin", "rb") as f:
                shutil.copyfileobj(f, out, 1 << 24)
    with open(dst + ".idx", "wb") as out:
        out.write(head + struct.pack("<QQ", n * k, (ndoc - 1) * k + 1))
        out.write(np.tile(sizes, k).tobytes())
        out.write(np.concatenate([ptrs + i * size for i in range(k)]).tobytes())
        out.write(np.concatenate([docs[:-1] + i * n for i in range(k)]
                                 + [np.array([n * k], np.int64)]).tobytes())


def replan_large(a, work):
    """Plan-only packs of a REPEAT x larger Megatron input at three L: the
    re-planning a large corpus needs."""
    big = os.path.join(work, "big")
    repeat_megatron(os.path.join(work, "corpus"), big, a.repeat)
    gb = os.path.getsize(big + ".bin") / 1e9
    print(f"\nre-planning {gb:.2f} GB of Megatron tokens "
          f"({os.path.getsize(big + '.idx') / 1e6:.0f} MB .idx), plan only")
    print(f"{'L':>5} {'pack_s':>8} {'written_MB':>11} {'rows':>9}")
    for L in (4096, 2048, 8192):
        ts = []
        for _ in range(a.runs):
            wall, wrote, size, rows = pack(a.prepack, big, os.path.join(work, f"big-{L}"),
                                           L, True)
            ts.append(wall)
        print(f"{L:>5} {statistics.median(ts):>8.3f} {wrote / 1e6:>11.2f} {rows:>9}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-mb", type=float, default=1024)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--prepack", default=os.path.join(ROOT, "build", "prepack"))
    ap.add_argument("--bench-ingest",
                    default=os.path.join(ROOT, "build", "bench", "bench_ingest"))
    ap.add_argument("--dir", help="work directory (default: a temporary one)")
    ap.add_argument("--repeat", type=int, default=0,
                    help="also: a Megatron input REPEAT times the corpus "
                         "(its documents over again), planned only")
    a = ap.parse_args()
    os.environ.setdefault("PREPACK_LIBRARY", os.path.join(os.path.dirname(a.prepack),
                                                          "libprepack.so"))
    work = a.dir or tempfile.mkdtemp(prefix="prepack-planonly-")
    try:
        subprocess.run([a.bench_ingest, "--size-mb", str(a.size_mb), "--runs", "1",
                        "--keep", "--dir", work], check=True, capture_output=True)
        token_mb = os.path.getsize(os.path.join(work, "corpus.bin")) / 1e6
        print(f"corpus: {token_mb:.1f} MB of uint16 tokens "
              f"(corpus.bin/.idx and llmc.bin), runs {a.runs}, medians\n")
        print(f"{'input':<11} {'set':<10} {'L':>5} {'pack_s':>8} {'written_MB':>11} "
              f"{'set_MB':>8} {'rows':>9}")
        results = {}
        for name, inp in (("megatron", os.path.join(work, "corpus")),
                          ("llmc", os.path.join(work, "llmc.bin"))):
            for L in (4096, 2048, 8192) if name == "megatron" else (4096,):
                kinds = ("full", "plan-only") if L == 4096 else ("plan-only",)
                times = {k: [] for k in kinds}
                for _ in range(a.runs):
                    for k in kinds:
                        out = os.path.join(work, f"{name}-{k}-{L}")
                        wall, wrote, size, rows = pack(a.prepack, inp, out, L,
                                                       k == "plan-only")
                        times[k].append(wall)
                        results[(name, k, L)] = (wrote, size, rows)
                for k in kinds:
                    wrote, size, rows = results[(name, k, L)]
                    med = statistics.median(times[k])
                    results[(name, k, L)] += (med,)
                    print(f"{name:<11} {k:<10} {L:>5} {med:>8.3f} {wrote / 1e6:>11.2f} "
                          f"{size / 1e6:>8.2f} {rows:>9}")
            full = results[(name, "full", 4096)]
            po = results[(name, "plan-only", 4096)]
            print(f"{'':<11} plan-only / full at 4096: time {po[3] / full[3]:.3f}x, "
                  f"bytes written {po[0] / full[0]:.4f}x")
        print("\nreading every row (C reader, batches of 8 rows)")
        print(f"{'set':<10} {'order':<8} {'read_s':>8} {'M tokens/s':>11}")
        full = os.path.join(work, "megatron-full-4096")
        po = os.path.join(work, "megatron-plan-only-4096")
        from prepack._creader import CReader
        n = CReader(full).rows
        rng = random.Random(1)
        same_rows(full, po, rng.sample(range(n), min(n, 500)))
        orders = {"in order": list(range(n))}
        shuffled = list(range(n))
        rng.shuffle(shuffled)
        orders["random"] = shuffled
        for oname, order in orders.items():
            speeds = {}
            for kind, path in (("full", full), ("plan-only", po)):
                ts = []
                for _ in range(a.runs):
                    dt, tokens = read_all(path, order)
                    ts.append(dt)
                speeds[kind] = statistics.median(ts)
                print(f"{kind:<10} {oname:<8} {speeds[kind]:>8.3f} "
                      f"{tokens / speeds[kind] / 1e6:>11.1f}")
            print(f"{'':<10} plan-only / full: {speeds['plan-only'] / speeds['full']:.3f}x "
                  f"the time")
        if a.repeat > 1:
            replan_large(a, work)
    finally:
        if not a.dir:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
