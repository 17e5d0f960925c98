#!/usr/bin/env python3
"""Prefill with a transformers model, the three methods of the Prepacking
paper (Zhao et al. 2024), on real prompt lengths; and lm-eval scoring,
HFLM against prepack's PrepackHFLM.

Methods, on the same prompts (token ids drawn at random, lengths from a
set), for each batch size B:
  full      batches of B prompts in input order, left-padded to the
            longest of the batch (a 2-D attention_mask)
  sorted    every prompt sorted by length first, then batches of B,
            each padded to its longest (length-ordered batching)
  prepack   the same batches as full, each packed into rows as long as
            its longest prompt (prepack.prefill: best-fit decreasing)
  dataset   dataset-level prepacking: every prompt packed once into rows
            as long as the longest of the set, cut into batches of at
            most B x that length token slots (prefill.plan_batches)
Each prefill ends with the last token's logits of every prompt. Reported:
median prefill time per batch and the total over the set (planning,
inputs and prefill); time to first token (TTFT) of a batch, which adds
building the batch to its prefill; the planning and packing alone
(pack_%) and building the forward's other inputs (padding, or the mask:
inputs_%) as shares of prefill; pad slots; peak memory of the method's largest batch (CPU: peak
RSS of a fresh process running that one prefill, minus that of one that
only loads the model and prompts, glibc made to return large blocks at
free; GPU: torch.cuda.max_memory_allocated over the prefill).

    PREPACK_LIBRARY=build/libprepack.so PYTHONPATH=python \\
        .venv/bin/python bench/bench_prefill_hf.py [--runs 3] [--cap 512]
        [--sets sharegpt,openchat,squad,corpus] [--batches 16,32,64]
        [--device cuda --dtype bf16 --attn sdpa|flash_attention_2] [--score]
"""
import argparse
import ctypes
import os
import resource
import subprocess
import statistics
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))
from prepack import prefill  # noqa: E402

sys.path.insert(0, HERE)
from length_sets import SETS as ALL_SETS  # noqa: E402

SETS = {k: ALL_SETS[k] for k in ("sharegpt", "openchat", "squad", "corpus")}


def model_for(args):
    """A Llama-shaped model (random weights): what matters for prefill
    time is its shape, not what it learned."""
    from transformers import LlamaConfig, LlamaForCausalLM
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=32000, hidden_size=args.hidden,
                      intermediate_size=args.hidden * 4, num_hidden_layers=args.layers,
                      num_attention_heads=args.hidden // 64,
                      num_key_value_heads=max(1, args.hidden // 256),
                      max_position_embeddings=max(4096, args.cap))
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16}[args.dtype]
    model = LlamaForCausalLM(cfg).to(dtype).to(args.device).eval()
    model.set_attn_implementation(args.attn)
    return model


def padded_batch(prompts, device):
    width = max(map(len, prompts))
    ids = torch.zeros(len(prompts), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, width - len(p):] = torch.as_tensor(p)
        mask[i, width - len(p):] = 1
    return ids.to(device), mask.to(device)


@torch.no_grad()
def run_padded(model, prompts):
    """(seconds planning, seconds building the inputs, seconds of
    prefill): a padded batch plans nothing."""
    t0 = time.perf_counter()
    ids, mask = padded_batch(prompts, model.device)
    t1 = time.perf_counter()
    model(input_ids=ids, attention_mask=mask, logits_to_keep=1, use_cache=False).logits
    sync(model)
    return 0.0, t1 - t0, time.perf_counter() - t1


@torch.no_grad()
def run_packed(model, prompts):
    """(seconds planning and packing the rows, seconds building the
    forward's inputs, seconds of prefill) of one batch packed on its own."""
    t0 = time.perf_counter()
    batch = prefill.plan_batches(prompts)[0]
    pp = batch.packed.to_torch()
    plan = time.perf_counter() - t0
    build, pre = _packed_forward(model, pp, batch)
    return plan, build, pre


def _packed_forward(model, pp, batch):
    """(seconds building the forward's inputs, seconds of the forward) of
    one PrefillBatch whose PackedPrompts `pp` holds tensors; the output
    layer runs at the prompts' last tokens only (batch_last_logits)."""
    t0 = time.perf_counter()
    kwargs = prefill.forward_inputs(model, batch)
    t1 = time.perf_counter()
    prefill.batch_last_logits(model, batch, inputs=kwargs)
    sync(model)
    return t1 - t0, time.perf_counter() - t1


def sync(model):
    if model.device.type == "cuda":
        torch.cuda.synchronize()


