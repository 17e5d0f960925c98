"""Rows into batches, in the forms training code feeds (docs/FORMAT.md gives
the row contract; the derived fields match include/prepack.h)."""

import collections.abc
import ctypes
import operator

import numpy as np

from . import _native, _optional

IGNORE_INDEX = -100  # PyTorch cross-entropy's ignore_index
INT32_MAX = 2**31 - 1  # cu_seqlens are int32
FORMS = ("varlen", "hf", "flex", "padded", "megatron")


def _seq_index(cu, t):
    """For each of t tokens, the index of its sequence given cu_seqlens."""
    return np.repeat(np.arange(len(cu) - 1), np.diff(cu))[:t]


def _positions(cu):
    t = int(cu[-1])
    return np.arange(t, dtype=np.int64) - np.repeat(cu[:-1], np.diff(cu))


def _trained(row):
    mask = row.get("loss_mask")
    t = len(row["input_ids"])
    return np.ones(t, bool) if mask is None else np.asarray(mask, bool)


def _shifted_labels(row):
    """labels[i] = input_ids[i+1] when i+1 is in the same sequence and is
    trained, else -100: never across a boundary."""
    ids = row["input_ids"].astype(np.int64)
    cu = row["cu_seqlens"]
    labels = np.full(len(ids), IGNORE_INDEX, np.int64)
    if len(ids) > 1:
        labels[:-1] = np.where(_trained(row)[1:], ids[1:], IGNORE_INDEX)
    labels[cu[1:] - 1] = IGNORE_INDEX  # the last token of each sequence
    return labels


def _unshifted_labels(row):
    """Hugging Face's convention (the model shifts): the token itself, -100
    at each sequence's first token and where the loss mask is 0."""
    ids = row["input_ids"].astype(np.int64)
    labels = np.where(_trained(row), ids, IGNORE_INDEX)
    labels[row["cu_seqlens"][:-1]] = IGNORE_INDEX
    return labels


def _flat_needs(form, return_seq_idx=False):
    """Which derived arrays a flat form holds (shape_flat's keys): hf the
    unshifted labels, flex (and hf's seq_idx) the document ids, the rest
    the shifted labels."""
    needs = {"unshifted"} if form == "hf" else {"labels"}
    if form == "flex" or (form == "hf" and return_seq_idx):
        needs.add("doc_ids")
    return needs


def _flat(rows, needs=("labels", "unshifted", "doc_ids"), joined=None):
    """Rows concatenated: ids, cu_seqlens over the batch, positions, the
    longest sequence, and those of shifted and unshifted labels and
    batch-wide document ids that `needs` names (_flat_needs): by
    libprepack's row functions from the rows joined (_joined, _flat_c)
    where they apply, else in numpy (_flat_numpy, the reference the tests
    hold the other to)."""
    flat = _flat_c(joined, needs) if joined is not None else None
    return flat if flat is not None else _flat_numpy(rows, needs)


_ROW_DTYPES = {np.dtype(np.uint16): "uint16", np.dtype(np.uint32): "uint32"}


def _row_problem(r):
    """What breaks the row contract in row r (docs/FORMAT.md, "Rows"), or
    None: the row-by-row statement of what _checked checks for all rows
    at once, run to name the row when that check fails."""
    if not isinstance(r, collections.abc.Mapping):
        return f"is a {type(r).__name__}, not a mapping of arrays"
    for key in ("input_ids", "cu_seqlens", "seq_ids"):
        if key not in r:
            return f"lacks {key}"
    ids, cu, seq = (np.asarray(r[k]) for k in
                    ("input_ids", "cu_seqlens", "seq_ids"))
    mask = r.get("loss_mask")
    arrays = {"input_ids": ids, "cu_seqlens": cu, "seq_ids": seq}
    if mask is not None:
        arrays["loss_mask"] = np.asarray(mask)
    for key, a in arrays.items():
        if a.ndim != 1:
            return f"{key} has {a.ndim} dimensions, not 1"
    for key in ("input_ids", "cu_seqlens", "seq_ids"):
        if arrays[key].dtype.kind not in "iu" and len(arrays[key]):
            return f"{key} holds {arrays[key].dtype}, not integers"
    if len(cu) < 2:
        return "cu_seqlens holds no sequence (a row holds at least one)"
    if cu[0] != 0 or cu[-1] != len(ids):
        return (f"cu_seqlens runs from {cu[0]} to {cu[-1]}, not from 0 to "
                f"the row's {len(ids)} tokens")
    if not (np.diff(cu.astype(np.int64)) > 0).all():
        return "cu_seqlens does not rise strictly (a sequence of no tokens)"
    if len(seq) != len(cu) - 1:
        return f"{len(seq)} seq_ids for {len(cu) - 1} sequences"
    if mask is not None and len(arrays["loss_mask"]) != len(ids):
        return (f"loss_mask holds {len(arrays['loss_mask'])} values for "
                f"{len(ids)} tokens")
    return None


