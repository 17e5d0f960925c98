#!/usr/bin/python3
"""Prefill: left-padded batch vs prepacked rows (prepack.prefill), on CPU.

For batch sizes 8, 16, 32, 64, prompts with lengths drawn (seeded) from the
bundled corpus (capped at 512) and from a heavy-tailed log-normal, a small
decoder (4 layers, d=256, 4 heads, masked softmax attention) prefills
each batch both ways. Reports the median of 3 wall times, the attention
score entries each computes (rows x width^2 x heads x layers: what the
masked-softmax attention holds in memory at once, the peak's main term),
and the pad tokens removed.

    PREPACK_LIBRARY=build/libprepack.so PYTHONPATH=python:tests/python \\
        /usr/bin/python3 bench/bench_prefill.py
"""
import json
import os
import statistics
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


def main():
    torch.manual_seed(0)
    model = Decoder(d=64, heads=2, layers=2, max_pos=CAP).eval()
    real = [min(n, CAP) for n in corpus_lengths() if n > 0]
    rng = np.random.default_rng(3)
    heavy = [int(min(CAP, max(1, v))) for v in rng.lognormal(np.log(60), 1.5, 4096)]
    print("%-9s %5s %9s %9s %7s %11s %11s %7s %8s" % (
        "lengths", "batch", "padded_s", "packed_s", "speedup", "pad_scores",
        "pack_scores", "memory", "pad_gone"))
    for name, pool in (("corpus", real), ("heavy", heavy)):
        for b in (8, 16, 32, 64):
            lengths = np.random.default_rng(b).choice(pool, b).tolist()
            prompts = prompts_for(lengths)
            tp, tk = [], []
            for _ in range(3):
                t = time.perf_counter(); padded_run(model, prompts)
                tp.append(time.perf_counter() - t)
                t = time.perf_counter(); packed_run(model, prompts)
                tk.append(time.perf_counter() - t)
            pp = pack_prompts(prompts)
            slots_pad = b * max(lengths)
            pad_gone = 1 - (pp.rows * pp.capacity - sum(lengths)) / max(1, slots_pad - sum(lengths)) \
                if slots_pad > sum(lengths) else 0.0
            s_pad = b * max(lengths) ** 2
            s_pack = pp.rows * pp.capacity ** 2
            p, k = statistics.median(tp), statistics.median(tk)
            print("%-9s %5d %9.3f %9.3f %6.2fx %11d %11d %6.2fx %7.1f%%" % (
                name, b, p, k, p / k, s_pad, s_pack, s_pad / s_pack,
                100 * pad_gone))


if __name__ == "__main__":
    main()