def prompts_for(args, name, b):
    """The set's prompts for batch size b: nbatches x b lengths drawn
    (seeded by set and size) from the set, capped, random ids."""
    rng = np.random.default_rng([7, b, sorted(SETS).index(name)])
    pool = np.clip(SETS[name](), 1, args.cap)
    lengths = rng.choice(pool[pool > 0], b * args.nbatches).tolist()
    return [rng.integers(0, 32000, n).tolist() for n in lengths]


def method_batches(method, prompts, b):
    """(batches of prompts, run function) of a method."""
    if method == "full":
        return [prompts[k:k + b] for k in range(0, len(prompts), b)], run_padded
    if method == "sorted":
        by_len = sorted(prompts, key=len)
        return [by_len[k:k + b] for k in range(0, len(by_len), b)], run_padded
    if method == "prepack":
        return [prompts[k:k + b] for k in range(0, len(prompts), b)], run_packed
    return [prompts], lambda model, batch: run_dataset(model, batch, b)


@torch.no_grad()
def run_dataset(model, prompts, b):
    """Dataset-level: the whole set planned once, then each batch of at
    most b x (the set's longest) slots prefilled; summed over batches."""
    t0 = time.perf_counter()
    batches = prefill.plan_batches(prompts, max_tokens=b * max(map(len, prompts)))
    pp = batches[0].packed.to_torch()
    plan, build, pre = time.perf_counter() - t0, 0.0, 0.0
    for batch in batches:
        a, c = _packed_forward(model, pp, batch)
        build, pre = build + a, pre + c
    return plan, build, pre


def slots_of(method, batches, b):
    if method in ("full", "sorted"):
        return sum(len(x) * max(map(len, x)) for x in batches)
    if method == "prepack":
        return sum(prefill.plan_batches(x)[0].tokens for x in batches)
    return sum(x.tokens for x in prefill.plan_batches(
        batches[0], max_tokens=b * max(map(len, batches[0]))))


def peak_mib(args, model, method, name, b):
    """Peak memory (MiB) a method's largest batch adds. GPU: allocated
    memory over that prefill. CPU: peak RSS of a fresh process running
    that one prefill, against one that only loads the model and prompts
    (a fork would share torch's thread pool, and hang)."""
    if args.device != "cpu":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        run_largest(model, method, prompts_for(args, name, b), b)
        return (torch.cuda.max_memory_allocated() - base) / 2**20

    def child(m):
        cmd = ["/usr/bin/time", "-f", "%M", sys.executable, __file__, "--child", m,
               "--set", name, "--child-batch", str(b)] + args.passthrough
        out = subprocess.run(cmd, capture_output=True, text=True, check=True)
        return int(out.stderr.strip().splitlines()[-1]) / 1024
    return child(method) - child("none")


def child_main(args):
    """--child METHOD: one prefill of the method's largest batch."""
    model = model_for(args)
    prompts = prompts_for(args, args.set, args.child_batch)
    if args.child == "none":
        return
    run_largest(model, args.child, prompts, args.child_batch)


def run_largest(model, method, prompts, b):
    batches, fn = method_batches(method, prompts, b)
    if method == "dataset":
        fn(model, prompts)  # its batches are each at most b x longest slots
    else:
        fn(model, max(batches, key=lambda x: len(x) * max(map(len, x))))


