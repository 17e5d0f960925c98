"""flash-attn's two entry points written in torch, for the CPU: the same
arguments and semantics (causal masks aligned bottom-right as flash-attn
>= 2.1 aligns them, window_size (left, right), grouped key/value heads),
one segment at a time, so that transformers' flash_attention_2 path
(modeling_flash_attention_utils._flash_attention_forward, which picks
flash_attn_varlen_func for cu_seq_lens kwargs and for 2-D masks) runs
here as it runs on a GPU. `use_reference_flash(monkeypatch)` installs
them under the name flash_attention_2."""
import math

import torch


def _attend(q, k, v, scale, causal, window):
    """q [Sq, H, D], k/v [Sk, Hk, D] -> [Sq, H, D]."""
    sq, sk = q.shape[0], k.shape[0]
    rep = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(rep, 1), v.repeat_interleave(rep, 1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale
    i = torch.arange(sq)[:, None] + (sk - sq)  # bottom-right alignment
    j = torch.arange(sk)[None, :]
    keep = torch.ones(sq, sk, dtype=torch.bool)
    if causal:
        keep &= j <= i
    left, right = window
    if left >= 0:
        keep &= j >= i - left
    if right >= 0:
        keep &= j <= i + right
    scores = scores.masked_fill(~keep, float("-inf"))
    return torch.einsum("hqk,khd->qhd", torch.softmax(scores, -1), v.float()).to(q.dtype)


def flash_attn_func(q, k, v, dropout_p=0.0, softmax_scale=None, causal=False,
                    window_size=(-1, -1)):
    scale = softmax_scale or 1 / math.sqrt(q.shape[-1])
    return torch.stack([_attend(q[b], k[b], v[b], scale, causal, window_size)
                        for b in range(q.shape[0])])


def flash_attn_varlen_func(q, k, v, cu_seqlens_q, cu_seqlens_k, max_seqlen_q,
                           max_seqlen_k, dropout_p=0.0, softmax_scale=None,
                           causal=False, window_size=(-1, -1)):
    scale = softmax_scale or 1 / math.sqrt(q.shape[-1])
    out = torch.empty_like(q)
    cq, ck = cu_seqlens_q.tolist(), cu_seqlens_k.tolist()
    assert cq[0] == 0 and cq[-1] == q.shape[0] and ck[-1] == k.shape[0]
    assert max(b - a for a, b in zip(cq, cq[1:])) <= int(max_seqlen_q)
    for s in range(len(cq) - 1):
        out[cq[s]:cq[s + 1]] = _attend(q[cq[s]:cq[s + 1]], k[ck[s]:ck[s + 1]],
                                       v[ck[s]:ck[s + 1]], scale, causal, window_size)
    return out


def use_reference_flash(monkeypatch):
    """transformers' flash path loads these functions from now on (the
    monkeypatch undoes it)."""
    import transformers.modeling_flash_attention_utils as fa

    def lazy_imports(implementation, *args, **kwargs):
        return (flash_attn_func, flash_attn_varlen_func, None, fa._pad_input,
                fa._unpad_input)
    monkeypatch.setattr(fa, "_lazy_imports", lazy_imports)
    monkeypatch.setattr(fa, "_loaded_implementation", None)
