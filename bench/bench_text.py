#!/usr/bin/env python3
"""Text to a shard set: prepack (python -m prepack's pack_dataset with a
tokenizer) against the same tokenizer's own batch encoding of the same
texts (a fast tokenizer encodes a list on every core), and against TRL's
preparation (SFTTrainer._prepare_dataset) plus its pack_dataset (bfd) on
the same data and tokenizer, with as many processes as cores. One run,
medians of RUNS; MB/s of text, tokens/s, both ratios and the rows.

    python bench/bench_text.py [--mb 8] [--runs 3] [--seq-len 2048]

The text is generated (a fixed seed) from the words of the bundled
licence text, the tokenizer fixtures/text/tokenizer (a 1,000-id BPE).
Goals (issue 28): prepack >= 0.8x the batch encoding, >= 3x TRL."""
import argparse
import json
import os
import random
import shutil
import statistics
import sys
import tempfile
import time
import types

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "python"))

from prepack import text as ptext  # noqa: E402
from prepack.dataset import pack_dataset  # noqa: E402

TOKENIZER = os.path.join(ROOT, "fixtures", "text", "tokenizer")
LICENCE = os.path.join(ROOT, "fixtures", "corpus", "LICENSE-python-docs.txt")


def make_texts(mb):
    """Documents of 50..900 words (under 2,048 tokens each, so that no
    packer drops or splits one) drawn from the licence's words."""
    with open(LICENCE, encoding="utf-8") as f:
        words = f.read().split()
    rng = random.Random(28)
    texts, size = [], 0
    while size < mb * 1e6:
        t = " ".join(rng.choices(words, k=rng.randint(50, 900)))
        texts.append(t)
        size += len(t.encode())
    return texts, size


def batch_encoding(tok, texts):
    t = time.perf_counter()
    n = sum(len(ids) for ids in tok(text=[x + tok.eos_token for x in texts])
            ["input_ids"])
    return time.perf_counter() - t, n


def prepack_run(path, out, seq_len):
    t = time.perf_counter()
    stats = pack_dataset([path], out, seq_len, tokenizer=TOKENIZER,
                         overwrite=True, overlong="split")
    return time.perf_counter() - t, stats["rows"]


def trl_run(tok, texts, seq_len, procs, tmp):
    import datasets
    from trl.data_utils import pack_dataset as trl_pack
    from trl.trainer import sft_trainer
    args = sft_trainer.SFTConfig(output_dir=os.path.join(tmp, "trl"),
                                 dataset_num_proc=procs, max_length=seq_len,
                                 report_to=[], bf16=False, use_cpu=True)
    trainer = types.SimpleNamespace(_tokenizer=tok, chat_template=None,
                                    completion_only_loss=None)
    ds = datasets.Dataset.from_dict({"text": texts})
    t = time.perf_counter()
    # packing=False: the preparation alone (TRL packs in SFTTrainer's
    # __init__ after it, as below), no truncation (max_length None)
    args.max_length = None
    ds = sft_trainer.SFTTrainer._prepare_dataset(
        trainer, ds, tok, args, packing=False, formatting_func=None,
        dataset_name="bench")
    ds = ds.select_columns([c for c in ds.column_names if c != "text"])
    packed = trl_pack(ds, seq_len, "bfd", {"num_proc": procs})
    rows = len(packed)
    return time.perf_counter() - t, rows


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--no-trl", action="store_true")
    a = ap.parse_args()
    import datasets
    datasets.disable_progress_bars()
    cores = len(os.sched_getaffinity(0))
    texts, size = make_texts(a.mb)
    tok = ptext.load_tokenizer(TOKENIZER)
    tmp = tempfile.mkdtemp(prefix="bench-text-")
    try:
        path = os.path.join(tmp, "text.jsonl")
        with open(path, "w", encoding="utf-8") as f:
            for t in texts:
                f.write(json.dumps({"text": t}) + "\n")
        enc, ours, trl = [], [], []
        for _ in range(a.runs):
            t, tokens = batch_encoding(tok, texts)
            enc.append(t)
            t, rows = prepack_run(path, os.path.join(tmp, "set"), a.seq_len)
            ours.append(t)
            if not a.no_trl:
                t, trl_rows = trl_run(tok, texts, a.seq_len, cores, tmp)
                trl.append(t)
        enc, ours = statistics.median(enc), statistics.median(ours)
        print(f"{len(texts):,} documents, {size / 1e6:.1f} MB of text, "
              f"{tokens:,} tokens, L {a.seq_len}, {cores} cores, medians "
              f"of {a.runs}")
        for name, t in (("batch encoding", enc), ("prepack", ours)):
            print(f"{name:<15} {t:7.3f} s  {size / t / 1e6:6.2f} MB/s  "
                  f"{tokens / t / 1e6:6.2f} M tokens/s")
        print(f"prepack / batch encoding speed: {enc / ours:.2f}x "
              f"(goal >= 0.8); prepack rows {rows:,}")
        if trl:
            trl = statistics.median(trl)
            print(f"{'TRL prep+pack':<15} {trl:7.3f} s  "
                  f"{size / trl / 1e6:6.2f} MB/s  "
                  f"{tokens / trl / 1e6:6.2f} M tokens/s  rows {trl_rows:,}")
            print(f"prepack / TRL speed: {trl / ours:.2f}x (goal >= 3)")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
