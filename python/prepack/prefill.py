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
        self._mask = None  # [R, 1, C, C] bools: made on first use

    @property
    def attention_mask_4d(self):
        """bool [R, 1, C, C]: same prompt and causal (R*C*C bytes, so made
        only when asked for)."""
        if self._mask is None:
            doc = np.asarray(self.prompt_index)
            same = (doc[:, :, None] == doc[:, None, :]) & (doc[:, :, None] >= 0)
            mask = (same & np.tri(self.capacity, dtype=bool))[:, None]
            if _is_torch(self.prompt_index):
                torch = _optional.require("torch", "torch", "prefill tensors")
                mask = torch.from_numpy(mask)
            self._mask = mask
        return self._mask

    def to_torch(self):
        torch = _optional.require("torch", "torch", "prefill tensors")
        for name in ("input_ids", "position_ids", "prompt_index", "cu_seqlens"):
            setattr(self, name, torch.from_numpy(getattr(self, name)))
        if self._mask is not None:
            self._mask = torch.from_numpy(self._mask)
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


# --- Hugging Face models: packed prefill, then generate or score ---------
#
# What a transformers causal LM needs to prefill packed rows exactly:
# position_ids restarting at every prompt (rotary and absolute positions
# alike), and a mask that keeps prompts apart in the form its attention
# implementation reads: sdpa a boolean 4-D mask, eager an additive float
# one (eager adds the mask to the scores, so a boolean one leaks), flex a
# BlockMask. transformers passes a 4-D mask through untouched
# (masking_utils._preprocess_mask_arguments).

_MASK_FORMS = ("sdpa", "eager", "flex_attention", "flash_attention_2",
               "flash_attention_3")
_VARLEN_FORMS = ("flash_attention_2", "flash_attention_3")


class PrefillError(ValueError):
    """A prompt, request, model or option prepacked prefill cannot run
    exactly; the message names which and why."""


def _attn_implementation(model):
    impl = getattr(model.config, "_attn_implementation", None) or "eager"
    if impl not in _MASK_FORMS:
        raise PrefillError(
            f"prepack.prefill: {type(model).__name__} runs attention "
            f"'{impl}'; packed prefill supports {', '.join(_MASK_FORMS)} "
            f"(load the model with attn_implementation='sdpa')")
    return impl


def _sliding(config):
    """(window, layer types) when some layers attend only to the last
    `window` tokens, else (None, None)."""
    window = getattr(config, "sliding_window", None)
    if not window:
        return None, None
    types = getattr(config, "layer_types", None)
    if types is not None and "sliding_attention" not in types:
        return None, None
    return int(window), types


def _row_mask(doc, window=None):
    """bool [B, 1, C, C] from the rows' prompt index [B, C] (-1 padding):
    same prompt, causal, within the window. Padding positions share the
    index -1, so each sees itself and the padding before it: no query row
    is all masked (sdpa gives NaN for one), and no prompt sees padding."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    C = doc.shape[1]
    pos = torch.arange(C, device=doc.device)
    allowed = pos[:, None] >= pos[None, :]
    if window is not None:
        allowed &= (pos[:, None] - pos[None, :]) < window
    return ((doc[:, :, None] == doc[:, None, :]) & allowed)[:, None]


def _mask_for(model, doc):
    """The attention_mask argument for a packed forward of rows whose
    prompt index is `doc` [B, C], in the model's form."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    impl = _attn_implementation(model)
    window, types = _sliding(model.config)
    longest = int(torch.bincount(doc[doc >= 0]).max()) if (doc >= 0).any() else 0
    if window is not None and longest <= window:
        window = None  # no prompt reaches past the window: nothing to cut
    masks = {"full_attention": _row_mask(doc)}
    if window is not None:
        masks["sliding_attention"] = _row_mask(doc, window)
    if impl == "eager":
        dtype = model.dtype
        masks = {k: torch.zeros(m.shape, dtype=dtype, device=m.device)
                 .masked_fill(~m, torch.finfo(dtype).min) for k, m in masks.items()}
    elif impl == "flex_attention":
        masks = {k: _block_mask(m) for k, m in masks.items()}
    if window is None:
        return masks["full_attention"]
    if types is None:  # one sliding mask for every layer (Mistral)
        return masks["sliding_attention"]
    return masks  # per layer type (Qwen2, Gemma): the model picks