def _refuse_broken(rows):
    """ValueError naming the first row that breaks the row contract;
    None when every row keeps it."""
    for i, r in enumerate(rows):
        problem = _row_problem(r)
        if problem:
            raise ValueError(f"collate: row {i} of the batch {problem}")
    return None


def _checked(rows):
    """The rows checked against the row contract, all at once (a row's
    own numpy calls cost more than its C work): ValueError naming the
    first that breaks it (numpy would give labels from memory never
    written, C write past its arrays; _row_problem names it), else their
    fields as lists and per-row counts (ids, cu_seqlens, seq_ids, masks,
    tokens, bounds), or None for sound rows not held as 1-d numpy arrays."""
    try:
        ids = [r["input_ids"] for r in rows]
        cus = [r["cu_seqlens"] for r in rows]
        seqs = [r["seq_ids"] for r in rows]
        masks = [r.get("loss_mask") for r in rows]
    except (KeyError, TypeError, AttributeError, IndexError):
        return _refuse_broken(rows)
    present = [m for m in masks if m is not None]
    if {type(a) for a in ids + cus + seqs + present} != {np.ndarray} or \
            any(a.ndim != 1 for a in ids + cus + seqs + present):
        return _refuse_broken(rows)
    tokens = np.fromiter(map(len, ids), np.int64, len(rows))
    bounds = np.fromiter(map(len, cus), np.int64, len(rows))
    counts = np.fromiter(map(len, seqs), np.int64, len(rows))
    cu = np.concatenate(cus)
    if cu.dtype.kind not in "iu" or (bounds < 2).any() or \
            (counts != bounds - 1).any() or \
            any(len(m) != len(t) for t, m in zip(ids, masks) if m is not None) \
            or {a.dtype.kind for a in ids + seqs if len(a)} - set("iu"):
        return _refuse_broken(rows)
    cu = cu.astype(np.int64)
    ends = np.cumsum(bounds)
    rises = cu[1:] > cu[:-1]
    rises[ends[:-1] - 1] = True  # from a row's end to the next row's 0
    if (cu[ends - bounds] != 0).any() or (cu[ends - 1] != tokens).any() or \
            not rises.all():
        return _refuse_broken(rows)
    return ids, cu, seqs, masks, tokens, bounds


def _joined(rows):
    """The rows checked (_checked) and joined into one row of all their
    sequences, as the C path takes them: a flat batch derives the same
    fields from it (positions restart, labels stop and document ids count
    at every sequence boundary, and a row boundary is one). (ids,
    cu_seqlens int32, seq_ids, loss_mask uint8 or None), or None for sound
    rows C does not take: ids not uint16 or uint32 of one width, seq_ids
    not uint64, arrays not numpy's, a batch past INT32_MAX tokens."""
    fields = _checked(rows) if rows else None
    if fields is None:
        return None
    ids, cu, seqs, masks, tokens, bounds = fields
    if len({a.dtype for a in ids}) != 1 or ids[0].dtype not in _ROW_DTYPES \
            or {a.dtype for a in seqs} != {np.dtype(np.uint64)} or \
            int(tokens.sum()) > INT32_MAX:
        return None
    cu += np.repeat(np.cumsum(tokens) - tokens, bounds)  # row offsets
    keep = np.ones(len(cu), bool)
    keep[(np.cumsum(bounds) - bounds)[1:]] = False  # a row's 0: the end
    cu = cu[keep]                                   # of the row before
    mask = None
    if any(m is not None for m in masks):
        mask = np.concatenate([
            np.ones(len(t), np.uint8) if m is None else
            m.astype(bool).view(np.uint8) for t, m in zip(ids, masks)])
    return np.concatenate(ids), cu.astype(np.int32), np.concatenate(seqs), mask


