"""Packing a stream (docs/STREAM.md): rows packed as sequences arrive, with
bounded memory and an exact resume, through libprepack's stream packer.

    for batch in prepack.stream.pack(sequences, 4096, window=256,
                                     batch_rows=8, form="varlen"):
        ...

`Packer` is the packer itself (push, flush, pop, state bytes);
`StreamingPackedDataset` wraps an iterable (or a `datasets.IterableDataset`)
for a PyTorch DataLoader, splitting its items over ranks and workers and
resuming from `state_dict()`.

Both take text too: with `tokenizer=` (and pack_dataset's other text
options) the items are records (`text`, `prompt` and `completion`, or
`messages`), tokenized and masked by prepack.text, TEXT_CHUNK at a time."""
import ctypes
import os

import numpy as np

from . import _native, _optional
from ._collate import collate
from ._loader import PackedBatch, guard

_data = _optional.find("torch.utils.data")
if _data is not None:  # a DataLoader-ready class when torch is there
    _Base, _worker_info = _data.IterableDataset, _data.get_worker_info
    # DataLoader(dataset) without batch_size=None: an error saying so
    guard(_optional.find("torch.utils.data._utils.collate"))
else:  # pragma: no cover - torch is optional
    _Base = object

    def _worker_info():
        return None


# The most DataLoader workers a StreamingPackedDataset state may name: a
# state is untrusted, and each worker is a process holding a packer.
MAX_WORKERS = 1024
_INT64_MAX = 2 ** 63 - 1  # batches and the like, as a checkpoint holds them
# Records tokenized in one Tokenize.many call: plain text is encoded on the
# tokenizer's threads a list at a time; a sequence waits for its chunk.
TEXT_CHUNK = 256
# pack_dataset's text options, with its defaults (prepack.text)


class StreamError(ValueError):
    """A sequence the packer refuses (too long under overlong="error",
    tokens given to a length-only stream), or a state it cannot restore."""


def _check(rc, diag):
    if rc != 0:
        message = _native.diag_message(diag, rc)
        if rc == _native.ENOMEM:
            raise MemoryError(message)
        raise StreamError(message)


def _count(name, value, lo=0, hi=_INT64_MAX):
    """value as an int when it is one (not a bool, not a float) in lo..hi;
    else a StreamError (a ValueError) naming the field."""
    if isinstance(value, (bool, np.bool_)) or \
            not isinstance(value, (int, np.integer)) or not lo <= value <= hi:
        raise StreamError(f"{name}: {value!r} is not an integer in "
                          f"{lo}..{hi}")
    return int(value)


def _sequence(i, seq):
    """(uint32 ids, uint8 mask or None) from a list, an array, a tensor, or
    a dict with input_ids and labels (-100: not trained) or loss_mask."""
    if isinstance(seq, dict):
        ids = _native.token_array(i, seq["input_ids"])
        mask = None
        if seq.get("loss_mask") is not None:
            mask = np.ascontiguousarray(seq["loss_mask"], dtype=np.uint8)
        elif seq.get("labels") is not None:
            labels = np.asarray(seq["labels"])
            if hasattr(seq["labels"], "numpy"):
                labels = seq["labels"].detach().cpu().numpy()
            mask = np.ascontiguousarray(labels != -100, dtype=np.uint8)
        if mask is not None and len(mask) != len(ids):
            raise StreamError(f"sequence {i}: {len(mask)} mask values for "
                              f"{len(ids)} tokens")
        return ids, mask
    return _native.token_array(i, seq), None


def _text(kwargs):
    """Takes the text options (prepack.text.OPTIONS) out of kwargs: (a
    prepack.text.Tokenize, the options as a state records them), or
    (None, None) without a tokenizer."""
    from . import text as ptext
    options = {k: kwargs.pop(k, v) for k, v in ptext.OPTIONS.items()}
    tokenizer, template = options["tokenizer"], options["chat_template"]
    if tokenizer is None:
        if template is not None:
            raise ValueError("chat_template without a tokenizer")
        return None, None
    try:
        encode = ptext.from_options(**options)
    except ptext.TextError as e:
        raise StreamError(str(e)) from None
    on_disk = isinstance(tokenizer, (str, os.PathLike))
    options["tokenizer"] = os.fspath(tokenizer) if on_disk else \
        str(getattr(tokenizer, "name_or_path", ""))
    if template is not None:
        options["chat_template"] = os.fspath(template)
    return encode, options


def _tokenized(items, encode):
    """(i, {input_ids, loss_mask}) from (i, record) pairs, TEXT_CHUNK
    records a Tokenize.many call; an error names the record by i."""
    if encode is None:
        yield from items
        return
    chunk = []
    for item in items:
        chunk.append(item)
        if len(chunk) == TEXT_CHUNK:
            yield from _encoded(chunk, encode)
            chunk = []
    yield from _encoded(chunk, encode)


