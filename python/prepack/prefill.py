"""Prepacking for batched inference (Zhao et al. 2024): pack a batch's
prompts into rows with the C library's planner (best fit decreasing by
default, as Prepacking's authors), run
one prefill over the rows with a block-diagonal causal mask and restarted
positions, then take each prompt's last-token logits and KV cache back out
and continue decoding as usual. docs/PREFILL.md walks through it.

    from prepack.prefill import pack_prompts
    pp = pack_prompts(prompts)                      # lists of token ids
    logits, kv = model(pp.input_ids, pp.position_ids, pp.attention_mask_4d)
    last = pp.last_token_logits(logits)             # [N, V], input order
    caches = pp.unpack(kv_layer_tensor, dim=2)      # per prompt, input order
    batch, mask = pp.to_left_padded(caches, dim=1)  # for the decode phase
"""

import ctypes

import numpy as np

from . import _native, _optional


_copy = _native.copy_array


def _is_torch(x):
    return hasattr(x, "detach")


class PackedPrompts:
    """A prepacked batch. Arrays are numpy int64 (bool for the mask);
    `to_torch()` converts them. Per-prompt arrays are in input order."""

    def __init__(self, raw):
        R, C, N = raw.rows, raw.capacity, raw.num_prompts
        self.rows, self.capacity, self.num_prompts = R, C, N
        self.input_ids = _copy(raw.input_ids, R * C, np.int64).reshape(R, C)
        self.position_ids = _copy(raw.position_ids, R * C, np.int64).reshape(R, C)
        self.prompt_index = _copy(raw.prompt_index, R * C, np.int64).reshape(R, C)
        self.cu_seqlens = _copy(raw.cu_seqlens, N + 1, np.int32)
        self.row = _copy(raw.prompt_row, N, np.int64)
        self.start = _copy(raw.prompt_start, N, np.int64)
        self.length = _copy(raw.prompt_length, N, np.int64)
        self.last_index = _copy(raw.last_index, N, np.int64)
        self.order = _copy(raw.order, N, np.int64)
        self.max_seqlen = int(self.length.max()) if N else 0
        doc = self.prompt_index
        same = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0)
        self.attention_mask_4d = (same & np.tri(C, dtype=bool))[:, None]

    def to_torch(self):
        torch = _optional.require("torch", "torch", "prefill tensors")
        for name in ("input_ids", "position_ids", "prompt_index", "cu_seqlens",
                     "attention_mask_4d"):
            setattr(self, name, torch.from_numpy(getattr(self, name)))
        return self

    def last_token_logits(self, logits):
        """logits [R, C, V] -> [N, V]: each prompt's last token, input order."""
        flat = logits.reshape(self.rows * self.capacity, logits.shape[-1])
        idx = self.last_index
        if _is_torch(logits):
            torch = _optional.require("torch", "torch", "prefill tensors")
            return flat.index_select(0, torch.as_tensor(idx, device=flat.device))
        return flat[idx]

    def unpack(self, tensor, dim):
        """Splits a per-token tensor with rows first and the C positions at
        `dim` (a KV cache [R, H, C, D]: dim=2) into one tensor per prompt,
        in input order, each with that row's dimension removed and its own
        tokens along dim - 1."""
        out = []
        for i in range(self.num_prompts):
            row = tensor[int(self.row[i])]
            s, n = int(self.start[i]), int(self.length[i])
            if _is_torch(row):
                out.append(row.narrow(dim - 1, s, n))
            else:
                out.append(np.take(row, np.arange(s, s + n), axis=dim - 1))
        return out

    def to_left_padded(self, per_prompt, dim, pad_value=0):
        """Stacks per-prompt tensors (tokens along `dim`) into one batch
        left-padded to the longest, as the decode phase of a padded batch
        expects; returns (batch, mask) with mask [N, longest] 1 on tokens."""
        longest = max(int(t.shape[dim]) for t in per_prompt)
        items, mask = [], np.zeros((len(per_prompt), longest), np.int64)
        for i, t in enumerate(per_prompt):
            n = int(t.shape[dim])
            mask[i, longest - n:] = 1
            shape = list(t.shape)
            shape[dim] = longest - n
            if _is_torch(t):
                torch = _optional.require("torch", "torch", "prefill tensors")
                pad = torch.full(shape, pad_value, dtype=t.dtype, device=t.device)
                items.append(torch.cat([pad, t], dim=dim))
            else:
                items.append(np.concatenate([np.full(shape, pad_value, t.dtype), t],
                                            axis=dim))
        if items and _is_torch(items[0]):
            torch = _optional.require("torch", "torch", "prefill tensors")
            return torch.stack(items), torch.from_numpy(mask)
        return np.stack(items), mask


def pack_prompts(prompts, capacity=None, pad_id=0, algo="bfd"):
    """Packs prompts (sequences of token ids) into rows of `capacity`
    tokens (default: the longest prompt) with best-fit decreasing (or
    algo="ffd" or "nextfit"), through libprepack. Returns a
    PackedPrompts."""
    arrays, ptrs, lengths, n = _native.sequence_args(prompts)
    lib = _native.library()
    if algo not in _native.ALGOS:
        raise ValueError(f"algo must be one of {list(_native.ALGOS)}")
    for name, v in (("capacity", capacity or 0), ("pad_id", pad_id)):
        # uint32 fields: ctypes would keep a wider value's low bits
        if not isinstance(v, (int, np.integer)) or not 0 <= v <= 2**32 - 1:
            raise ValueError(f"{name} must be an integer in 0..{2**32 - 1}, "
                             f"not {v!r}")
    opts = _native.PrefillOptions(capacity or 0,
                                  _native.enum_value("algo", algo), pad_id)
    out = ctypes.POINTER(_native.Prefill)()
    diag = _native.Diag()
    rc = lib.prepack_prefill_create(ctypes.byref(out), ptrs, lengths, n,
                                    ctypes.byref(opts), ctypes.byref(diag))
    if rc != 0:
        raise ValueError(_native.diag_message(diag, rc))
    try:
        return PackedPrompts(out.contents)
    finally:
        lib.prepack_prefill_free(out)
