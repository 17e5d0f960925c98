#!/usr/bin/env python3
"""One `prepack pack` process against the same job in steps (scan with N
tasks in parallel, plan, write with N tasks in parallel, finalize), on one
machine, in one run: wall time and bytes read and written per step (the
processes' /proc/self/io: rchar and wchar, page cache included; for write
tasks plus the token bytes they read through mappings, which rchar does
not see), medians over RUNS, and a check that both give the same bytes.

The corpus is the bundled one (fixtures/corpus), decompressed and repeated
with its token ids shifted each time, to SIZE_GB of plain JSONL (a large
plain JSONL file is what scan tasks split by byte range), in FILES files.

    python bench/bench_steps.py [--size-gb 2] [--tasks 2] [--runs 3] [--files 4]
"""
import argparse
import filecmp
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time

import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CORPUS = os.path.join(ROOT, "fixtures", "corpus", "python-docs.jsonl.zst")
OPTS = ["--max-seq-len", "4096", "--overlong", "split"]


def make_corpus(directory, size, files):
    with open(CORPUS, "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read().splitlines()
    records = [json.loads(line)["input_ids"] for line in lines if line]
    paths = [os.path.join(directory, f"part-{i:03d}.jsonl") for i in range(files)]
    outs = [open(p, "w") for p in paths]
    written, shift = 0, 0
    while written < size:
        for k, ids in enumerate(records):
            text = json.dumps({"input_ids": [(t + shift) % 50000 for t in ids]}) + "\n"
            outs[k % files].write(text)
            written += len(text)
        shift += 7
    for f in outs:
        f.close()
    return paths, written


def run(prepack, *args):
    t0 = time.perf_counter()
    p = subprocess.run([prepack, *args, "--json"], capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"prepack {args[0]} failed: {p.stderr}")
    return time.perf_counter() - t0, json.loads(p.stdout)


def parallel(prepack, step, args, tasks):
    t0 = time.perf_counter()
    procs = [subprocess.Popen([prepack, step, *args, "--task-index", str(t),
                               "--task-count", str(tasks), "--json"],
                              stdout=subprocess.PIPE, text=True) for t in range(tasks)]
    results = [json.loads(p.communicate()[0]) for p in procs]
    if any(p.returncode for p in procs):
        raise SystemExit(f"prepack {step} failed")
    return time.perf_counter() - t0, results


def one_run(prepack, inputs, work, tasks):
    ref, out = os.path.join(work, "ref"), os.path.join(work, "out")
    for d in (ref, out):
        shutil.rmtree(d, ignore_errors=True)
    row = {}
    t, r = run(prepack, "pack", *inputs, "-o", ref, *OPTS, "--quiet")
    row["pack"] = (t, r["io"]["read_bytes"], r["io"]["write_bytes"])
    common = [*inputs, "-o", out, *OPTS]
    t, rs = parallel(prepack, "scan", common, tasks)
    row["scan"] = (t, sum(x["io_read_bytes"] for x in rs), sum(x["io_write_bytes"] for x in rs))
    t, r = run(prepack, "plan", *common, "--scan-tasks", str(tasks))
    row["plan"] = (t, r["io_read_bytes"], r["io_write_bytes"])
    t, rs = parallel(prepack, "write", common, tasks)
    row["write"] = (t, sum(x["io_read_bytes"] + x["bytes_mapped"] for x in rs),
                    sum(x["io_write_bytes"] for x in rs))
    t, r = run(prepack, "finalize", *common, "--write-tasks", str(tasks))
    row["finalize"] = (t, r["io_read_bytes"], r["io_write_bytes"])
    names = sorted(os.listdir(ref))
    same = names == sorted(os.listdir(out)) and all(
        filecmp.cmp(os.path.join(ref, n), os.path.join(out, n), shallow=False) for n in names)
    row["steps"] = tuple(sum(row[s][i] for s in ("scan", "plan", "write", "finalize"))
                         for i in range(3))
    return row, same, r


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size-gb", type=float, default=2.0)
    ap.add_argument("--tasks", type=int, default=2)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--files", type=int, default=4)
    ap.add_argument("--prepack", default=os.environ.get(
        "PREPACK_BIN", os.path.join(ROOT, "build", "prepack")))
    ap.add_argument("--work", default=None, help="scratch directory (default: a temporary one)")
    a = ap.parse_args()
    work = a.work or tempfile.mkdtemp(prefix="bench-steps-")
    try:
        inputs, size = make_corpus(work, int(a.size_gb * 1e9), a.files)
        print(f"corpus: {size / 1e9:.2f} GB of JSONL in {a.files} files; "
              f"{os.cpu_count()} cores; {a.tasks} tasks a step; {a.runs} runs")
        rows, same, final = [], True, None
        for _ in range(a.runs):
            row, ok, final = one_run(a.prepack, inputs, work, a.tasks)
            rows.append(row)
            same &= ok
        print(f"output: {final['rows']:,} rows, {final['shards']} shards, "
              f"{final['bytes_written'] / 1e6:.1f} MB; byte-identical to pack: {same}")
        base = statistics.median(r["pack"][0] for r in rows)
        print(f"{'step':<10}{'wall s':>9}{'x pack':>8}{'read MB':>10}{'written MB':>12}")
        for step in ("pack", "scan", "plan", "write", "finalize", "steps"):
            t = statistics.median(r[step][0] for r in rows)
            rd = statistics.median(r[step][1] for r in rows) / 1e6
            wr = statistics.median(r[step][2] for r in rows) / 1e6
            label = "all steps" if step == "steps" else step
            print(f"{label:<10}{t:>9.2f}{t / base:>8.2f}{rd:>10.0f}{wr:>12.0f}")
        if not same:
            raise SystemExit("the steps' set differs from pack's")
    finally:
        if not a.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