def _flat_c(joined, needs):
    """_flat's arrays from libprepack's row functions (prepack.h: positions,
    labels, document ids) over the rows joined into one (_joined): a
    pass each in C where numpy takes several. None without the library."""
    lib = _native.loaded()
    if lib is None:
        return None
    ids, cu, seq_ids, mask = joined
    t, k = len(ids), len(cu) - 1
    row = _native.Row(t, k, _native.enum_value("dtype", _ROW_DTYPES[ids.dtype]),
                      ids.ctypes.data, cu.ctypes.data, seq_ids.ctypes.data,
                      None if mask is None else mask.ctypes.data, None)
    ref = ctypes.byref(row)
    derive = {"input_ids": lambda a: lib.prepack_row_input_ids(ref, 0, a, t),
              "position_ids": lambda a: lib.prepack_row_position_ids(ref, a, t),
              "labels": lambda a: lib.prepack_row_labels(ref, a, t),
              "unshifted": lambda a: lib.prepack_row_labels_unshifted(ref, a, t),
              "doc_ids": lambda a: lib.prepack_row_doc_ids(ref, 0, a, t)}
    names = ["input_ids", "position_ids"] + sorted(set(needs) & set(derive))
    # one block for all: fresh pages cost more than filling them, and
    # numpy asks for huge pages from 4 MiB (a 64-row batch of 4096: 3 to
    # 4x faster than an array each)
    block = np.empty((len(names), t), np.int64)
    out = dict(zip(names, block))
    for name, array in out.items():
        derive[name](array.ctypes.data)
    # the shifted labels that are not -100: every trained token but a
    # sequence's first (nothing before it in its sequence predicts it)
    trained = t - k if mask is None else \
        int(np.count_nonzero(mask)) - int(np.count_nonzero(mask[cu[:-1]]))
    out.update(cu_seqlens=cu, max_seqlen=int(np.diff(cu).max()),
               seq_ids=seq_ids, num_loss_tokens=trained)
    return out


def _flat_numpy(rows, needs=("labels", "unshifted", "doc_ids")):
    """_flat in numpy, for the whole batch at once, not row by row."""
    if not rows:
        z = np.zeros(0, np.int64)
        return {"input_ids": z, "cu_seqlens": np.zeros(1, np.int32),
                "max_seqlen": 0, "position_ids": z, "labels": z,
                "unshifted": z, "doc_ids": z, "seq_ids": np.zeros(0, np.uint64)}
    ids = np.concatenate([r["input_ids"] for r in rows]).astype(np.int64)
    offset, cus = 0, [np.zeros(1, np.int64)]
    for r in rows:
        cus.append(np.asarray(r["cu_seqlens"][1:], np.int64) + offset)
        offset += len(r["input_ids"])
    cu = np.concatenate(cus)
    lengths = np.diff(cu)
    out = {"input_ids": ids, "cu_seqlens": cu.astype(np.int32),
           "max_seqlen": int(lengths.max()),
           "position_ids": np.arange(len(ids), dtype=np.int64) -
           np.repeat(cu[:-1], lengths),
           "seq_ids": np.concatenate([r["seq_ids"] for r in rows])}
    masked = any("loss_mask" in r for r in rows)
    untrained = ~np.concatenate([_trained(r) for r in rows]) if masked \
        else None
    if "labels" in needs:
        shifted = np.empty(len(ids), np.int64)
        shifted[:-1] = ids[1:]
        if masked:
            shifted[:-1][untrained[1:]] = IGNORE_INDEX
        shifted[cu[1:] - 1] = IGNORE_INDEX  # never across a boundary
        out["labels"] = shifted
    if "unshifted" in needs:
        unshifted = ids.copy()
        if masked:
            unshifted[untrained] = IGNORE_INDEX
        unshifted[cu[:-1]] = IGNORE_INDEX
        out["unshifted"] = unshifted
    if "doc_ids" in needs:
        out["doc_ids"] = np.repeat(np.arange(len(lengths), dtype=np.int64),
                                   lengths)
    return out


