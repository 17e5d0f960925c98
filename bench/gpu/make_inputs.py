#!/usr/bin/python3
"""Inputs for bench/gpu/bench_prefill.py, made here with libprepack: for
each (lengths, batch) config, the prompts (random ids, seeded) and
prepack.prefill.pack_prompts' rows. The GPU machine only runs the model,
so it needs none of prepack's C dependencies.

    PREPACK_LIBRARY=build/libprepack.so PYTHONPATH=python \\
        /usr/bin/python3 bench/gpu/make_inputs.py bench/gpu/data/inputs.npz
"""
import json
import os
import sys

import numpy as np

from prepack.prefill import pack_prompts

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
CAP = 2048
VOCAB = 32000


def sharegpt():
    path = os.path.join(ROOT, "fixtures", "lengths",
                        "sharegpt_opt_first_turn_total_lengths.txt")
    return [min(int(l), CAP) for l in open(path) if l.strip() and int(l) > 0]


def corpus():
    import zstandard
    path = os.path.join(ROOT, "fixtures", "corpus", "python-docs.jsonl.zst")
    with open(path, "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [min(len(json.loads(l)["input_ids"]), CAP)
            for l in text.splitlines() if l and json.loads(l)["input_ids"]]


def main(out):
    arrays = {}
    configs = []
    for name, pool in (("sharegpt", sharegpt()), ("corpus", corpus())):
        for b in (32, 128):
            rng = np.random.default_rng(b)
            lengths = rng.choice(pool, b).astype(np.int64)
            tokens = rng.integers(0, VOCAB, int(lengths.sum())).astype(np.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            prompts = [tokens[starts[i]:starts[i + 1]] for i in range(b)]
            pp = pack_prompts(prompts)
            key = "%s_%d" % (name, b)
            configs.append(key)
            arrays.update({
                key + "_lengths": lengths, key + "_tokens": tokens,
                key + "_ids": pp.input_ids, key + "_pos": pp.position_ids,
                key + "_doc": pp.prompt_index, key + "_cu": pp.cu_seqlens,
                key + "_order": pp.order, key + "_last": pp.last_index,
            })
            print("%-12s prompts %4d, tokens %7d, padded slots %8d, rows %3d x %4d"
                  % (key, b, lengths.sum(), b * lengths.max(), pp.rows, pp.capacity))
    arrays["configs"] = np.array(configs)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    np.savez_compressed(out, **arrays)


if __name__ == "__main__":
    main(sys.argv[1])
