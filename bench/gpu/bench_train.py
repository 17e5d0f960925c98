#!/usr/bin/env python3
"""Training throughput on a GPU: prepack's packed rows, read by
PackedDataset, against padded batches of the same sequences.

The model is bench_prefill.py's Llama-shaped decoder (8 layers, d=2048, 16
heads of 128, SwiGLU 5632, RoPE, RMSNorm, vocabulary 32000; bf16, random
weights) trained with AdamW for a fixed number of steps on each shard set:

  packed   PackedDataset(SET, batch_rows=B, form="varlen",
           shuffle="frames"): the rows' tokens back to back, flash
           attention over cu_seqlens
           (torch.nn.attention.varlen), labels shifted within sequences
  padded   the same sequences in the set's order, as many a batch as the
           packed batches hold on average, right-padded to the longest,
           SDPA with is_causal (flash); -100 labels on the padding

Reports real (non-padding) tokens per second, the median step time, peak
memory above the weights and optimizer, and for packed the reader's share
of step time (the time PackedDataset takes to hand over the next batch,
DataLoader num_workers=0: the worst case, nothing overlapped). Loss is the
token mean over each step's real targets in both.

    python bench/gpu/bench_train.py SET [SET ...] [--steps 30] [--rows 8]
        [--out RESULT.json]

Shard sets (made here, carried to the device): bench/gpu/make_train_sets.sh.
PackedDataset reads through libprepack when it loads, else through the
package's own reader (numpy, zstandard, msgpack, xxhash must import).
PREPACK_BENCH_SMALL=1: a tiny float32 model on the CPU and 3 steps, to
check the script before spending device time on it.
"""
import argparse
import json
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
sys.path.insert(0, os.path.join(HERE, "..", "..", "python"))

import bench_prefill as bp  # noqa: E402  (the model and the attentions)
from prepack.torch import PackedDataset  # noqa: E402

SMALL, DEV = bp.SMALL, bp.DEV


def sync():
    if DEV == "cuda":
        torch.cuda.synchronize()


def loss_of(model, h, labels):
    logits = (h @ model.head.t()).float()
    n = (labels != -100).sum()
    loss = F.cross_entropy(logits.flatten(0, -2), labels.flatten(),
                           ignore_index=-100, reduction="sum")
    return loss / n.clamp(min=1)


def in_vocab(t):
    """Ids past the model's vocabulary (r50k's 50257 > 32000) folded into it,
    -100 kept: the same for both sides."""
    return torch.where(t >= 0, t % bp.VOCAB, t)


def packed_step(model, batch):
    ids = in_vocab(batch["input_ids"].to(DEV, non_blocking=True))
    pos = batch["position_ids"].to(DEV, non_blocking=True)
    labels = in_vocab(batch["labels"].to(DEV, non_blocking=True))
    cu = batch["cu_seqlens"].to(DEV, dtype=torch.int32, non_blocking=True)
    h = model(ids, pos, bp.varlen(cu, int(batch["max_seqlen"])))
    return loss_of(model, h, labels), int((batch["input_ids"] >= 0).sum())


def padded_batches(sequences, per_batch):
    """(ids [B, S], labels [B, S], real tokens) for runs of per_batch
    sequences, right-padded to each batch's longest."""
    for i in range(0, len(sequences), per_batch):
        group = sequences[i:i + per_batch]
        s = max(len(x) for x in group)
        ids = torch.zeros(len(group), s, dtype=torch.long)
        labels = torch.full((len(group), s), -100, dtype=torch.long)
        for j, x in enumerate(group):
            t = torch.as_tensor(x, dtype=torch.long)
            ids[j, :len(t)] = t
            labels[j, :len(t) - 1] = t[1:]
        yield ids, labels, sum(len(x) for x in group)


