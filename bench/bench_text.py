#!/usr/bin/env python3
"""Text to a shard set: prepack (pack_dataset with a tokenizer, as
python -m prepack pack --tokenizer runs it) against the same tokenizer's
own batch encoding of the same data on every core, and against TRL's
preparation (SFTTrainer._prepare_dataset) plus its pack_dataset (bfd) on
the same data and tokenizer with as many processes as cores. For two
shapes: plain text (language modelling) and conversations with
assistant-only loss; and the bundled real text with GPT-2's tokenizer. One run, medians of RUNS; MB/s of text, tokens/s,
the ratios and the rows; prepack with 1, 2, ... tokenizing processes up
to the cores.

    python bench/bench_text.py [--mb 8] [--chat-mb 2] [--bundled-mb 4.8]
                               [--runs 3] [--seq-len 2048]
                               [--shape text|chat|bundled|all]

Plain text and conversations are generated (a fixed seed) from the words
of the bundled licence text and tokenized with fixtures/text/tokenizer (a
1,000-id BPE with a ChatML template that marks the assistant's turns);
the bundled sections (real documentation text) with the GPT-2 r50k
tiktoken file in fixtures/text. Goals (issue
28): prepack >= 0.8x the batch encoding, >= 3x TRL."""
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


def _words():
    with open(LICENCE, encoding="utf-8") as f:
        return f.read().split()


def make_texts(mb):
    """Documents of 50..900 words (under 2,048 tokens each, so that no
    packer drops or splits one) drawn from the licence's words."""
    words, rng = _words(), random.Random(28)
    records, size = [], 0
    while size < mb * 1e6:
        t = " ".join(rng.choices(words, k=rng.randint(50, 900)))
        records.append({"text": t})
        size += len(t.encode())
    return records, size


def make_chats(mb):
    """Conversations of 1..3 user/assistant exchanges of 10..150 words
    each, half with a system message."""
    words, rng = _words(), random.Random(29)
    records, size = [], 0
    while size < mb * 1e6:
        m = [{"role": "system", "content": "You answer questions."}] \
            if rng.random() < 0.5 else []
        for _ in range(rng.randint(1, 3)):
            for role in ("user", "assistant"):
                c = " ".join(rng.choices(words, k=rng.randint(10, 150)))
                m.append({"role": role, "content": c})
                size += len(c.encode())
        records.append({"messages": m})
    return records, size


def make_bundled(mb, tmp):
    """The bundled sections' text (fixtures/text: 300 sections of the
    Python documentation, 0.6 MB), repeated to mb, and the GPT-2 r50k
    tiktoken file it was tokenized with, decompressed into tmp."""
    import zstandard
    here = os.path.join(ROOT, "fixtures", "text")
    with open(os.path.join(here, "python-docs-sections.jsonl.zst"),
              "rb") as f:
        lines = zstandard.ZstdDecompressor().stream_reader(f).read()
    texts = [json.loads(x)["text"] for x in lines.decode().splitlines()]
    records, size = [], 0
    while size < mb * 1e6:
        for t in texts:
            records.append({"text": t})
            size += len(t.encode())
    ranks = os.path.join(tmp, "r50k_base.tiktoken")
    with open(os.path.join(here, "r50k_base.tiktoken.zst"), "rb") as f, \
            open(ranks, "wb") as out:
        out.write(zstandard.ZstdDecompressor().stream_reader(f).read())
    return records, size, ranks


def batch_encoding(tok, records, chat):
    """The tokenizer's own batch call on every core: its __call__ on the
    list of texts (EOS appended as TRL does), or apply_chat_template on
    the list of conversations with the assistant mask."""
    t = time.perf_counter()
    if chat:
        out = tok.apply_chat_template([r["messages"] for r in records],
                                      tokenize=True, return_dict=True,
                                      return_assistant_tokens_mask=True)
    else:
        out = tok(text=[r["text"] + tok.eos_token for r in records])
    n = sum(len(ids) for ids in out["input_ids"])
    return time.perf_counter() - t, n


def rust_encoding(tok, records):
    """The Rust tokenizer's batch call without offsets (what prepack calls
    for plain text): the fastest this tokenizer encodes a list."""
    t = time.perf_counter()
    enc = tok.backend_tokenizer.encode_batch_fast(
        [r["text"] + tok.eos_token for r in records])
    n = sum(len(e.ids) for e in enc)
    return time.perf_counter() - t, n


def prepack_run(path, out, seq_len, chat, workers, tokenizer):
    """pack_dataset from the JSON lines file with a loaded tokenizer (its
    loading is timed apart: a tiktoken file's takes seconds)."""
    t = time.perf_counter()
    stats = pack_dataset([path], out, seq_len, tokenizer=tokenizer,
                         overwrite=True, overlong="split",
                         assistant_only_loss=chat, workers=workers)
    return time.perf_counter() - t, stats["rows"]


