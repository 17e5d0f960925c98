"""Inputs of every format prepack reads, written from plain Python lists,
for the tests of pack in steps (test_steps.py, test_steps_cluster.py)."""
import gzip
import json
import random
import struct

import numpy as np
import zstandard


def sequences(seed, n, max_len=300, vocab=50000):
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.choice([0, 1, 2, rng.randint(1, 40), rng.randint(1, max_len),
                             rng.randint(max_len, 3 * max_len)])
        out.append([rng.randrange(vocab) for _ in range(length)])
    return out


def write_jsonl(path, seqs, seed=0, compress=None, masks=True):
    rng = random.Random(seed)
    lines = []
    for s in seqs:
        rec = {"input_ids": s}
        kind = rng.randrange(4) if masks and s else 0
        if kind == 1:
            rec["loss_mask"] = [rng.randrange(2) for _ in s]
        elif kind == 2:
            rec["labels"] = [t if rng.randrange(3) else -100 for t in s]
        lines.append(json.dumps(rec))
        if rng.randrange(10) == 0:
            lines.append("")  # blank lines are not records
    data = ("\n".join(lines) + "\n").encode()
    if compress == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    elif compress == "gz":
        data = gzip.compress(data, mtime=0)
    with open(path, "wb") as f:
        f.write(data)


def write_megatron(prefix, seqs, dtype=np.uint16, docs_every=3):
    """X.bin and X.idx as Megatron's IndexedDatasetBuilder writes them."""
    code = {np.uint16: 8, np.int32: 4, np.int64: 5, np.uint8: 1}[dtype]
    width = np.dtype(dtype).itemsize
    lengths, pointers, pos = [], [], 0
    with open(prefix + ".bin", "wb") as f:
        for s in seqs:
            f.write(np.asarray(s, dtype=dtype).tobytes())
            lengths.append(len(s))
            pointers.append(pos)
            pos += len(s) * width
    doc_idx = list(range(0, len(seqs), docs_every)) + [len(seqs)]
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + bytes([code]))
        f.write(struct.pack("<QQ", len(seqs), len(doc_idx)))
        f.write(np.asarray(lengths, dtype=np.int32).tobytes())
        f.write(np.asarray(pointers, dtype=np.int64).tobytes())
        f.write(np.asarray(doc_idx, dtype=np.int64).tobytes())


def write_llmc(path, seqs, eot=50256):
    """llm.c's GPT-2 .bin: a 1024-byte header, uint16 tokens, each
    document opened by the EOT token."""
    tokens = []
    for s in seqs:
        tokens.append(eot)
        tokens.extend(t % 50000 for t in s)
    header = np.zeros(256, dtype=np.int32)
    header[0], header[1], header[2] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


def write_raw(path, seqs, sep=0):
    tokens = []
    for s in seqs:
        tokens.extend(t % 60000 + 1 for t in s)
        tokens.append(sep)
    with open(path, "wb") as f:
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())