def padded_step(model, ids, labels):
    ids, labels = in_vocab(ids.to(DEV)), in_vocab(labels.to(DEV))
    pos = torch.arange(ids.shape[1], device=DEV).expand_as(ids)
    h = model(ids, pos, bp.sdpa_causal)
    return loss_of(model, h, labels)


def train(model, steps, next_batch, step_fn):
    """Runs `steps` optimizer steps (2 more first, untimed): per step the
    time to get the batch, the whole step's time, real tokens; peak
    memory above what the model and optimizer hold."""
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times, reads, tokens = [], [], []
    peak = 0.0
    for k in range(steps + 2):
        if k == 2 and DEV == "cuda":
            sync()
            base = torch.cuda.memory_allocated()
            torch.cuda.reset_peak_memory_stats()
        sync()
        t0 = time.perf_counter()
        batch = next_batch()
        t1 = time.perf_counter()
        loss, n = step_fn(model, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        sync()
        t2 = time.perf_counter()
        if k >= 2:
            times.append(t2 - t0)
            reads.append(t1 - t0)
            tokens.append(n)
    if DEV == "cuda":
        peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return times, reads, tokens, peak


def summary(times, reads, tokens, peak):
    total = sum(times)
    return {"steps": len(times), "median_step_ms": 1e3 * statistics.median(times),
            "tokens_per_s": sum(tokens) / total if total else 0.0,
            "real_tokens": sum(tokens), "peak_mib": peak,
            "reader_share": sum(reads) / total if total else 0.0,
            "reader_median_ms": 1e3 * statistics.median(reads)}


def bench_set(path, steps, rows):
    ds = PackedDataset(path, batch_rows=rows, form="varlen", shuffle="frames",
                       seed=0)
    loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=0)
    it = iter(loader)

    def next_packed():
        nonlocal it
        try:
            return next(it)
        except StopIteration:
            it = iter(loader)
            return next(it)

    torch.manual_seed(0)
    model = bp.Model().to(DEV)
    packed = summary(*train(model, steps, next_packed, packed_step))
    # the padded side: the same sequences, in the set's order
    from prepack import ShardSet
    s = ShardSet(path)
    seqs, n_rows = [], min(len(s), (steps + 2) * rows * 4)
    for i in range(n_rows):
        r = s[i]
        cu = r["cu_seqlens"]
        seqs += [r["input_ids"][cu[j]:cu[j + 1]].astype("int64")
                 for j in range(len(cu) - 1)]
    per_batch = max(1, round(len(seqs) / (n_rows / rows)))
    batches = padded_batches(seqs, per_batch)

    def next_padded():
        nonlocal batches
        try:
            return next(batches)
        except StopIteration:
            batches = padded_batches(seqs, per_batch)
            return next(batches)

    def step_pad(m, b):
        ids, labels, n = b
        return padded_step(m, ids, labels), n

    del model
    torch.manual_seed(0)
    model = bp.Model().to(DEV)
    padded = summary(*train(model, steps, next_padded, step_pad))
    return {"set": path, "rows_per_batch": rows, "sequences_per_padded_batch": per_batch,
            "packed": packed, "padded": padded,
            "speedup": packed["tokens_per_s"] / padded["tokens_per_s"]
            if padded["tokens_per_s"] else 0.0}


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("sets", nargs="+")
    ap.add_argument("--steps", type=int, default=3 if SMALL else 30)
    ap.add_argument("--rows", type=int, default=2 if SMALL else 8)
    ap.add_argument("--out")
    a = ap.parse_args()
    result = {"device": torch.cuda.get_device_name() if DEV == "cuda" else "cpu",
              "torch": torch.__version__, "varlen": bp.varlen_kind(),
              "model": {"d": bp.D, "heads": bp.HEADS, "layers": bp.LAYERS,
                        "ffn": bp.FFN, "vocab": bp.VOCAB, "dtype": str(bp.DT)},
              "results": [bench_set(p, a.steps, a.rows) for p in a.sets]}
    text = json.dumps(result, indent=1)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