def prefill_table(model, args):
    print(f"prefill: Llama-shaped, {args.layers} layers, hidden {args.hidden}, "
          f"{args.dtype}, {args.attn}, {args.device}; prompt lengths capped at "
          f"{args.cap}; {args.nbatches} batches per set and size; medians of "
          f"{args.runs}; {torch.get_num_threads()} threads")
    print("%-9s %5s %-8s %9s %9s %9s %7s %8s %7s %9s %8s" % (
        "lengths", "batch", "method", "batch_s", "total_s", "ttft_s", "pack_%",
        "inputs_%", "pad_%", "peak_MiB", "speedup"))
    for name in args.sets.split(","):
        for b in [int(x) for x in args.batches.split(",")]:
            prompts = prompts_for(args, name, b)
            real = sum(map(len, prompts))
            run_packed(model, prompts[:b])  # warm up: first calls allocate
            methods = ("full", "sorted", "prepack", "dataset")
            plan, build, pre, total = ({m: [] for m in methods} for _ in range(4))
            for run in range(args.runs):
                # the methods interleaved, each run in another order: a
                # noisy machine slows them alike
                for method in methods[run % 4:] + methods[:run % 4]:
                    batches, fn = method_batches(method, prompts, b)
                    t = 0.0
                    for batch in batches:
                        p, a, c = fn(model, batch)
                        plan[method].append(p)
                        build[method].append(a)
                        pre[method].append(c)
                        t += p + a + c
                    total[method].append(t)
            full = statistics.median(total["full"])
            for method in methods:
                batches, _ = method_batches(method, prompts, b)
                slots = slots_of(method, batches, b)
                # the dataset method's one call runs every batch of its plan
                nb = len(prefill.plan_batches(prompts, max_tokens=b * max(
                    map(len, prompts)))) if method == "dataset" else 1
                P, A, C = plan[method], build[method], pre[method]
                per = statistics.median(C) / nb
                ttft = statistics.median([p + a + c for p, a, c in zip(P, A, C)]) / nb
                tot = statistics.median(total[method])
                print("%-9s %5d %-8s %9.4f %9.3f %9.4f %6.2f%% %7.2f%% %6.1f%% %9.1f %7.2fx" % (
                    name, b, method, per, tot, ttft, 100 * sum(P) / sum(C),
                    100 * sum(A) / sum(C), 100 * (slots - real) / slots,
                    peak_mib(args, model, method, name, b), full / tot))
                sys.stdout.flush()


def score_table(model, args):
    """Multiple-choice requests (a context of SQuAD lengths, four short
    continuations), scored by lm-eval's HFLM and by PrepackHFLM."""
    from lm_eval.api.instance import Instance
    from lm_eval.models.huggingface import HFLM
    from prepack.lmeval import PrepackHFLM

    rng = np.random.default_rng(11)
    ctx = np.clip(SETS["squad"](), 8, args.cap - 16)
    reqs = []
    for q in range(args.questions):
        c = rng.integers(2, 32000, int(rng.choice(ctx))).tolist()
        for k in range(4):
            cont = rng.integers(2, 32000, int(rng.integers(1, 12))).tolist()
            reqs.append(((str(q), str(k)), c, cont))
    for b in [int(x) for x in args.batches.split(",")]:
        times = {}
        for name, cls, kw in (("HFLM", HFLM, {}),
                              ("PrepackHFLM", PrepackHFLM, {"max_tokens": b * args.cap})):
            lm = cls(pretrained=model, tokenizer=args.tokenizer, batch_size=b,
                     max_length=args.cap, **kw)
            runs = []
            for _ in range(args.runs):
                t = time.perf_counter()
                lm._loglikelihood_tokens(reqs, disable_tqdm=True)
                runs.append(time.perf_counter() - t)
            times[name] = statistics.median(runs)
        print("score  batch %3d  %4d requests: HFLM %.3f s (%.1f req/s), PrepackHFLM "
              "%.3f s (%.1f req/s), %.2fx" % (
                  b, len(reqs), times["HFLM"], len(reqs) / times["HFLM"],
                  times["PrepackHFLM"], len(reqs) / times["PrepackHFLM"],
                  times["HFLM"] / times["PrepackHFLM"]))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--cap", type=int, default=512, help="longest prompt (CPU time)")
    ap.add_argument("--sets", default="sharegpt,openchat,squad,corpus")
    ap.add_argument("--batches", default="16,32,64")
    ap.add_argument("--nbatches", type=int, default=2, help="batches per set and size")
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=256)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--attn", default="sdpa",
                    choices=["sdpa", "eager", "flash_attention_2"])
    ap.add_argument("--score", action="store_true", help="also HFLM against PrepackHFLM")
    ap.add_argument("--questions", type=int, default=32)
    ap.add_argument("--tokenizer", default=os.path.join(ROOT, "fixtures", "text", "tokenizer"))
    ap.add_argument("--child", help=argparse.SUPPRESS)
    ap.add_argument("--set", help=argparse.SUPPRESS)
    ap.add_argument("--child-batch", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    # what a memory child needs to rebuild the same model and prompts
    args.passthrough = ["--cap", str(args.cap), "--nbatches", str(args.nbatches),
                        "--layers", str(args.layers), "--hidden", str(args.hidden),
                        "--dtype", args.dtype, "--attn", args.attn]
    if args.device == "cpu":
        # glibc: blocks over 64 KiB mmapped and returned at free, so the
        # peak RSS follows what a prefill holds
        ctypes.CDLL("libc.so.6").mallopt(-3, 65536)
    if args.child:
        return child_main(args)
    model = model_for(args)
    prefill_table(model, args)
    if args.score:
        score_table(model, args)


if __name__ == "__main__":
    main()
