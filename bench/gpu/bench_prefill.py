#!/usr/bin/env python3
"""Prefill on a GPU: a padded batch vs prepack's rows, on real prompt lengths.

The model is a Llama-shaped decoder with random weights (8 layers, d=2048,
16 heads of 128, SwiGLU 5632, RoPE, RMSNorm, vocabulary 32000; bf16), the
prompts and prepack's rows come from make_inputs.py (run where libprepack
is built). Three ways to prefill each batch and take every prompt's
last-token logits:

  padded   right-padded to the longest prompt, SDPA with is_causal (flash)
  rows     prepack's rows [R, C], SDPA with the block-diagonal causal mask
           built from its per-token prompt index (the Prepacking paper's way)
  varlen   the rows' tokens back to back, flash attention over prepack's
           cu_seqlens (torch.nn.attention.varlen), no padding at all

Reports the median of 7 timed runs after 2 warm-ups (CUDA events), the peak
memory above the weights, and the largest difference of last-token logits
from the padded run. Usage: bench_prefill.py INPUTS.npz [OUT.json]
"""
import inspect
import json
import math
import statistics
import sys

import numpy as np
import torch
import torch.nn.functional as F

import os

# PREPACK_BENCH_SMALL=1: a tiny float32 model on the CPU, to check the
# script (and that all three ways agree) before spending GPU time on it.
SMALL = os.environ.get("PREPACK_BENCH_SMALL") == "1"
D, HEADS, LAYERS, FFN, VOCAB = (64, 4, 2, 128, 32000) if SMALL else (2048, 16, 8, 5632, 32000)
HD = D // HEADS
DEV = "cpu" if SMALL else "cuda"
# PREPACK_BENCH_FP32=1: float32 on the GPU, where the three ways must agree
# to float32 rounding (bf16's own rounding hides less obvious mistakes).
DT = torch.float32 if SMALL or os.environ.get("PREPACK_BENCH_FP32") == "1" else torch.bfloat16


def _rms_norm(x, shape):  # F.rms_norm arrived in torch 2.4
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6)


def _sdpa(q, k, v, attn_mask=None, is_causal=False):  # [B, H, T, HD]
    s = q @ k.transpose(-1, -2) / math.sqrt(q.shape[-1])
    if is_causal:
        t = q.shape[-2]
        attn_mask = torch.ones(t, t, dtype=torch.bool).tril()
    if attn_mask is not None:
        s = s.masked_fill(~attn_mask, float("-inf"))
    return s.softmax(-1) @ v


rms_norm = getattr(F, "rms_norm", _rms_norm)
sdpa = getattr(F, "scaled_dot_product_attention", _sdpa)


class Model(torch.nn.Module):
    def __init__(self):
        super().__init__()
        g = torch.Generator().manual_seed(0)

        def w(*shape):
            return torch.nn.Parameter(
                (torch.randn(*shape, generator=g) / math.sqrt(shape[-1])).to(DT))
        self.embed = w(VOCAB, D)
        self.layers = torch.nn.ModuleList()
        for _ in range(LAYERS):
            layer = torch.nn.Module()
            layer.qkv, layer.o = w(3 * D, D), w(D, D)
            layer.up, layer.gate, layer.down = w(FFN, D), w(FFN, D), w(D, FFN)
            self.layers.append(layer)
        self.head = w(VOCAB, D)
        inv = 1.0 / (10000 ** (torch.arange(0, HD, 2).float() / HD))
        self.register_buffer("inv_freq", inv)

    def rope(self, x, pos):  # x [..., T, H, HD], pos [..., T]
        ang = pos.float()[..., None] * self.inv_freq  # [..., T, HD/2]
        cos, sin = ang.cos()[..., None, :].to(x.dtype), ang.sin()[..., None, :].to(x.dtype)
        a, b = x[..., : HD // 2], x[..., HD // 2:]
        return torch.cat([a * cos - b * sin, a * sin + b * cos], -1)

    def forward(self, ids, pos, attend):
        """ids, pos: [..., T]; attend(q, k, v) -> [..., T, H, HD]."""
        h = F.embedding(ids, self.embed)
        for L in self.layers:
            x = rms_norm(h, (D,))
            q, k, v = (x @ L.qkv.t()).unflatten(-1, (3, HEADS, HD)).unbind(-3)
            a = attend(self.rope(q, pos), self.rope(k, pos), v)
            h = h + a.flatten(-2) @ L.o.t()
            x = rms_norm(h, (D,))
            h = h + (F.silu(x @ L.gate.t()) * (x @ L.up.t())) @ L.down.t()
        return rms_norm(h, (D,))


def sdpa_causal(q, k, v):  # [B, T, H, HD]
    o = sdpa(q.transpose(1, 2), k.transpose(1, 2),
                                       v.transpose(1, 2), is_causal=True)
    return o.transpose(1, 2)


def sdpa_masked(mask):
    def attend(q, k, v):
        o = sdpa(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), attn_mask=mask)
        return o.transpose(1, 2)
    return attend