def _padded(rows, max_seq_len, pad_id, mask_4d):
    b, width = len(rows), max_seq_len
    out = {
        "input_ids": np.full((b, width), pad_id, np.int64),
        "attention_mask": np.zeros((b, width), np.int64),
        "position_ids": np.zeros((b, width), np.int64),
        "labels": np.full((b, width), IGNORE_INDEX, np.int64),
        "doc_ids": np.full((b, width), -1, np.int64),
    }
    if mask_4d:
        out["mask_4d"] = np.zeros((b, 1, width, width), bool)
    for i, r in enumerate(rows):
        t = len(r["input_ids"])
        if t > width:
            raise ValueError(f"row {i} has {t} tokens, more than {width}")
        cu = r["cu_seqlens"]
        out["input_ids"][i, :t] = r["input_ids"]
        out["attention_mask"][i, :t] = 1
        out["position_ids"][i, :t] = _positions(cu.astype(np.int64))
        out["labels"][i, :t] = _shifted_labels(r)
        out["doc_ids"][i, :t] = _seq_index(cu.astype(np.int64), t)
        if mask_4d:
            doc = out["doc_ids"][i]
            same = (doc[:, None] == doc[None, :]) & (doc[:, None] >= 0)
            out["mask_4d"][i, 0] = same & np.tri(width, dtype=bool)
    return out


def flex_mask_mod(doc_ids):
    """A FlexAttention mask_mod over flat batch document ids: a query sees
    keys of its own document at or before it. Pass it, with the batch's
    length and `device=`, to torch.nn.attention.flex_attention's
    create_block_mask (torch >= 2.5; it defaults to CUDA)."""
    return FlexMaskMod(doc_ids)


class FlexMaskMod:
    """flex_mask_mod's mask_mod: an object, not a closure, so that a batch
    made in a DataLoader worker pickles on its way to the main process (a
    closure does not, and the loader then waited for that batch
    forever). FlexAttention reads its four arguments from __call__."""
    __slots__ = ("doc_ids",)

    def __init__(self, doc_ids):
        self.doc_ids = doc_ids

    def __call__(self, b, h, q_idx, kv_idx):
        doc_ids = self.doc_ids
        return (doc_ids[q_idx] == doc_ids[kv_idx]) & (q_idx >= kv_idx)


# torch has no wide unsigned types: uint64 is viewed as int64 (the same
# bits, no copy), uint16 and uint32 widened to it
_WIDENED = {np.dtype(np.uint16), np.dtype(np.uint32)}


def _to_torch(batch):
    """The batch's arrays as torch tensors: each wraps its numpy array (no
    copy), but in a DataLoader worker all are copied into one block of
    shared memory (_shared_block)."""
    torch = _optional.require("torch", "torch", "tensors='pt'")
    arrays = {}
    for k, v in batch.items():
        if isinstance(v, np.ndarray):
            if v.dtype == np.uint64:
                v = v.view(np.int64)
            elif v.dtype in _WIDENED:
                v = v.astype(np.int64)
            arrays[k] = v
    if torch.utils.data.get_worker_info() is not None:
        tensors = _shared_block(arrays, torch)
    else:
        tensors = {k: torch.from_numpy(v if v.flags.c_contiguous else
                                       np.ascontiguousarray(v))
                   for k, v in arrays.items()}
    return {k: tensors.get(k, v) for k, v in batch.items()}


