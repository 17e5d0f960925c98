"""The real prompt-length sets the benches draw from: ShareGPT's and
OpenChat's lengths, SQuAD's histogram (fixtures/lengths) and the bundled
corpus's documents. SETS maps a name to a function giving a numpy
array of lengths."""
import json
import os

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LENGTHS = os.path.join(ROOT, "fixtures", "lengths")


def histogram(path):
    data = np.loadtxt(path, delimiter=",", skiprows=1, dtype=np.int64)
    return np.repeat(data[:, 0], data[:, 1])


def corpus_lengths():
    import zstandard
    path = os.path.join(ROOT, "fixtures", "corpus", "python-docs.jsonl.zst")
    with open(path, "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read()
    return np.array([len(json.loads(l)["input_ids"]) for l in text.splitlines() if l])


def listed(name):
    return np.loadtxt(os.path.join(LENGTHS, name), dtype=np.int64)


SETS = {
    "sharegpt": lambda: listed("sharegpt_opt_first_turn_total_lengths.txt"),
    "openchat": lambda: listed("openchat_v1_multipack_testdata_lengths.txt"),
    "squad": lambda: histogram(os.path.join(LENGTHS, "squad_1_1_seq384_histogram.csv")),
    "wikipedia": lambda: histogram(os.path.join(LENGTHS, "wikipedia_seq512_histogram.csv")),
    "corpus": corpus_lengths,
}