def trl_run(tok, records, seq_len, procs, tmp, chat):
    import datasets
    from trl.data_utils import pack_dataset as trl_pack
    from trl.trainer import sft_trainer
    args = sft_trainer.SFTConfig(output_dir=os.path.join(tmp, "trl"),
                                 dataset_num_proc=procs, max_length=seq_len,
                                 assistant_only_loss=chat,
                                 report_to=[], bf16=False, use_cpu=True)
    trainer = types.SimpleNamespace(_tokenizer=tok, chat_template=None,
                                    completion_only_loss=None)
    ds = datasets.Dataset.from_list(records)
    t = time.perf_counter()
    # packing=False: the preparation alone (TRL packs in SFTTrainer's
    # __init__ after it, as below), no truncation (max_length None)
    args.max_length = None
    ds = sft_trainer.SFTTrainer._prepare_dataset(
        trainer, ds, tok, args, packing=False, formatting_func=None,
        dataset_name="bench")
    ds = ds.select_columns([c for c in ds.column_names
                            if c not in ("text", "messages")])
    packed = trl_pack(ds, seq_len, "bfd", {"num_proc": procs})
    t = time.perf_counter() - t
    kept = sum(packed.with_format("arrow")["seq_lengths"].combine_chunks()
               .flatten().to_numpy()) if "seq_lengths" in \
        packed.column_names else None
    return t, (len(packed), kept)


def bench_shape(a, tmp, shape, cores):
    chat = shape == "chat"
    tokenizer = TOKENIZER
    if shape == "bundled":
        records, size, tokenizer = make_bundled(a.bundled_mb, tmp)
    else:
        records, size = (make_chats if chat else make_texts)(
            a.chat_mb if chat else a.mb)
    t = time.perf_counter()
    tok = ptext.load_tokenizer(tokenizer)
    load = time.perf_counter() - t
    path = os.path.join(tmp, "chat.jsonl" if chat else "text.jsonl")
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
    counts = sorted({1, 2, cores} if cores > 1 else {1})
    times = {k: [] for k in ["batch", "rust", "trl"] + counts}
    for _ in range(a.runs):
        t, tokens = batch_encoding(tok, records, chat)
        times["batch"].append(t)
        if not chat:
            times["rust"].append(rust_encoding(tok, records)[0])
        for w in counts:
            t, rows = prepack_run(path, os.path.join(tmp, "set"),
                                  a.seq_len, chat, w, tok)
            times[w].append(t)
        if not a.no_trl:
            t, trl_rows = trl_run(tok, records, a.seq_len, cores, tmp, chat)
            times["trl"].append(t)
    med = {k: statistics.median(v) for k, v in times.items() if v}
    shape = {"chat": "conversations, assistant-only loss",
             "text": "plain text",
             "bundled": "the bundled sections' text, GPT-2 r50k "
                        "(tiktoken file)"}[shape]
    print(f"\n{shape}: {len(records):,} records, {size / 1e6:.1f} MB of "
          f"text, {tokens:,} tokens, L {a.seq_len}, {cores} cores, "
          f"medians of {a.runs}")
    names = [("batch", "the tokenizer's batch call"),
             ("rust", "its Rust batch call, no offsets")] + \
        [(w, f"prepack, {w} process{'es' if w > 1 else ''}")
         for w in counts] + [("trl", f"TRL prep + pack, {cores} procs")]
    for key, name in names:
        if key in med:
            t = med[key]
            print(f"  {name:<34} {t:7.3f} s  {size / t / 1e6:6.2f} MB/s  "
                  f"{tokens / t / 1e6:6.2f} M tokens/s")
    best = med[counts[-1]]
    print(f"  prepack / batch call speed: {med['batch'] / best:.2f}x "
          f"(goal >= 0.8)")
    if "rust" in med:
        print(f"  prepack / Rust batch call speed: {med['rust'] / best:.2f}x")
    print(f"  prepack rows {rows:,} holding every token, lower bound "
          f"{-(-tokens // a.seq_len):,}; loading the tokenizer "
          f"{load:.2f} s (once a run, not in the times above)")
    if "trl" in med:
        trl_rows, kept = trl_rows
        held = f" holding {kept:,} tokens (its bfd truncates sequences " \
            f"past L)" if kept is not None and kept < tokens else ""
        print(f"  prepack / TRL speed: {med['trl'] / best:.2f}x (goal >= 3); "
              f"TRL rows {trl_rows:,}{held}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--mb", type=float, default=8,
                    help="MB of plain text (default 8)")
    ap.add_argument("--chat-mb", type=float, default=2,
                    help="MB of conversations' text (default 2)")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--bundled-mb", type=float, default=4.8,
                    help="MB of the bundled sections' text, repeated "
                         "(default 4.8: 8 times)")
    ap.add_argument("--shape", choices=("text", "chat", "bundled", "all"),
                    default="all")
    ap.add_argument("--no-trl", action="store_true")
    a = ap.parse_args()
    import datasets
    datasets.disable_progress_bars()
    cores = len(os.sched_getaffinity(0))
    tmp = tempfile.mkdtemp(prefix="bench-text-")
    try:
        for shape in ("text", "chat", "bundled"):
            if a.shape in ("all", shape):
                bench_shape(a, tmp, shape, cores)
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