def _encoded(chunk, encode):
    from .text import TextError
    records = [{k: v for k, v in r.items() if v is not None}
               if isinstance(r, dict) else r for _, r in chunk]
    try:
        out = encode.many(records, [f"record {i}" for i, _ in chunk])
    except TextError as e:
        raise StreamError(str(e)) from None
    for (i, _), done in zip(chunk, out):
        if done is not None:  # None: dropped, nothing to train
            yield i, {"input_ids": done[0], "loss_mask": done[1]}


def _same(a, b):
    """Dicts with the same keys, each value equal and of the same type (a
    state's options: True is not 1)."""
    return isinstance(a, dict) and set(a) == set(b) and all(
        type(a[k]) is type(v) and a[k] == v for k, v in b.items())


class Packer(_native.Handle):
    """prepack_stream: push sequences, pop finished rows (dicts of numpy
    arrays, as ShardSet gives them: input_ids uint32, cu_seqlens, seq_ids,
    loss_mask when any item had one, seq_starts under overlong="split").
    Rows close when full, when the window needs room, or at flush()."""

    _free = "prepack_stream_free"

    def __init__(self, max_seq_len, window=256, lookahead=0,
                 overlong="error", max_seqs_per_row=0, *, _state=None):
        if not isinstance(overlong, str) or overlong not in _native.OVERLONGS:
            raise ValueError(f"overlong must be one of "
                             f"{list(_native.OVERLONGS)}")
        self._lib = _native.library()
        self._opts = _native.StreamOptions(
            _count("max_seq_len", max_seq_len, 1, _native.MAX_SEQ_LEN_LIMIT),
            _count("window", window, 0, 1 << 20),
            _count("lookahead", lookahead, 0, 1 << 26),
            _native.enum_value("overlong", overlong),
            _count("max_seqs_per_row", max_seqs_per_row, 0, 2 ** 32 - 1),
            None)
        self.max_seq_len = int(max_seq_len)
        self._h = ctypes.c_void_p()
        diag = _native.Diag()
        if _state is None:
            rc = self._lib.prepack_stream_create(ctypes.byref(self._h),
                                                 ctypes.byref(self._opts),
                                                 ctypes.byref(diag))
        else:
            buf = bytes(_state)
            rc = self._lib.prepack_stream_restore(ctypes.byref(self._h), buf,
                                                  len(buf),
                                                  ctypes.byref(self._opts),
                                                  ctypes.byref(diag))
        _check(rc, diag)
        self._next_id = 0

    @classmethod
    def restore(cls, state, max_seq_len, window=256, lookahead=0,
                overlong="error", max_seqs_per_row=0):
        """A packer continuing from state() bytes (the same options). The
        bytes are untrusted: each field is checked against what a live
        packer keeps true (docs/STREAM.md), else StreamError."""
        if not isinstance(state, (bytes, bytearray, memoryview)):
            raise StreamError(f"state: bytes from Packer.state() expected, "
                              f"not {type(state).__name__}")
        return cls(max_seq_len, window, lookahead, overlong, max_seqs_per_row,
                   _state=state)

    def push(self, seq, seq_id):
        """Adds one sequence (its id is carried to the rows' seq_ids)."""
        ids, mask = _sequence(seq_id, seq)
        diag = _native.Diag()
        rc = self._lib.prepack_stream_push(
            self._h, int(seq_id), ids.ctypes.data if len(ids) else None,
            mask.ctypes.data if mask is not None and len(mask) else None,
            len(ids), ctypes.byref(diag))
        _check(rc, diag)

    def push_length(self, length, seq_id):
        """Plans a sequence by its length alone (rows then hold no tokens)."""
        diag = _native.Diag()
        _check(self._lib.prepack_stream_push(self._h, int(seq_id), None, None,
                                             int(length), ctypes.byref(diag)),
               diag)

    def flush(self):
        diag = _native.Diag()
        _check(self._lib.prepack_stream_flush(self._h, ctypes.byref(diag)),
               diag)

    @property
    def ready(self):
        return self._lib.prepack_stream_ready(self._h)

    def pop(self):
        """The oldest finished row, or None."""
        r = _native.Row()
        if not self._lib.prepack_stream_pop(self._h, ctypes.byref(r)):
            return None
        t, k, copy = r.num_tokens, r.num_seqs, _native.copy_array
        row = {"input_ids": (copy(r.input_ids, t, np.uint32)
                             if r.input_ids else None),
               "cu_seqlens": copy(r.cu_seqlens, k + 1, np.int32),
               "seq_ids": copy(r.seq_ids, k, np.uint64)}
        if r.loss_mask:
            row["loss_mask"] = copy(r.loss_mask, t, np.uint8)
        if r.seq_starts:
            row["seq_starts"] = copy(r.seq_starts, k, np.uint32)
        return row

    def stats(self):
        s = _native.StreamStats()
        self._lib.prepack_stream_get_stats(self._h, ctypes.byref(s))
        return {name: int(getattr(s, name)) for name, _ in s._fields_}

    def state(self):
        """Everything the packer holds, as bytes (restore() continues it)."""
        need = ctypes.c_size_t()
        diag = _native.Diag()
        _check(self._lib.prepack_stream_save(self._h, None, 0,
                                             ctypes.byref(need),
                                             ctypes.byref(diag)), diag)
        buf = ctypes.create_string_buffer(need.value)
        _check(self._lib.prepack_stream_save(self._h, buf, need.value,
                                             ctypes.byref(need),
                                             ctypes.byref(diag)), diag)
        return buf.raw[:need.value]