def _shared_block(arrays, torch):
    """The arrays copied into one block of shared memory, each a tensor
    over its part of it. A worker's batch crosses to the main process as
    its storages do, and torch moves a storage that is not in shared
    memory there by copying it into a new segment: one segment a batch
    instead of one an array (an epoch through a DataLoader with 2 workers
    1.5-1.7x faster, bench/bench_python_reader.py), as default_collate
    does for the tensors it stacks. Each part starts at a multiple of 8
    bytes; a tensor kept from the batch keeps the whole block (the batch's
    own arrays at their size, nothing of the reader's capacity)."""
    parts = [-(-a.nbytes // 8) * 8 for a in arrays.values()]
    block = torch.empty(max(sum(parts), 8), dtype=torch.uint8)
    block.share_memory_()  # moved to a segment now, not when sent
    flat = block.numpy()
    out, at = {}, 0
    for (k, a), size in zip(arrays.items(), parts):
        flat[at:at + a.nbytes].view(a.dtype)[...] = a.reshape(-1)
        dtype = torch.from_numpy(np.empty(0, a.dtype)).dtype
        out[k] = block[at:at + a.nbytes].view(dtype).view(a.shape)
        at += size
    return out


def _pad_rows(rows, multiple, pad_id):
    """Rows laid out for context parallelism: each sequence followed by
    pad_id up to a multiple of `multiple` tokens (loss mask 0 there), its
    positions running on through the padding; cu_seqlens become the
    physical offsets, the real ones kept as "real_cu"."""
    out = []
    for r in rows:
        cu = np.asarray(r["cu_seqlens"], dtype=np.int64)
        real = np.diff(cu)
        padded = (real + multiple - 1) // multiple * multiple
        pcu = np.concatenate([[0], np.cumsum(padded)])
        ids = np.full(int(pcu[-1]), pad_id, dtype=np.asarray(r["input_ids"]).dtype)
        mask = np.zeros(int(pcu[-1]), np.uint8)
        src = _trained(r).astype(np.uint8)
        for j in range(len(real)):
            lo, n = int(pcu[j]), int(real[j])
            ids[lo:lo + n] = r["input_ids"][cu[j]:cu[j] + n]
            mask[lo:lo + n] = src[cu[j]:cu[j] + n]
        row = dict(r, input_ids=ids, cu_seqlens=pcu.astype(np.int32),
                   loss_mask=mask, real_cu=cu)
        out.append(row)
    return out


def _real_cu(rows):
    """The batch's cu_seqlens of real lengths, from padded rows."""
    lengths = np.concatenate([np.diff(r["real_cu"]) for r in rows]) if rows \
        else np.zeros(0, np.int64)
    return np.concatenate([[0], np.cumsum(lengths)]).astype(np.int32)


def cp_split(batch, cp_rank, cp_size):
    """One context-parallel rank's part of a flat batch collated with
    pad_multiple a multiple of 2 x cp_size (varlen, flex or hf): each
    sequence's padded tokens cut into 2 x cp_size chunks, rank r taking
    chunks r and 2 x cp_size - 1 - r (Transformer Engine's and Megatron's
    load-balanced order: for tokens 1..8 and cp_size 2, rank 0 gets
    1, 2, 7, 8 and rank 1 gets 3, 4, 5, 6). Per-token arrays are sliced;
    cu_seqlens, cu_seqlens_padded and the counts are the whole batch's, as
    a CP attention kernel takes them."""
    if not 0 <= cp_rank < cp_size:
        raise ValueError(f"cp_rank {cp_rank} is not in 0..{cp_size - 1}")
    if "cu_seqlens_padded" not in batch:
        raise ValueError("cp_split needs a batch collated with pad_multiple "
                         "(cu_seqlens_padded)")
    pcu = np.asarray(batch["cu_seqlens_padded"], dtype=np.int64)
    parts, k = [], 2 * cp_size
    for j in range(len(pcu) - 1):
        lo, p = int(pcu[j]), int(pcu[j + 1] - pcu[j])
        if p % k:
            raise ValueError(f"sequence {j}: {p} padded tokens, not a multiple "
                             f"of 2 x cp_size = {k} (collate with pad_multiple "
                             f"a multiple of {k})")
        c = p // k
        parts.append(np.arange(lo + cp_rank * c, lo + (cp_rank + 1) * c))
        parts.append(np.arange(lo + (k - 1 - cp_rank) * c, lo + (k - cp_rank) * c))
    index = np.concatenate(parts) if parts else np.zeros(0, np.int64)
    total = int(pcu[-1])
    out = {}
    for key, value in batch.items():
        shape = getattr(value, "shape", ())
        if key not in ("cu_seqlens", "cu_seqlens_padded", "cu_seq_lens_q",
                       "cu_seq_lens_k") and len(shape) and shape[-1] == total:
            if hasattr(value, "index_select"):  # torch
                torch = _optional.require("torch", "torch",
                                          "a torch batch")
                out[key] = value.index_select(-1, torch.from_numpy(index))
            else:
                out[key] = value[..., index]
        else:
            out[key] = value
    return out


def pad_multiple_of(value):
    """pad_multiple as an int, 1 for none (0, 1, None): at most 2^31 - 1,
    since one sequence padded to M tokens must fit int32 cu_seqlens (the
    C batch's options hold a uint32, which would wrap a larger M). A
    negative, fractional or non-integer value is a ValueError (int() let
    -5 and 5.5 through as 1 and 5)."""
    if value is None:
        return 1
    try:
        m = operator.index(value)
    except TypeError:
        raise ValueError(f"pad_multiple must be an integer, not "
                         f"{value!r}") from None
    if m < 0:
        raise ValueError(f"pad_multiple {m} is negative (0 or 1: no "
                         f"padding)")
    m = max(m, 1)
    if m > INT32_MAX:
        raise ValueError(f"pad_multiple {m} is more than {INT32_MAX}: one "
                         f"sequence padded to it passes int32 cu_seqlens")
    return m


def collate(rows, form="varlen", *, tensors="np", pad_id=0, max_seq_len=None,
            mask_4d=False, return_flash_attn_kwargs=False,
            return_seq_idx=False, num_items_in_batch=False,
            loss_weights=False, position_offset=0, pad_multiple=1,
            separator_id=IGNORE_INDEX):
    """Turns a list of rows (ShardSet items) into one batch.

    form="varlen": input_ids [T], cu_seqlens int32 [N+1], max_seqlen (int),
        position_ids, labels (shifted; -100 at sequence ends and masked
        tokens), seq_ids: flash_attn_varlen_func's arguments.
    form="hf": what transformers' DataCollatorWithFlattening returns:
        input_ids, labels (unshifted: -100 at each sequence's first token
        and masked tokens), position_ids, all int64 [1, T]; with
        return_flash_attn_kwargs, cu_seq_lens_q/k (int32 [N+1]) and
        max_length_q/k (ints); with return_seq_idx, seq_idx int32 [1, T].
        Never an attention_mask (it would override position_ids and let
        sequences attend to each other).
    form="flex": input_ids, position_ids, labels (shifted), doc_ids unique
        over the batch, and mask_mod (see flex_mask_mod).
    form="padded": [B, L] input_ids (pad_id), attention_mask, position_ids,
        labels (shifted, -100 on padding), doc_ids (per row, -1 on
        padding); with mask_4d, the [B, 1, L, L] block-diagonal causal mask.
    form="megatron": Megatron-Core's THD batch (see megatron_batch):
        tokens, labels (the next token, never -100), loss_mask (float32),
        position_ids, all [1, T]; cu_seqlens and cu_seqlens_padded (int32
        [N+1]) and max_seqlen (an int32 tensor [1]).

    separator_id (hf form): the label at each sequence's first token, as
    DataCollatorWithFlattening(separator_id=...) sets it; default -100.

    Loss normalisation (docs/FORMAT.md, "Loss over a packed step"): the
    varlen, flex and padded forms carry num_loss_tokens, the labels that
    are not -100 (after the shift: the targets this batch trains); sum it
    over a step's micro-batches and ranks and divide the summed token
    losses by that. The hf form carries it as num_items_in_batch, the
    name transformers' models and Trainer take, with num_items_in_batch=
    True. loss_weights=True adds loss_weights (float32, the labels'
    shape: 1 / the loss tokens of the token's sequence, 0 where the label
    is -100) and num_loss_sequences, for a loss where every sequence counts
    equally: sum(weights x token losses) / the step's num_loss_sequences.
    position_offset adds k to every position id (models whose positions
    start above 0).

    Context parallelism: pad_multiple M > 1 pads each sequence with pad_id
    to a multiple of M tokens (never trained; positions run on through the
    padding; sets packed with --pad-multiple plan for it and PackedDataset
    pads by the manifest's). cu_seqlens then holds the real lengths and
    cu_seqlens_padded the physical offsets, as Transformer Engine's THD
    layout takes them (flex and hf address the physical tokens); split a
    batch among CP ranks with prepack.cp_split.

    tensors="pt" returns torch tensors instead of numpy arrays.

    rows keep the row contract (docs/FORMAT.md, "Rows"): 1-d arrays,
    cu_seqlens from 0 to the row's tokens and strictly rising, a seq_id a
    sequence, a loss_mask value a token; a row that breaks it is a
    ValueError naming it. Flat forms of uint16 or uint32 rows are built
    by libprepack's row functions where it loads, else in numpy: the
    same batch either way (but for ownership: in C the int64 arrays are
    views of one block, as ShardSet.batch's are)."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    pad_multiple = pad_multiple_of(pad_multiple)
    if rows and (form == "padded" or pad_multiple > 1):
        _checked(rows)  # the caller's rows; a flat form's _joined checks
    if pad_multiple > 1:
        rows = _pad_rows(rows, pad_multiple, pad_id)
    counted = None  # the labels' count, where C derived them
    if form == "padded":
        # no rows: an empty [0, max_seq_len] batch, as the C batcher's
        width = max_seq_len or max((len(r["input_ids"]) for r in rows),
                                   default=0)
        batch = _padded(rows, width, pad_id, mask_4d)
    else:
        flat = _flat(rows, _flat_needs(form, return_seq_idx), _joined(rows))
        counted = flat.get("num_loss_tokens")
        batch = shape_flat(flat, form, return_flash_attn_kwargs,
                           return_seq_idx)
        if pad_multiple > 1:
            # the padded rows' cu_seqlens are the physical offsets
            padded_cu = flat["cu_seqlens"]
            batch["cu_seqlens_padded"] = padded_cu
            batch["cu_seqlens"] = _real_cu(rows)
            if form in ("varlen", "megatron"):  # the longest padded one
                batch["max_seqlen"] = int(np.diff(padded_cu).max(initial=0))
    if pad_multiple > 1 and form == "padded":
        _mask_padding(batch, rows)
    return finish(batch, form, tensors, num_items_in_batch=num_items_in_batch,
                  loss_weights=loss_weights, position_offset=position_offset,
                  pad_id=pad_id, separator_id=separator_id,
                  num_loss_tokens=counted)


def shape_flat(flat, form, return_flash_attn_kwargs=False,
               return_seq_idx=False):
    """The varlen, hf or flex batch from the flat arrays (_flat's keys;
    the C reader's batches give the same)."""
    if form == "varlen":
        return {k: flat[k] for k in ("input_ids", "cu_seqlens", "max_seqlen",
                                     "position_ids", "labels", "seq_ids")}
    if form == "hf":
        batch = {"input_ids": flat["input_ids"][None],
                 "labels": flat["unshifted"][None],
                 "position_ids": flat["position_ids"][None]}
        if return_flash_attn_kwargs:
            batch["cu_seq_lens_q"] = batch["cu_seq_lens_k"] = \
                flat["cu_seqlens"]
            batch["max_length_q"] = batch["max_length_k"] = \
                flat["max_seqlen"]
        if return_seq_idx:
            batch["seq_idx"] = flat["doc_ids"].astype(np.int32)[None]
        return batch
    if form == "megatron":  # finish() makes Megatron's fields of these
        return {k: flat[k] for k in ("input_ids", "cu_seqlens", "max_seqlen",
                                     "position_ids", "labels")}
    return {k: flat[k] for k in ("input_ids", "position_ids", "labels",
                                 "doc_ids")}


def _mask_padding(batch, rows):
    """Padded form: the CP padding inside a row is not attended to."""
    for i, r in enumerate(rows):
        pcu, cu = r["cu_seqlens"], r["real_cu"]
        for j in range(len(cu) - 1):
            lo = int(pcu[j]) + int(cu[j + 1] - cu[j])
            batch["attention_mask"][i, lo:int(pcu[j + 1])] = 0


def _label_sequences(batch, form):
    """For each label position, a batch-wide index of its sequence (-1 on
    padding)."""
    if form in ("varlen", "megatron"):
        cu = batch.get("cu_seqlens_padded", batch["cu_seqlens"]).astype(np.int64)
        return np.repeat(np.arange(len(cu) - 1), np.diff(cu)).reshape(
            batch["labels"].shape)
    if form == "flex":
        return batch["doc_ids"]
    if form == "hf":  # a sequence starts where its position is 0
        pos = batch["position_ids"]
        return np.cumsum(pos == 0, axis=-1) - 1
    doc = batch["doc_ids"]  # padded: per row, -1 on padding
    if doc.size == 0:
        return doc
    base = np.concatenate([[0], np.cumsum(doc.max(axis=1) + 1)[:-1]])
    return np.where(doc >= 0, doc + base[:, None], -1)


def _loss_fields(batch, form, num_items_in_batch, loss_weights,
                 num_loss_tokens=None):
    """num_loss_tokens (hf: num_items_in_batch), counted here unless the
    C batcher counted it, and the per-sequence loss weights."""
    count = num_loss_tokens
    if count is None or loss_weights:
        trained = batch["loss_mask"] == 1 if form == "megatron" else \
            batch["labels"] != IGNORE_INDEX
        count = int(np.count_nonzero(trained))
    if form != "hf":
        batch["num_loss_tokens"] = count
    elif num_items_in_batch:
        batch["num_items_in_batch"] = count
    if not loss_weights:
        return
    seq = _label_sequences(batch, form)
    n = int(seq.max()) + 1 if seq.size else 0
    per_seq = np.bincount(seq[trained], minlength=n) if n else np.zeros(0, np.int64)
    weights = np.zeros(batch["labels"].shape, np.float32)
    if count:
        weights[trained] = 1.0 / per_seq[seq[trained]]
    batch["loss_weights"] = weights
    batch["num_loss_sequences"] = int((per_seq > 0).sum())


def megatron_batch(batch, pad_id=0):
    """The varlen batch (shifted labels, -100 where nothing is trained) as
    the THD batch Megatron-Core takes, field for field:
    megatron/core/utils.py, get_thd_batch_on_this_cp_rank(batch,
    cu_seqlens, cu_seqlens_padded, max_seqlen) slices batch['tokens'] and
    every per-token field along dim 1 (so [1, T]) and reads
    int(max_seqlen[0].item()) (a tensor) into PackedSeqParams (thd); the
    loss is the token losses times loss_mask (float, as Megatron-Core's
    GPTDataset makes it), so labels hold a token everywhere: the next
    token of the same sequence, pad_id where there is none. cu_seqlens
    are the real lengths, cu_seqlens_padded the physical offsets (equal
    without pad_multiple), as Transformer Engine's THD layout takes them."""
    ids = batch.pop("input_ids")
    shifted = batch.pop("labels")
    pcu = batch.get("cu_seqlens_padded", batch["cu_seqlens"])
    labels = np.full(len(ids), pad_id, np.int64)
    labels[:-1] = ids[1:]
    labels[pcu[1:].astype(np.int64) - 1] = pad_id  # nothing after a sequence
    out = {"tokens": ids[None], "labels": labels[None],
           "loss_mask": (shifted != IGNORE_INDEX).astype(np.float32)[None],
           "position_ids": batch.pop("position_ids")[None],
           "cu_seqlens": batch["cu_seqlens"].astype(np.int32),
           "cu_seqlens_padded": pcu.astype(np.int32),
           "max_seqlen": np.asarray([batch["max_seqlen"]], np.int32)}
    return out


def finish(batch, form, tensors, *, num_items_in_batch=False,
           loss_weights=False, position_offset=0, pad_id=0,
           separator_id=IGNORE_INDEX, num_loss_tokens=None):
    """The loss fields, position_offset, numpy or torch, and the flex
    form's mask_mod; the megatron form's fields from the varlen ones;
    separator_id at each sequence's first label (hf). num_loss_tokens: the
    labels not -100 where the C batcher counted them (every form trains
    the same targets, each its own way), else counted here."""
    if separator_id != IGNORE_INDEX:
        if form != "hf":
            raise ValueError(f"separator_id is the hf form's (transformers' "
                             f"DataCollatorWithFlattening), not {form!r}'s")
        # a sequence starts where its position is 0 (CP padding runs on)
        batch["labels"] = np.where(batch["position_ids"] == 0,
                                   np.int64(separator_id), batch["labels"])
    if form == "megatron":
        batch = megatron_batch(batch, pad_id)
    if separator_id != IGNORE_INDEX:
        num_loss_tokens = None  # the separators are labels now: counted
    _loss_fields(batch, form, num_items_in_batch, loss_weights,
                 num_loss_tokens)
    if position_offset:
        pos = batch["position_ids"]
        real = batch["attention_mask"] == 1 if form == "padded" else True
        batch["position_ids"] = np.where(real, pos + int(position_offset), pos)
    if tensors == "pt":
        batch = _to_torch(batch)
        if form == "flex":
            batch["mask_mod"] = flex_mask_mod(batch["doc_ids"])
    elif tensors != "np":
        raise ValueError(f"tensors must be 'np' or 'pt', not {tensors!r}")
    elif form == "flex":
        batch["mask_mod"] = flex_mask_mod(batch["doc_ids"])
    return batch
