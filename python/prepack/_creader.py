"""The C reader under Python: libprepack's prepack_reader (ctypes), for
ShardSet(backend="c") and PackedDataset. A batch is built by
prepack_reader_batch in C (decompression, checks, concatenation, positions,
labels, document ids) and handed over as numpy arrays with one copy per
array, no per-row Python work.

The pure-Python reader (_pyreader.py) stays as the independent
implementation: the tests read every fixture through both and require the
same rows and batches."""

import ctypes

import numpy as np

from . import _native
from ._collate import (FORMS, IGNORE_INDEX, INT32_MAX, collate, finish,
                       pad_multiple_of, shape_flat)
from ._errors import CorruptShardError, ShardSetError
from ._format import token_numpy_dtype



_U8, _I32, _U32, _U64 = (np.dtype(t) for t in (np.uint8, np.int32, np.uint32,
                                                np.uint64))


def _raise(rc, diag):
    message = _native.diag_message(diag, rc)
    error = CorruptShardError if rc == _native.ECORRUPT else ShardSetError
    raise error(message)


class CReader(_native.Handle):
    """One open prepack_reader. Not shared across processes: each
    DataLoader worker opens its own."""

    _free = "prepack_reader_free"

    def __init__(self, path):
        self._lib = _native.library()
        self._h = ctypes.c_void_p()
        diag = _native.Diag()
        rc = self._lib.prepack_reader_open(ctypes.byref(self._h),
                                           str(path).encode(), None,
                                           ctypes.byref(diag))
        if rc != 0:
            _raise(rc, diag)
        self.rows = self._lib.prepack_reader_row_count(self._h)
        self.max_seq_len = self._lib.prepack_reader_max_seq_len(self._h)
        self.token_dtype = token_numpy_dtype(_native.dtype_name(
            self._lib.prepack_reader_token_dtype(self._h)))
        self._index = None
        # one set of call structures a reader (a reader is used from one
        # thread at a time, as its C handle): made once, not per batch
        self._arrays, self._options = _native.BatchArrays(), \
            _native.BatchOptions()
        self._batch, self._diag = _native.Batch(), _native.Diag()
        self._row = _native.Row()
        self._scratch = self._scratch_base = None  # _scratch_for
        self._arrays_ref, self._options_ref, self._batch_ref, \
            self._diag_ref, self._row_ref = (ctypes.byref(x) for x in (
                self._arrays, self._options, self._batch, self._diag,
                self._row))

    def row_costs(self, per_token, per_pair):
        """prepack_reader_row_costs: every row's cost (float64) in one
        pass; ValueError naming the damage, as prepack.set_costs raised."""
        out = np.empty(self.rows, dtype=np.float64)
        model = _native.CostModelStruct(per_token, per_pair)
        diag = _native.Diag()
        rc = self._lib.prepack_reader_row_costs(
            self._h, ctypes.byref(model), out.ctypes.data, ctypes.byref(diag))
        if rc != 0:
            raise ValueError(_native.diag_message(diag, rc))
        return out

    def row(self, i):
        """Row i as ShardSet gives it: a dict of numpy arrays, copied out of
        the reader's buffers into one new buffer a row, each field a view
        of it (widest first, so each is aligned): one allocation and no
        per-field numpy copy, which cost most of a row's time before."""
        r = self._row
        rc = self._lib.prepack_reader_row(self._h, i, self._row_ref,
                                          self._diag_ref)
        if rc != 0:
            _raise(rc, self._diag)
        t, k, w = r.num_tokens, r.num_seqs, self.token_dtype.itemsize
        starts, mask = r.seq_starts, r.loss_mask  # addresses, or None
        cu_at = 8 * k
        starts_at = cu_at + 4 * (k + 1)
        ids_at = starts_at + (4 * k if starts else 0)
        mask_at = ids_at + w * t
        buf = bytearray(mask_at + (t if mask else 0))
        base = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        move = ctypes.memmove
        if k:
            move(base, r.seq_ids, 8 * k)
            if starts:
                move(base + starts_at, starts, 4 * k)
        move(base + cu_at, r.cu_seqlens, 4 * (k + 1))
        if t:
            move(base + ids_at, r.input_ids, w * t)
            if mask:
                move(base + mask_at, mask, t)
        out = {"input_ids": np.frombuffer(buf, self.token_dtype, t, ids_at),
               "cu_seqlens": np.frombuffer(buf, _I32, k + 1, cu_at),
               "seq_ids": np.frombuffer(buf, _U64, k, 0)}
        if mask:
            out["loss_mask"] = np.frombuffer(buf, _U8, t, mask_at)
        if starts:
            out["seq_starts"] = np.frombuffer(buf, _U32, k, starts_at)
        return out

    def batch(self, indices, padded=False, pad_id=0, dense_mask=False,
              doc_ids=True, pad_multiple=1):
        """prepack_reader_batch_into over the given rows, into numpy arrays
        made here and handed over as they are (no copy): the flat (varlen)
        arrays, or [B, L] ones when padded; int64 where PyTorch wants it.
        pad_multiple M > 1 pads each sequence to a multiple of M tokens, as
        collate(..., pad_multiple=M) does: flat batches then carry
        cu_seqlens (real) and cu_seqlens_padded (physical); a padded-form
        row that padding pushes past L raises ShardSetError."""
        idx = np.ascontiguousarray(indices, dtype=np.uintp)
        n, L = len(idx), self.max_seq_len
        m = pad_multiple_of(pad_multiple)
        seqs = max(n * L, 1)  # no row holds more than L tokens or sequences
        # padding adds at most M - 1 tokens to each sequence of >= 1 token;
        # a flat batch past INT32_MAX tokens the C batch refuses (int32
        # cu_seqlens)
        cap = seqs if padded else min(max(n * L * m, 1), INT32_MAX)
        names = _WITH_DOC_IDS if doc_ids else _TOKEN_ARRAYS
        want_dense = dense_mask and padded
        # the token arrays in one block (handed over as views of it); the
        # per-sequence arrays and the attention mask in the reader's
        # scratch, copied out at their size (a batch's capacity for them
        # is n x L sequences, which a kept seq_ids would otherwise hold);
        # the dense mask alone
        tokens = np.empty((len(names), cap), np.int64)
        base = ctypes.addressof(ctypes.c_char.from_buffer(tokens))
        at = self._scratch_for(seqs, cap if padded else 0)
        scratch = self._scratch_base
        dense = np.empty(n * L * L if want_dense else 0, np.uint8)
        dst = self._arrays
        step = cap * 8
        dst.input_ids, dst.position_ids = base, base + step
        dst.labels = base + 2 * step
        dst.doc_ids = base + 3 * step if doc_ids else None
        dst.seq_ids, dst.cu_seqlens = scratch + at[0], scratch + at[1]
        dst.cu_seqlens_padded = scratch + at[2] if m > 1 and not padded \
            else None
        dst.attention_mask = scratch + at[3] if padded else None
        dst.dense_mask = dense.ctypes.data if want_dense else None
        dst.tokens_cap, dst.seqs_cap, dst.dense_cap = cap, seqs, dense.size
        opts = self._options
        opts.padded, opts.pad_id = int(padded), int(pad_id)
        opts.dense_mask, opts.pad_multiple = int(dense_mask), m
        b = self._batch
        rc = self._lib.prepack_reader_batch_into(
            self._h, idx.ctypes.data, n, self._options_ref, self._arrays_ref,
            self._batch_ref, self._diag_ref)
        if rc != 0:
            _raise(rc, self._diag)
        size = b.rows * b.width if padded else b.width  # flat: [T]
        out = {k: a[:size] for k, a in zip(names, tokens)}
        num_seqs = b.num_seqs
        out["seq_ids"] = self._scratch_view(at[0], _U64, num_seqs).copy()
        out["max_seqlen"] = int(b.max_seqlen)
        out["num_loss_tokens"] = int(b.num_loss_tokens)
        if padded:
            shape = (b.rows, b.width)
            out = {k: v.reshape(shape) if isinstance(v, np.ndarray) and
                   k != "seq_ids" else v for k, v in out.items()}
            out["attention_mask"] = self._scratch_view(
                at[3], _U8, size).astype(np.int64).reshape(shape)
            if dense_mask:
                out["dense_mask"] = dense[:b.rows * b.width * b.width].view(
                    bool).reshape(b.rows, 1, b.width, b.width)
        else:
            out["cu_seqlens"] = self._scratch_view(
                at[1], _I32, num_seqs + 1).copy()
            if m > 1:
                out["cu_seqlens_padded"] = self._scratch_view(
                    at[2], _I32, num_seqs + 1).copy()
        return out

    def _scratch_for(self, seqs, tokens):
        """Where seq_ids, cu_seqlens, cu_seqlens_padded and the attention
        mask of a batch of up to `seqs` sequences and (padded) `tokens`
        tokens lie in the reader's scratch, in bytes from its start (each
        at a multiple of 8); the scratch grown when it is too small, else
        the last batch's, written over."""
        offsets, end = [], 0
        for size in (seqs * 8, (seqs + 1) * 4, (seqs + 1) * 4, tokens):
            offsets.append(end)
            end += -(-size // 8) * 8
        if self._scratch is None or len(self._scratch) < end:
            self._scratch = np.empty(max(end, 1), np.uint8)
            self._scratch_base = ctypes.addressof(
                ctypes.c_char.from_buffer(self._scratch))
        return offsets

    def _scratch_view(self, at, dtype, count):
        """count values of dtype at byte `at` of the scratch (a view: the
        next batch writes over it)."""
        return self._scratch[at:at + count * dtype.itemsize].view(dtype)


_TOKEN_ARRAYS = ("input_ids", "position_ids", "labels")
_WITH_DOC_IDS = _TOKEN_ARRAYS + ("doc_ids",)


def collate_batch(reader, indices, form="varlen", *, tensors="np", pad_id=0,
                  max_seq_len=None, mask_4d=False,
                  return_flash_attn_kwargs=False, return_seq_idx=False,
                  **loss_options):
    """collate([reader.row(i) for i in indices], form, ...), built by the C
    batcher: the same keys, dtypes and values (the tests hold both to
    it). ShardSet.batch decides when it applies: not for a padded width
    other than the reader's L."""
    if form not in FORMS:
        raise ValueError(f"form must be one of {FORMS}, not {form!r}")
    m = pad_multiple_of(loss_options.pop("pad_multiple", 1))
    if form == "padded":
        try:
            b = reader.batch(indices, padded=True, pad_id=pad_id,
                             dense_mask=mask_4d, pad_multiple=m)
        except ShardSetError:
            if m > 1:  # padding pushed a row past L: collate's own error
                collate([reader.row(int(i)) for i in indices], form,
                        pad_id=pad_id, max_seq_len=max_seq_len,
                        pad_multiple=m)
            raise
        batch = {k: b[k] for k in ("input_ids", "attention_mask",
                                   "position_ids", "labels", "doc_ids")}
        if mask_4d:
            batch["mask_4d"] = b["dense_mask"]
        return finish(batch, form, tensors, pad_id=pad_id,
                      num_loss_tokens=b["num_loss_tokens"],
                      **loss_options)
    # document ids only where the form holds them (flex; hf's seq_idx)
    flat = reader.batch(indices, doc_ids=form == "flex" or (
        form == "hf" and return_seq_idx), pad_id=pad_id, pad_multiple=m)
    real_cu = flat["cu_seqlens"]
    if m > 1:  # collate's flat arrays hold the physical offsets
        flat["cu_seqlens"] = flat.pop("cu_seqlens_padded")
    if form == "hf":
        # Hugging Face's unshifted labels from the shifted ones: the label
        # of token t is the target after t - 1, -100 at each sequence start
        unshifted = np.roll(flat["labels"], 1)
        unshifted[flat["cu_seqlens"][:-1]] = IGNORE_INDEX
        flat["unshifted"] = unshifted
    batch = shape_flat(flat, form, return_flash_attn_kwargs, return_seq_idx)
    if m > 1:  # as collate: the real lengths, the physical offsets beside
        batch["cu_seqlens_padded"] = flat["cu_seqlens"]
        batch["cu_seqlens"] = real_cu
    return finish(batch, form, tensors, pad_id=pad_id,
                  num_loss_tokens=flat["num_loss_tokens"], **loss_options)