def _rows(packer, items):
    """Rows packed from (id, sequence) pairs, as they close, then the rest
    at the end of the items."""
    for seq_id, seq in items:
        packer.push(seq, seq_id)
        row = packer.pop()
        while row is not None:
            yield row
            row = packer.pop()
    packer.flush()
    row = packer.pop()
    while row is not None:
        yield row
        row = packer.pop()


def _collated(rows, batch_rows, form, collate_kwargs):
    """Batches of batch_rows rows (the last may hold fewer), collated."""
    batch = []
    for row in rows:
        batch.append(row)
        if len(batch) == batch_rows:
            yield collate(batch, form, **collate_kwargs)
            batch = []
    if batch:
        yield collate(batch, form, **collate_kwargs)


def pack(iterable, max_seq_len, window=256, lookahead=100, form="varlen",
         batch_rows=1, overlong="error", max_seqs_per_row=0, **collate_kwargs):
    """Collated batches (prepack.collate's forms and options) of rows packed
    from any iterable of token sequences: lists, numpy arrays, torch
    tensors, or dicts with input_ids and labels or loss_mask. Sequence i's
    id (seq_ids) is its position in the iterable. The defaults (256 open
    rows, items placed 100 at a time longest first) came within 0.4% of
    offline FFD's rows on every real length set measured (docs/STREAM.md);
    lookahead=0 places each sequence as it comes.

    With tokenizer= (a Hugging Face tokenizer directory or a loaded
    tokenizer) and pack_dataset's other text options (chat_template,
    assistant_only_loss, completion_only_loss, add_eos, text_field), the
    items are records instead, tokenized and masked as prepack.text does
    (the labels -100 where the mask is 0); a bad record is a StreamError
    naming it by its position ("record 17: ...")."""
    encode, _ = _text(collate_kwargs)
    packer = Packer(max_seq_len, window, lookahead, overlong, max_seqs_per_row)
    collate_kwargs.setdefault("max_seq_len", max_seq_len)
    try:
        yield from _collated(_rows(packer, _tokenized(enumerate(iterable),
                                                      encode)),
                             batch_rows, form, collate_kwargs)
    finally:
        packer.close()