def varlen(cu, max_len):
    """Flash attention over cu_seqlens, or (no torch.nn.attention.varlen,
    as on the CPU check) the same per sequence."""
    try:
        if DEV != "cuda":  # flash kernels are CUDA's: the loop on the CPU
            raise ImportError
        from torch.nn.attention import varlen as vl
    except ImportError:
        bounds = cu.tolist()

        def loop(q, k, v):  # [T, H, HD]
            parts = [sdpa_causal(q[None, a:b], k[None, a:b], v[None, a:b])[0]
                     for a, b in zip(bounds, bounds[1:])]
            return torch.cat(parts)
        return loop
    params = inspect.signature(vl.varlen_attn).parameters
    causal = {"is_causal": True} if "is_causal" in params else {"window_size": (-1, 0)}

    def attend(q, k, v):  # [T, H, HD]
        return vl.varlen_attn(q.contiguous(), k.contiguous(), v.contiguous(),
                              cu, cu, max_len, max_len, **causal)
    return attend


def varlen_kind():
    try:
        if DEV != "cuda":
            raise ImportError
        from torch.nn.attention import varlen  # noqa: F401
        return "torch.nn.attention.varlen (flash)"
    except ImportError:
        return "per-sequence loop (no torch.nn.attention.varlen)"


def prepare(data, key):
    g = lambda f: data["%s_%s" % (key, f)]
    lengths = torch.tensor(g("lengths"), device=DEV)
    tokens = torch.tensor(g("tokens"), device=DEV)
    n, s = len(lengths), int(lengths.max())
    starts = torch.cumsum(lengths, 0) - lengths
    # padded, on the right: causal attention never sees the padding
    col = torch.arange(s, device=DEV)
    valid = col[None, :] < lengths[:, None]
    pad_ids = torch.zeros(n, s, dtype=torch.long, device=DEV)
    pad_ids[valid] = tokens
    pad_pos = col.expand(n, s)
    # prepack's rows
    ids = torch.tensor(g("ids"), device=DEV)
    pos = torch.tensor(g("pos"), device=DEV)
    doc = torch.tensor(g("doc"), device=DEV)
    c = ids.shape[1]
    causal = torch.ones(c, c, dtype=torch.bool, device=DEV).tril()
    mask = (doc[:, :, None] == doc[:, None, :]) & causal
    mask |= torch.eye(c, dtype=torch.bool, device=DEV)  # pad rows: no NaN
    # varlen: the rows' tokens back to back (placement order)
    keep = doc.flatten() >= 0
    cu = torch.tensor(g("cu"), dtype=torch.int32, device=DEV)
    order = torch.tensor(g("order"), device=DEV)
    return dict(
        n=n, tokens=int(lengths.sum()), padded_slots=n * s, row_slots=ids.numel(),
        padded=(pad_ids, pad_pos, lengths - 1),
        rows=(ids, pos, mask[:, None], torch.tensor(g("last"), device=DEV)),
        varlen=(ids.flatten()[keep], pos.flatten()[keep], cu, int(lengths.max()),
                order))


