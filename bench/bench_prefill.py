#!/usr/bin/env python3
"""Prefill: left-padded batch vs prepacked rows (prepack.prefill), on CPU.

For batch sizes 8, 16, 32, 64, prompts with lengths drawn (seeded) from the
bundled corpus (capped at 512) and from a heavy-tailed log-normal, a small
decoder (4 layers, d=256, 4 heads, masked softmax attention) prefills
each batch both ways. Reports the median of 5 wall times, the peak memory
of one prefill (maximum RSS of a fresh process running it, minus that of
one that only loads the model and prompts), and the pad tokens removed.

    PREPACK_LIBRARY=build/libprepack.so PYTHONPATH=python:tests/python \\
        .venv/bin/python bench/bench_prefill.py
"""
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "python"))
from test_prefill import Decoder, left_padded  # noqa: E402

from prepack.prefill import pack_prompts  # noqa: E402

torch.set_num_threads(2)
ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CAP = 512


def corpus_lengths():
    import zstandard
    path = os.path.join(ROOT, "fixtures", "corpus", "python-docs.jsonl.zst")
    with open(path, "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [len(json.loads(l)["input_ids"]) for l in text.splitlines() if l]


def prompts_for(lengths):
    rng = np.random.default_rng(7)
    return [rng.integers(0, 512, n).tolist() for n in lengths]


@torch.no_grad()
def padded_run(model, prompts):
    ids, pos, mask, _ = left_padded(prompts, torch.float32)
    return model(ids, pos, mask)[0][:, -1]


@torch.no_grad()
def packed_run(model, prompts):
    pp = pack_prompts(prompts).to_torch()
    logits, _ = model(pp.input_ids, pp.position_ids, pp.attention_mask_4d)
    return pp.last_token_logits(logits)


def prompts_for_config(name, b):
    real = [min(n, CAP) for n in corpus_lengths() if n > 0]
    rng = np.random.default_rng(3)
    heavy = [int(min(CAP, max(1, v))) for v in rng.lognormal(np.log(60), 1.5, 4096)]
    pool = real if name == "corpus" else heavy
    return prompts_for(np.random.default_rng(b).choice(pool, b).tolist())


def one(mode, name, b):
    """Child mode: one prefill, for /usr/bin/time's maximum RSS."""
    torch.manual_seed(0)
    model = Decoder(d=64, heads=2, layers=2, max_pos=CAP).eval()
    prompts = prompts_for_config(name, b)
    if mode == "padded":
        padded_run(model, prompts)
    elif mode == "packed":
        packed_run(model, prompts)


def peak_mib(mode, name, b):
    """Peak RSS of a fresh process running one prefill (MiB)."""
    out = subprocess.run(["/usr/bin/time", "-f", "%M", sys.executable, __file__,
                          "--one", mode, name, str(b)], capture_output=True,
                         text=True, check=True, env=os.environ)
    return int(out.stderr.strip().splitlines()[-1]) / 1024


def main():
    torch.manual_seed(0)
    model = Decoder(d=64, heads=2, layers=2, max_pos=CAP).eval()
    real = [min(n, CAP) for n in corpus_lengths() if n > 0]
    rng = np.random.default_rng(3)
    heavy = [int(min(CAP, max(1, v))) for v in rng.lognormal(np.log(60), 1.5, 4096)]
    print("%-9s %5s %9s %9s %7s %9s %9s %7s %8s" % (
        "lengths", "batch", "padded_s", "packed_s", "speedup", "pad_MiB",
        "pack_MiB", "memory", "pad_gone"))
    for name, pool in (("corpus", real), ("heavy", heavy)):
        for b in (8, 16, 32, 64):
            lengths = np.random.default_rng(b).choice(pool, b).tolist()
            prompts = prompts_for(lengths)
            tp, tk = [], []
            for _ in range(5):
                t = time.perf_counter(); padded_run(model, prompts)
                tp.append(time.perf_counter() - t)
                t = time.perf_counter(); packed_run(model, prompts)
                tk.append(time.perf_counter() - t)
            pp = pack_prompts(prompts)
            slots_pad = b * max(lengths)
            pad_gone = 1 - (pp.rows * pp.capacity - sum(lengths)) / max(1, slots_pad - sum(lengths)) \
                if slots_pad > sum(lengths) else 0.0
            base = peak_mib("none", name, b)  # imports, model, prompts
            m_pad = peak_mib("padded", name, b) - base
            m_pack = peak_mib("packed", name, b) - base
            p, k = statistics.median(tp), statistics.median(tk)
            print("%-9s %5d %9.3f %9.3f %6.2fx %9.1f %9.1f %6.2fx %7.1f%%" % (
                name, b, p, k, p / k, m_pad, m_pack, m_pad / max(m_pack, 0.1),
                100 * pad_gone))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "--one":
        one(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        main()