class StreamingPackedDataset(_Base):
    """An IterableDataset of packed batches from a stream of sequences.

    Item i of `source` (any iterable, re-iterable from the start: a list, a
    `datasets.IterableDataset`, a function returning an iterator) belongs
    to rank r of world_size and DataLoader worker w of W when i % (world_size
    x W) == r x W + w: every item once over ranks and workers. Each share is
    packed by its own Packer, so batches do not depend on timing.

    Resuming: state_dict(batches_done) after the training loop consumed
    batches_done batches from this rank's DataLoader (num_workers=0: it may
    be left out), load_state_dict(state) in the new process: iteration
    then yields exactly the batches that would have come next. The state
    is small; on resume each worker re-reads its share of the source from
    the start and re-packs (without collating) up to where it was, since a
    stream cannot seek. With W workers the DataLoader takes their batches
    in turn; the count is exact while every worker still has batches.

    Text: with tokenizer= and the other text options, as pack(); each
    worker tokenizes its own share, and the state records the options
    (a state taken with others is refused)."""

    def __init__(self, source, max_seq_len, window=256, lookahead=100,
                 form="varlen", batch_rows=1, overlong="error",
                 max_seqs_per_row=0, rank=0, world_size=1, **collate_kwargs):
        world_size = _count("world_size", world_size, 1)
        rank = _count("rank", rank, 0, world_size - 1)
        batch_rows = _count("batch_rows", batch_rows, 1)
        self._encode, self.text_options = _text(collate_kwargs)
        self.source = source
        self.options = dict(max_seq_len=max_seq_len, window=window,
                            lookahead=lookahead, overlong=overlong,
                            max_seqs_per_row=max_seqs_per_row)
        self.form, self.batch_rows = form, batch_rows
        self.rank, self.world_size = rank, world_size
        collate_kwargs.setdefault("tensors", "pt" if _Base is not object
                                  else "np")
        collate_kwargs.setdefault("max_seq_len", max_seq_len)
        self.collate_kwargs = collate_kwargs
        self._done = 0  # batches consumed before a resume
        self._resume_workers = 0  # the workers that consumed them
        self._rotate = 0
        self._yielded = 0
        self._workers_seen = 1

    def _items(self, share, shares):
        source = self.source() if callable(self.source) else self.source
        for i, seq in enumerate(source):
            if i % shares == share:
                yield i, seq

    def __iter__(self):
        info = _worker_info()
        w, workers = (info.id, info.num_workers) if info else (0, 1)
        if self._resume_workers and workers != self._resume_workers:
            raise StreamError(f"resumed from a state of "
                              f"{self._resume_workers} DataLoader workers, "
                              f"iterated with {workers}: each holds its own "
                              f"share of the stream, so resume with as many")
        # after a resume the DataLoader starts its round with worker 0,
        # where the interrupted one was at worker batches_done % W: worker
        # w takes the share of the original worker w + that
        w = (w + self._rotate) % workers
        self._workers_seen = workers
        shares = self.world_size * workers
        share = self.rank * workers + w
        skip = self._skipped(w)
        packer = Packer(**self.options)
        try:
            n = skip
            for batch in self._raw_batches(packer, share, shares, skip):
                n += 1
                if info is None:
                    self._yielded = n
                yield PackedBatch(batch)
        finally:
            packer.close()

    def _skipped(self, w):
        """Batches of worker w's share consumed before the resume: the
        DataLoader takes one batch from each worker in turn."""
        done, workers = self._done, self._resume_workers
        if done <= w:
            return 0
        return (done - w + workers - 1) // workers

    def _raw_batches(self, packer, share, shares, skip):
        rows = _rows(packer, _tokenized(self._items(share, shares),
                                        self._encode))
        for _ in range(skip * self.batch_rows):  # already consumed: replayed
            if next(rows, None) is None:
                return
        yield from _collated(rows, self.batch_rows, self.form,
                             self.collate_kwargs)

    _STATE_FIELDS = ("batches_done", "num_workers", "rank", "world_size",
                     "options", "batch_rows")

    def state_dict(self, batches_done=None):
        """Where this rank is: the batches its DataLoader consumed."""
        if batches_done is None:
            batches_done = self._yielded
        state = {"batches_done": _count("batches_done", batches_done),
                 "num_workers": self._workers_seen,
                 "rank": self.rank, "world_size": self.world_size,
                 "options": dict(self.options), "batch_rows": self.batch_rows}
        if self.text_options is not None:  # text in: how it was tokenized
            state["text"] = dict(self.text_options)
        return state

    def _check_state(self, state):
        """The state's fields, each by type and range (a state is untrusted:
        docs/STREAM.md): (batches_done, num_workers), or StreamError."""
        if not isinstance(state, dict):
            raise StreamError(f"state: a dict from state_dict() expected, "
                              f"not {type(state).__name__}")
        fields = self._STATE_FIELDS + (
            ("text",) if self.text_options is not None else ())
        if set(state) != set(fields):
            raise StreamError(f"state: fields {sorted(map(str, state))}, "
                              f"expected {sorted(fields)}")
        done = _count("batches_done", state["batches_done"])
        workers = _count("num_workers", state["num_workers"], 1, MAX_WORKERS)
        for key in ("rank", "world_size", "batch_rows"):
            if _count(key, state[key]) != getattr(self, key):
                raise StreamError(f"the state was taken with {key} "
                                  f"{state[key]}, this dataset has "
                                  f"{getattr(self, key)}")
        options = state["options"]
        if not _same(options, self.options):
            raise StreamError(f"the state was taken with other options "
                              f"{options!r}, this dataset has {self.options}")
        if "text" in fields and not _same(state["text"], self.text_options):
            raise StreamError(f"the state was taken with other text options "
                              f"{state['text']!r}, this dataset has "
                              f"{self.text_options}")
        return done, workers

    def load_state_dict(self, state, num_workers=None):
        """Resume after state["batches_done"] batches; num_workers: the new
        DataLoader's (default: the one the state was taken with, at most
        MAX_WORKERS). Every field is checked (StreamError, a ValueError,
        naming it); a refused state leaves the dataset as it was."""
        done, workers = self._check_state(state)
        if num_workers is not None and \
                max(_count("num_workers", num_workers, 0, MAX_WORKERS),
                    1) != workers:
            raise StreamError(f"the state was taken with {workers} DataLoader "
                              f"workers (num_workers): each holds its own "
                              f"share of the stream, so resume with as many")
        self._done, self._resume_workers = done, workers
        self._rotate = done % workers
        self._yielded = done