@torch.no_grad()
def run(model, mode, p):
    if mode == "padded":
        ids, pos, last = p["padded"]
        h = model(ids, pos, sdpa_causal)
        h = h[torch.arange(p["n"], device=DEV), last]
    elif mode == "rows":
        ids, pos, mask, last = p["rows"]
        h = model(ids, pos, sdpa_masked(mask)).flatten(0, 1)[last]
    else:
        ids, pos, cu, m, order = p["varlen"]
        h = model(ids, pos, varlen(cu, m))[cu[1:].long() - 1]
        h = torch.empty_like(h).index_copy_(0, order, h)  # back to input order
    return (h @ model.head.t()).float()


def timed(model, mode, p):
    if SMALL:  # the check: one run, no timing
        return 0.0, 0.0, run(model, mode, p)
    for _ in range(2):
        run(model, mode, p)
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    times = []
    for _ in range(7):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        out = run(model, mode, p)
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b))
    peak = (torch.cuda.max_memory_allocated() - base) / 2**20
    return statistics.median(times), peak, out


def ratio(r, mode):
    """How many times faster than padded (nan when either is missing)."""
    a, b = r.get("padded_ms", float("nan")), r.get(mode + "_ms", float("nan"))
    return a / b if b else float("nan")


def main():
    data = np.load(sys.argv[1])
    out_path = sys.argv[2] if len(sys.argv) > 2 else None
    model = Model().to(DEV).eval()
    device = "cpu (small check)" if SMALL else torch.cuda.get_device_name()
    print("device:", device, "| torch", torch.__version__, "| varlen:", varlen_kind())
    print("%-12s %6s %8s %8s %8s | %9s %9s %9s | %6s %6s | %8s %8s | %9s"
          % ("config", "tokens", "pad_slot", "row_slot", "", "padded_ms", "rows_ms",
             "varlen_ms", "rows_x", "var_x", "pad_MiB", "var_MiB", "max_diff"))
    results = []
    for key in [str(k) for k in data["configs"]]:
        p = prepare(data, key)
        r = {"config": key, "prompts": p["n"], "tokens": p["tokens"],
             "padded_slots": p["padded_slots"], "row_slots": p["row_slots"]}
        outs = {}
        for mode in ("padded", "rows", "varlen"):
            try:
                ms, mib, o = timed(model, mode, p)
                r[mode + "_ms"], r[mode + "_peak_mib"] = ms, mib
                outs[mode] = o
            except Exception as e:  # report, keep going
                r[mode + "_error"] = repr(e)[:200]
                print(key, mode, "failed:", r[mode + "_error"])
        ref = outs.get("padded")
        scale = float(ref.abs().max()) if ref is not None else 1.0
        for mode in ("rows", "varlen"):
            if ref is not None and mode in outs:
                r[mode + "_max_rel_diff"] = float((outs[mode] - ref).abs().max()) / scale
        results.append(r)
        print("%-12s %6d %8d %8d %8s | %9.2f %9.2f %9.2f | %5.2fx %5.2fx | %8.0f %8.0f | %9.2e"
              % (key, r["tokens"], r["padded_slots"], r["row_slots"], "",
                 r.get("padded_ms", float("nan")), r.get("rows_ms", float("nan")),
                 r.get("varlen_ms", float("nan")),
                 ratio(r, "rows"), ratio(r, "varlen"),
                 r.get("padded_peak_mib", float("nan")),
                 r.get("varlen_peak_mib", float("nan")),
                 max(r.get("rows_max_rel_diff", 0), r.get("varlen_max_rel_diff", 0))))
    if out_path:
        with open(out_path, "w") as f:
            json.dump({"device": device, "torch": torch.__version__,
                       "varlen": varlen_kind(), "model": {
                           "d": D, "heads": HEADS, "layers": LAYERS, "ffn": FFN,
                           "vocab": VOCAB, "dtype": str(DT)},
                       "results": results}, f, indent=1)


if __name__ == "__main__":
    main()