def _block_mask(mask):
    """A flex-attention BlockMask equal to a boolean [B, 1, C, C] mask."""
    create_block_mask = _optional.require(
        "torch.nn.attention.flex_attention", "torch", "flex_attention masks").create_block_mask
    dense = mask[:, 0]
    B, C = dense.shape[0], dense.shape[-1]

    def mask_mod(b, h, q, kv):
        return dense[b, q, kv]
    return create_block_mask(mask_mod, B, None, C, C, device=str(mask.device),
                             _compile=False)


def _varlen_bounds(doc):
    """flash-attention's varlen arguments for rows whose prompt index is
    `doc` [B, C] (-1 padding), the rows read as one stream: a segment
    starts wherever the prompt index changes, so each prompt, and each
    row's tail of padding, is a segment of its own (a prompt never spans
    rows, and a row starts with a prompt, so every row start is a cut)."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    flat = doc.reshape(-1)
    n = flat.numel()
    at = torch.arange(1, n, device=doc.device)
    cut = at[flat[1:] != flat[:-1]]
    zero, end = at.new_zeros(1), at.new_full((1,), n)
    cu = torch.cat([zero, cut, end]).to(torch.int32)
    longest = int(cu.diff().max())
    return {"cu_seq_lens_q": cu, "cu_seq_lens_k": cu,
            "max_length_q": longest, "max_length_k": longest}


def forward_inputs(model, batch):
    """The keyword arguments of one packed forward of `batch` (a
    PrefillBatch of plan_batches, its PackedPrompts holding torch
    tensors) for `model`, on the model's device: `input_ids` and
    `position_ids` of the batch's rows, and the boundaries in the form
    the model's attention implementation reads: `attention_mask` (sdpa a
    boolean [B, 1, C, C] mask, eager an additive float one, flex a
    BlockMask; per layer type where some layers slide), or for flash
    attention no mask but `cu_seq_lens_q/k` and `max_length_q/k` over
    the rows read as one stream (flash-attn's varlen form). Where every
    row holds one prompt there is no mask: the model's causal one is
    exact."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    pp, dev = batch.packed, model.device
    if not _is_torch(pp.input_ids):
        pp.to_torch()
    rows = torch.as_tensor([int(r) for r in batch.rows], dtype=torch.long)
    doc = pp.prompt_index[rows].to(dev)
    kwargs = {"input_ids": pp.input_ids[rows].to(dev),
              "position_ids": pp.position_ids[rows].to(dev)}
    if _attn_implementation(model) in _VARLEN_FORMS:
        kwargs.update(_varlen_bounds(doc))
    elif _two_prompts_in_a_row(doc):
        kwargs["attention_mask"] = _mask_for(model, doc)
    # else each row is one prompt then padding: the model's own causal
    # mask (its fast path) is exact for every prompt token, and padding
    # comes after them
    return kwargs


def _two_prompts_in_a_row(doc):
    """Whether a row of the prompt index [B, C] holds a second prompt: the
    index changes to a prompt's (not to padding's -1) past position 0."""
    return bool(((doc[:, 1:] != doc[:, :-1]) & (doc[:, 1:] >= 0)).any())


def _forward(model, pp, rows, use_cache):
    """One packed forward over `rows` of a PackedPrompts (torch tensors):
    returns (logits [B, C, V], cache or None)."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    DynamicCache = _optional.require("transformers", "hf", "prepack.prefill").DynamicCache
    kwargs = forward_inputs(model, PrefillBatch(pp, rows, [], []))
    kwargs["use_cache"] = use_cache
    if use_cache:
        # a plain DynamicCache keeps every position: one made from the
        # config would cut sliding-window layers to the packed rows' tail
        kwargs["cache"] = DynamicCache()
    with torch.no_grad():
        out = model(**kwargs)
    return out.logits, (kwargs.get("cache") if use_cache else None)


def _check_prompts(model, prompts, what, extra=0):
    """Refuses empty prompts, ids outside the model's embedding and
    prompts past its position limit, naming the first."""
    vocab = model.get_input_embeddings().num_embeddings
    limit = getattr(model.config, "max_position_embeddings", None) or \
        getattr(model.config, "n_positions", None)
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise PrefillError(f"prepack.prefill: {what} {i} is empty")
        lo, hi = min(p), max(p)
        if lo < 0 or hi >= vocab:
            bad = lo if lo < 0 else hi
            raise PrefillError(
                f"prepack.prefill: {what} {i} holds token id {bad}, outside "
                f"{type(model).__name__}'s vocabulary of {vocab} (is the "
                f"tokenizer the model's?)")
        if limit and len(p) + extra > limit:
            raise PrefillError(
                f"prepack.prefill: {what} {i} has {len(p)} tokens"
                + (f" + {extra} to generate" if extra else "")
                + f", past {type(model).__name__}'s position limit of {limit}")


def _check_tokenizer(model, tokenizer):
    vocab = model.get_input_embeddings().num_embeddings
    if tokenizer is not None and len(tokenizer) > vocab:
        raise PrefillError(
            f"prepack.prefill: the tokenizer has {len(tokenizer)} tokens but "
            f"{type(model).__name__} embeds {vocab}: not the model's tokenizer")


def _probe_isolation(model):
    """Runs two short prompts packed in one row and each alone, through
    the same mask form as the real prefill; a model whose attention drops
    the mask or ignores position_ids fails here, by class name."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    vocab = model.get_input_embeddings().num_embeddings
    gen = torch.Generator().manual_seed(0)
    probe = [torch.randint(0, vocab, (n,), generator=gen).tolist() for n in (6, 4)]
    pp = pack_prompts(probe, capacity=10).to_torch()
    logits, _ = _forward(model, pp, range(pp.rows), use_cache=False)
    packed = pp.unpack(logits, dim=1)
    worst, scale = 0.0, 0.0
    with torch.no_grad():
        for i, p in enumerate(probe):
            alone = model(input_ids=torch.tensor([p], device=model.device),
                          use_cache=False).logits[0]
            worst = max(worst, float((packed[i].float() - alone.float()).abs().max()))
            scale = max(scale, float(alone.float().abs().max()))
    rtol = 1e-4 if model.dtype == torch.float32 else 2e-2
    if worst > rtol * max(scale, 1e-30):
        raise PrefillError(
            f"prepack.prefill: {type(model).__name__} does not keep packed "
            f"prompts apart (largest difference {worst:.3g} against "
            f"{scale:.3g}): its attention ignores the mask or position_ids, "
            f"so packed prefill would be silently wrong")


class PrefillBatch:
    """One packed forward of a plan: `rows` of `packed` (a PackedPrompts
    shared by the plan's batches), holding the prompts `indices` (their
    positions in the caller's list) that are the packed prompts `local`."""

    def __init__(self, packed, rows, local, indices):
        self.packed, self.rows = packed, list(rows)
        self.local, self.indices = list(local), list(indices)

    @property
    def tokens(self):
        """Token slots this batch's forward computes: rows x capacity."""
        return len(self.rows) * self.packed.capacity


def plan_batches(prompts, max_tokens=None, overlong="error", algo="bfd"):
    """Dataset-level prepacking: packs every prompt (lists of token ids)
    once into rows as long as the longest, then cuts the rows into batches
    of at most `max_tokens` token slots (rows x capacity: what bounds a
    forward's memory; default: one batch). Returns PrefillBatch objects;
    each prompt is in exactly one. Empty prompts are in none. A prompt
    longer than max_tokens is an error, or with overlong="alone" a batch
    of its own."""
    if overlong not in ("error", "alone"):
        raise ValueError(f"overlong must be 'error' or 'alone', not {overlong!r}")
    if max_tokens is not None and (isinstance(max_tokens, bool) or
                                   not isinstance(max_tokens, int) or max_tokens < 1):
        raise ValueError(f"max_tokens must be a positive integer, not {max_tokens!r}")
    lengths = [len(p) for p in prompts]
    alone = [i for i, n in enumerate(lengths) if max_tokens and n > max_tokens]
    if alone and overlong == "error":
        i = alone[0]
        raise PrefillError(
            f"prepack.prefill: prompt {i} has {lengths[i]} tokens, more than "
            f"max_tokens={max_tokens} (raise max_tokens, or overlong='alone' "
            f"to prefill it by itself)")
    lone = set(alone)
    rest = [i for i, n in enumerate(lengths) if i not in lone and n > 0]
    batches = []
    if rest:
        pp = pack_prompts([prompts[i] for i in rest], algo=algo)
        per_batch = max(1, max_tokens // pp.capacity) if max_tokens else pp.rows
        by_row = [[] for _ in range(pp.rows)]
        for j in range(pp.num_prompts):
            by_row[int(pp.row[j])].append(j)
        for r0 in range(0, pp.rows, per_batch):
            rows = range(r0, min(r0 + per_batch, pp.rows))
            local = [j for r in rows for j in by_row[r]]
            batches.append(PrefillBatch(pp, rows, local, [rest[j] for j in local]))
    for i in alone:
        pp = pack_prompts([prompts[i]], algo=algo)
        batches.append(PrefillBatch(pp, range(1), [0], [i]))
    return batches


def _decode_cache(model):
    """An empty cache of the kind generate fills for this model; refuses
    one whose layers are not plain key/value tensors (linear attention,
    static caches), which packed prefill cannot fill."""
    DynamicCache = _optional.require("transformers", "hf", "prepack.prefill").DynamicCache
    caches = _optional.require("transformers.cache_utils", "hf", "prepack.prefill")
    DynamicLayer, DynamicSlidingWindowLayer = caches.DynamicLayer, caches.DynamicSlidingWindowLayer
    impl = getattr(model.generation_config, "cache_implementation", None)
    if impl not in (None, "dynamic"):
        raise PrefillError(
            f"prepack.prefill: {type(model).__name__}'s generation config asks "
            f"for a '{impl}' cache; packed prefill fills a DynamicCache only "
            f"(set model.generation_config.cache_implementation = None)")
    cache = DynamicCache(config=model.config)
    for layer in cache.layers:
        if type(layer) not in (DynamicLayer, DynamicSlidingWindowLayer):
            raise PrefillError(
                f"prepack.prefill: {type(model).__name__}'s cache has "
                f"{type(layer).__name__} layers, which packed prefill cannot "
                f"fill (only DynamicLayer and DynamicSlidingWindowLayer)")
    return cache


def _left_padded_cache(model, packed_cache, batch, members):
    """The packed rows' keys and values moved into a DynamicCache of one
    row per member prompt, left-padded to the longest head, as generate
    lays out a left-padded batch. members: (local index or None, head)."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    cache = _decode_cache(model)
    width = max(len(h) for _, h in members)
    pp, r0 = batch.packed, batch.rows[0]
    for li, layer in enumerate(packed_cache.layers):
        K, V = layer.keys, layer.values          # [B, H, C, D]
        shape = (len(members), K.shape[1], width, K.shape[3])
        k = torch.zeros(shape, dtype=K.dtype, device=K.device)
        v = torch.zeros(shape, dtype=V.dtype, device=V.device)
        for m, (j, head) in enumerate(members):
            if j is None:
                continue
            r, s, n = int(pp.row[j]) - r0, int(pp.start[j]), int(pp.length[j])
            k[m, :, width - n:] = K[r, :, s:s + n]
            v[m, :, width - n:] = V[r, :, s:s + n]
        cache.update(k, v, li)
    return cache


def _tokenized(prompts, tokenizer, what):
    """Token id lists from ids, or from texts through `tokenizer`."""
    prompts = list(prompts)
    texts = [isinstance(p, str) for p in prompts]
    if any(texts):
        if tokenizer is None:
            raise PrefillError(f"prepack.prefill: {what} {texts.index(True)} "
                               f"is text: pass tokenizer= to encode it")
        if not all(texts):
            raise PrefillError(f"prepack.prefill: {what}s mix text and token ids "
                               f"({what} {texts.index(False)} is not text)")
        return [list(ids) for ids in tokenizer(prompts)["input_ids"]]
    return [[int(t) for t in p] for p in prompts]


def _trim_at_eos(tokens, eos):
    for k, t in enumerate(tokens):
        if t in eos:
            return tokens[:k + 1]
    return tokens


def last_logits(model, prompts, tokenizer=None, max_tokens=None,
                overlong="error", check=True):
    """Each prompt's next-token logits, [N, vocab] in input order, from
    one prepacked forward per batch (plan_batches: at most `max_tokens`
    token slots a forward): what classification, reranking and the
    first token of generation need."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    ids = _tokenized(prompts, tokenizer, "prompt")
    _check_tokenizer(model, tokenizer)
    _check_prompts(model, ids, "prompt")
    if check:
        _probe_isolation(model)
    out = None
    for batch in plan_batches(ids, max_tokens, overlong):
        logits = batch_last_logits(model, batch)
        if out is None:
            out = logits.new_empty((len(ids), logits.shape[-1]))
        out[torch.tensor(batch.indices, device=logits.device)] = logits
    return out


def batch_last_logits(model, batch, inputs=None):
    """The next-token logits of one PrefillBatch's prompts, [prompts,
    vocab] in the order of batch.indices, from one packed forward whose
    output layer runs at those positions only: a hook gathers them from
    the rows' hidden states before it, so no logits are computed for
    the positions between (a per-row logits_to_keep would compute every
    row at every prompt's end). `inputs`: forward_inputs(model, batch),
    when the caller built them already."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    head = model.get_output_embeddings()
    if head is None:
        raise PrefillError(f"prepack.prefill: {type(model).__name__} has no "
                           f"output embeddings to take logits from")
    pp, r0, dev = batch.packed, batch.rows[0], model.device
    if inputs is None:
        inputs = forward_inputs(model, batch)
    rows = torch.tensor([int(pp.row[j]) - r0 for j in batch.local], device=dev)
    cols = torch.tensor([int(pp.start[j] + pp.length[j] - 1) for j in batch.local],
                        device=dev)

    def at_the_ends(module, args):
        return (args[0][rows, cols][None],) + tuple(args[1:])
    hook = head.register_forward_pre_hook(at_the_ends)
    try:
        with torch.no_grad():
            logits = model(**inputs, use_cache=False, logits_to_keep=0).logits
    finally:
        hook.remove()
    return logits[0]


def generate(model, prompts, max_new_tokens=32, tokenizer=None,
             max_tokens=None, overlong="error", check=True, **generate_kwargs):
    """Generates from a transformers causal LM with prepacked prefill.

    prompts: lists of token ids, or texts with `tokenizer`. The prompts
    but their last token are packed into rows (plan_batches: at most
    `max_tokens` token slots a forward, default all at once) and
    prefilled with restarted positions and a block-diagonal mask; each
    prompt's keys and values go into a left-padded DynamicCache, and
    model.generate continues from there (its first step runs the prompts'
    last tokens, so its sampling and stopping options apply unchanged:
    pass them as keyword arguments). Returns each prompt's new tokens, in
    input order, up to and including the first end-of-sequence token, as
    model.generate on that prompt alone returns them.

    check=True first runs a small probe packed and alone and refuses a
    model whose attention does not keep packed prompts apart."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    ids = _tokenized(prompts, tokenizer, "prompt")
    _check_tokenizer(model, tokenizer)
    _check_prompts(model, ids, "prompt", extra=max_new_tokens)
    _decode_cache(model)
    if check:
        _probe_isolation(model)
    heads = [p[:-1] for p in ids]
    batches = plan_batches(heads, max_tokens, overlong)
    groups = [[(j, i) for j, i in zip(b.local, b.indices)] for b in batches]
    singles = [(None, i) for i, h in enumerate(heads) if not h]
    if singles:  # one-token prompts: nothing to prefill, decode with the first batch
        if groups:
            groups[0] += singles
        else:
            batches, groups = [None], [singles]
    pad = _pad_id(model, tokenizer)
    eos = _eos_ids(model)
    out = [None] * len(ids)
    for batch, group in zip(batches, groups):
        members = [(j, heads[i]) for j, i in group]
        cache = None
        if batch is not None:
            if not _is_torch(batch.packed.input_ids):
                batch.packed.to_torch()
            _, packed_cache = _forward(model, batch.packed, batch.rows, use_cache=True)
            cache = _left_padded_cache(model, packed_cache, batch, members)
        width = max(len(ids[i]) for _, i in group)
        input_ids = torch.full((len(group), width), pad, dtype=torch.long)
        mask = torch.zeros((len(group), width), dtype=torch.long)
        for m, (_, i) in enumerate(group):
            input_ids[m, width - len(ids[i]):] = torch.tensor(ids[i])
            mask[m, width - len(ids[i]):] = 1
        kwargs = {"cache": cache} if cache is not None else {}
        with torch.no_grad():
            result = model.generate(input_ids=input_ids.to(model.device),
                                    attention_mask=mask.to(model.device),
                                    max_new_tokens=max_new_tokens,
                                    pad_token_id=pad, **kwargs, **generate_kwargs)
        for m, (_, i) in enumerate(group):
            out[i] = _trim_at_eos(result[m, width:].tolist(), eos)
    return out


def _pad_id(model, tokenizer):
    for v in (getattr(tokenizer, "pad_token_id", None),
              model.generation_config.pad_token_id,
              getattr(tokenizer, "eos_token_id", None)):
        if v is not None:
            return int(v)
    eos = _eos_ids(model)
    return min(eos) if eos else 0


def _eos_ids(model):
    eos = model.generation_config.eos_token_id
    if eos is None:
        return set()
    return {int(eos)} if isinstance(eos, int) else {int(e) for e in eos}


def score(model, requests, tokenizer=None, max_tokens=None, overlong="error",
          max_length=None, softmax_dtype=None, check=True):
    """Loglikelihoods with prepacked prefill, as lm-evaluation-harness's
    HFLM.loglikelihood computes them: each request is (context,
    continuation), token id lists (or texts with `tokenizer`, split as
    HFLM splits them); the model reads (context + continuation) without
    its last token, cut from the left to `max_length` (default the
    model's position limit, else 2048), and the result is (sum of the
    continuation's log-probabilities, whether each of its tokens is the
    argmax), in input order. The inputs are packed into rows (plan_batches,
    at most `max_tokens` token slots a forward) and scored in one forward
    per batch."""
    torch = _optional.require("torch", "torch", "prepack.prefill")
    pairs = _request_pairs(requests, tokenizer)
    _check_tokenizer(model, tokenizer)
    if max_length is None:
        max_length = getattr(model.config, "max_position_embeddings", None) or \
            getattr(model.config, "n_positions", None) or 2048
    inps = []
    for k, (ctx, cont) in enumerate(pairs):
        if not ctx or not cont:
            raise PrefillError(f"prepack.prefill: request {k} has an empty "
                               f"{'context' if not ctx else 'continuation'}")
        if len(cont) > max_length:
            raise PrefillError(f"prepack.prefill: request {k}'s continuation has "
                               f"{len(cont)} tokens, past max_length={max_length}")
        inps.append((ctx + cont)[-(max_length + 1):][:-1])
    _check_prompts(model, inps, "request")
    if check:
        _probe_isolation(model)
    out = [None] * len(pairs)
    for batch in plan_batches(inps, max_tokens, overlong):
        pp = batch.packed
        if not _is_torch(pp.input_ids):
            pp.to_torch()
        logits, _ = _forward(model, pp, batch.rows, use_cache=False)
        logp = torch.nn.functional.log_softmax(logits, dim=-1, dtype=softmax_dtype)
        for j, i in zip(batch.local, batch.indices):
            cont = pairs[i][1]
            r, s, n = int(pp.row[j]) - batch.rows[0], int(pp.start[j]), int(pp.length[j])
            sel = logp[r, s + n - len(cont):s + n]
            want = torch.tensor(cont, device=sel.device)
            greedy = bool((sel.argmax(-1) == want).all())
            out[i] = (float(sel.gather(1, want[:, None]).sum()), greedy)
    return out


def _request_pairs(requests, tokenizer):
    """(context ids, continuation ids) pairs; texts split as lm-eval's
    HFLM._encode_pair does: the context's trailing spaces move to the
    continuation, and the continuation is what encoding the whole adds
    after the context's tokens."""
    pairs = []
    for k, req in enumerate(requests):
        if len(req) != 2:
            raise PrefillError(f"prepack.prefill: request {k} is not a "
                               f"(context, continuation) pair")
        ctx, cont = req
        if isinstance(ctx, str) or isinstance(cont, str):
            if tokenizer is None or not (isinstance(ctx, str) and isinstance(cont, str)):
                raise PrefillError(f"prepack.prefill: request {k} is text: pass "
                                   f"tokenizer= and two strings")
            n = len(ctx) - len(ctx.rstrip())
            if n:
                ctx, cont = ctx[:-n], ctx[-n:] + cont
            whole = tokenizer(ctx + cont, add_special_tokens=False)["input_ids"]
            head = tokenizer(ctx, add_special_tokens=False)["input_ids"]
            pairs.append((list(head), list(whole[len(head):])))
        else:
            pairs.append(([int(t) for t in ctx], [int(t) for t in cont]))
    return pairs
