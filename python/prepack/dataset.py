"""Packing Hugging Face datasets and Arrow/Parquet data into a shard set.

    import prepack
    prepack.pack_dataset(ds, "shards/", max_seq_len=4096, overlong="split")

`source` is a `datasets.Dataset`, a `pyarrow.Table`, or a list of Parquet
(.parquet) or Arrow IPC (.arrow, .feather, .ipc) files (one path alone
too). It is read a record batch at a time (Parquet: a row group at a
time), so memory stays bounded; the token column's values go to libprepack
without a copy where they already are uint32, and in one vectorised
conversion otherwise. Everything after reading (the token store, the
planner, the rows, the writer) is libprepack's, as for `prepack pack`: the
same sequences give the same shards whichever way they come in.
"""

import ctypes
import json
import numbers
import os
import time

import numpy as np

from . import _native, _optional
from ._progress import Progress
from ._report import PackReport, source_name
from ._report_svg import report_svg_bytes, write_report_svg
from ._saved_tokens import open_saved


class DatasetError(ValueError):
    """Bad input data: the message names the input, the row group or batch,
    the row and what is wrong."""


class _Where:
    """Where a record batch came from, for messages: the input, the row
    group (Parquet) or batch, and its first row's number in the input."""

    def __init__(self, name, unit, index, first):
        self.name = name
        self.text = f"{name}: {unit} {index}"
        self.first = first
        if unit == "lines":  # JSON lines: first is each row's line number
            self.text = f"{name}: lines {first[0]}..{first[-1]}"
            self.row = lambda r: f"{name}:{first[r]}"

    def row(self, r):
        return f"{self.text}, row {self.first + r}"

    def __str__(self):
        return self.text


def _check(rc, diag, error=ValueError):
    if rc != 0:
        raise error(_native.diag_message(diag, rc))


# ---- reading Arrow ---------------------------------------------------------

def _table_batches(table, columns, batch_rows):
    """(name, unit, unit index, first row, RecordBatch) of an Arrow table."""
    first = 0
    for i, b in enumerate(table.select(columns).to_batches(batch_rows)):
        yield "table", "batch", i, first, b
        first += b.num_rows


def _wanted(names, column, optional, where):
    """The columns to read: column (or, for text, those present of a tuple
    of alternatives), then the optional ones present; DatasetError naming
    what is missing (`where`: "PATH: " and "it", or "" and "the table")."""
    required = column if isinstance(column, tuple) else (column,)
    have = [c for c in required if c in names]
    if not have:
        prefix, it = where
        raise DatasetError(f"{prefix}no column "
                           f"{' or '.join(map(repr, required))} ({it} has "
                           f"{names})")
    return have + [c for c in optional if c and c in names and c not in have]


_ARROW_INPUTS = "Parquet, Arrow and Hugging Face datasets"


def _arrow():
    """pyarrow, or MissingPackage naming the extra that installs it."""
    return _optional.require("pyarrow", "arrow", _ARROW_INPUTS)


def _file_batches(path, column, optional, batch_rows):
    """(path, unit, unit index, first row, RecordBatch) of a Parquet file
    (a row group at a time) or an Arrow IPC file or stream."""
    pa = _arrow()
    pq = _optional.require("pyarrow.parquet", "arrow", _ARROW_INPUTS)
    if not os.path.exists(path):
        raise DatasetError(f"cannot open {path}: no such file")
    if path.endswith(".parquet"):
        try:
            f = pq.ParquetFile(path)
        except Exception as e:
            raise DatasetError(f"{path}: not a Parquet file ({e})") from None
        columns = _wanted(f.schema_arrow.names, column, optional,
                          (f"{path}: ", "it"))
        first = 0
        for g in range(f.num_row_groups):
            t = f.read_row_group(g, columns=columns)
            for b in t.to_batches(batch_rows):
                yield path, "row group", g, first, b
                first += b.num_rows
        return
    try:
        reader = pa.ipc.open_file(path)
        pieces = (reader.get_batch(i) for i in range(reader.num_record_batches))
    except pa.ArrowInvalid:
        try:
            reader = pa.ipc.open_stream(path)
            pieces = iter(reader)
        except pa.ArrowInvalid as e:
            raise DatasetError(f"{path}: neither Parquet (.parquet) nor an "
                               f"Arrow IPC file or stream ({e})") from None
    first = 0
    for i, b in enumerate(pieces):
        columns = _wanted(b.schema.names, column, optional,
                          (f"{path}: ", "it"))
        yield path, "batch", i, first, b.select(columns)
        first += b.num_rows


def _list_column(batch, name, where):
    """A list<integer> column as (values ndarray, offsets int64 ndarray
    from 0), or DatasetError naming what is wrong."""
    pa = _arrow()
    arr = batch.column(name)
    t = arr.type
    if not (pa.types.is_list(t) or pa.types.is_large_list(t)) or \
            not pa.types.is_integer(t.value_type):
        raise DatasetError(f"{where}: column {name!r} is {t}, not a list of "
                           f"integers")
    if arr.null_count:
        r = int(np.flatnonzero(np.asarray(arr.is_null()))[0])
        raise DatasetError(f"{where.row(r)}: {name} is null")
    offsets = np.asarray(arr.offsets, dtype=np.int64)
    values = arr.values
    if values.null_count:
        j = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        r = int(np.searchsorted(offsets, j, side="right")) - 1
        raise DatasetError(f"{where.row(r)}: {name}[{j - offsets[r]}] is "
                           f"null")
    values = values.to_numpy(zero_copy_only=False)
    values = values[offsets[0]:offsets[-1]]
    return values, offsets - offsets[0]


def _bad_value(where, name, offsets, j, value, why):
    r = int(np.searchsorted(offsets, j, side="right")) - 1
    return DatasetError(f"{where.row(r)}: {name}[{j - offsets[r]}] is "
                        f"{value}: {why}")


def _tokens(values, offsets, where, name):
    """The values as uint32, with a range check naming the first bad one."""
    if values.dtype == np.uint32:
        return values  # as it is: no copy
    if values.size:
        bad = np.flatnonzero(values < 0) if values.dtype.kind == "i" else ()
        if len(bad):
            j = int(bad[0])
            raise _bad_value(where, name, offsets, j, int(values[j]),
                             "token ids must be non-negative")
        bad = np.flatnonzero(values > _native.MAX_ID)
        if len(bad):
            j = int(bad[0])
            raise _bad_value(where, name, offsets, j, int(values[j]),
                             f"token ids must be at most {_native.MAX_ID}")
    return values.astype(np.uint32)


def _mask(batch, ids, offsets, where, loss_mask, labels):
    """The loss mask (uint8, 1 = trained) from a 0/1 loss_mask column or a
    labels column (the token, or -100), checked as JSONL's are."""
    name = loss_mask if loss_mask in batch.schema.names else \
        labels if labels in batch.schema.names else None
    if name is None:
        return None
    values, offs = _list_column(batch, name, where)
    if not np.array_equal(offs, offsets):
        r = int(np.flatnonzero(np.diff(offs) != np.diff(offsets))[0])
        raise DatasetError(f"{where.row(r)}: {name} holds "
                           f"{offs[r + 1] - offs[r]} values, the row "
                           f"{offsets[r + 1] - offsets[r]} tokens")
    if name == loss_mask:
        bad = np.flatnonzero((values != 0) & (values != 1))
        if len(bad):
            j = int(bad[0])
            raise _bad_value(where, name, offsets, j, int(values[j]),
                             "must be 0 or 1")
        return values.astype(np.uint8)
    bad = np.flatnonzero((values != -100) & (values != ids.astype(np.int64)))
    if len(bad):
        j = int(bad[0])
        raise _bad_value(where, name, offsets, j, int(values[j]),
                         "labels hold the token itself or -100")
    return (values != -100).astype(np.uint8)


# ---- packing ---------------------------------------------------------------

# Each integer option's range: the C field it fills (ctypes keeps a wider
# value's low bits, so max_seq_len 2**32 + 16 planned rows of 16 tokens).
_U32, _U64, _INT = (0, 2**32 - 1), (0, 2**64 - 1), (-2**31, 2**31 - 1)
_INT_RANGES = {"max_seq_len": _U32, "max_seqs_per_row": _U32,
               "pad_multiple": _U32, "seed": _U64, "batch_size": _U64,
               "rows_per_frame": _U32, "shard_rows": _U64, "shard_bytes": _U64,
               "level": _INT, "threads": _INT}


def _check_ints(**values):
    """Each integer option within its C field, else a ValueError naming it
    (never a value wrapped to another)."""
    for name, v in values.items():
        lo, hi = _INT_RANGES[name]
        if not isinstance(v, numbers.Integral) or not lo <= v <= hi:
            raise ValueError(f"{name} must be an integer in {lo}..{hi}, "
                             f"not {v!r}")


def _check_options(algo, overlong, token_dtype, shard_rows=0, shard_bytes=0):
    if algo not in _native.ALGOS or overlong not in _native.OVERLONGS:
        raise ValueError(f"algo must be one of {list(_native.ALGOS)} and "
                         f"overlong one of {list(_native.OVERLONGS)}")
    if token_dtype not in _native.DTYPES:
        raise ValueError(f"token_dtype must be one of {list(_native.DTYPES)}")
    if shard_rows and shard_bytes:
        raise ValueError("shard_rows or shard_bytes, not both")


class _Planned:
    """A source read into a store and planned: what stats returns and pack
    writes. Frees the library's objects on close."""

    def __init__(self, source, max_seq_len, column, loss_mask, labels, algo,
                 overlong, max_seqs_per_row, shuffle, seed, token_dtype,
                 tmp_dir, batch_size, read_rows, group="group",
                 pad_multiple=0, text=None, progress=None,
                 saved=None):
        self.progress = progress or Progress(False)  # close() clears it
        self.algo, self.overlong, self.source = algo, overlong, source
        t0 = time.monotonic()
        self.lib = lib = _native.library()
        self.text = text
        diag = _native.Diag()
        self.store, self.plan = ctypes.c_void_p(), ctypes.c_void_p()
        so = _native.StoreOptions(os.fsencode(tmp_dir) if tmp_dir else None,
                           _native.enum_value("dtype", token_dtype), 0,
                           None)
        _check(lib.prepack_store_create(ctypes.byref(self.store),
                                        ctypes.byref(so), ctypes.byref(diag)),
               diag)
        try:
            _read_into(lib, self.store, source, column, loss_mask, labels,
                       read_rows, group, text, self.progress, saved)
            _check(lib.prepack_store_finish(self.store, ctypes.byref(diag)),
                   diag, DatasetError)
            t1 = time.monotonic()
            self.options = _native.PlanOptions(
                max_seq_len, _native.enum_value("algo", algo),
                _native.enum_value("overlong", overlong),
                                        max_seqs_per_row, int(shuffle), seed,
                                        None, pad_multiple)
            n = lib.prepack_store_sequence_count(self.store)
            lengths = lib.prepack_store_lengths(self.store)
            # with the group column's groups when it joined rows: the
            # library decides, as for `prepack pack`
            _check(lib.prepack_plan_store(ctypes.byref(self.plan), self.store,
                                          ctypes.byref(self.options),
                                          ctypes.byref(diag)), diag)
            self.report = _native.Report()
            rc = lib.prepack_report_compute(self.plan, lengths, n, batch_size,
                                            ctypes.byref(self.report))
            if rc != 0:
                raise ValueError(f"prepack error {rc} computing the report")
            self.timings = dict(read_s=t1 - t0, plan_s=time.monotonic() - t1,
                                write_s=0.0)
        except BaseException:
            self.close()
            raise

    def stats(self):
        """The plan's figures; with text, also untrained_dropped: the
        records left out with nothing to train (untrained="drop")."""
        stats = self.report.plan
        out = {k: getattr(stats, k) for k, _ in _native.PlanStats._fields_}
        if self.text is not None:
            out["untrained_dropped"] = self.text.dropped
        return out

    def padding_report(self, command, output=None):
        """stats() as the printable PackReport, the picture drawn."""
        r, lib = self.report, self.lib

        def fields(struct):
            return {k: getattr(struct, k) for k, _ in struct._fields_}
        return PackReport(
            self.stats(), command=command, source=source_name(self.source),
            algo=self.algo, overlong=self.overlong,
            token_dtype=_native.dtype_name(
                lib.prepack_store_dtype(self.store)),
            lengths=fields(r.lengths),
            layouts={k: fields(getattr(r, k))
                     for k in ("naive_batch", "padded_to_max", "packed")},
            packed_dense_attention_cost=r.packed_dense_attention_cost,
            batch_size=r.batch_size, timings=dict(self.timings),
            output=output,
            svg_bytes=report_svg_bytes(lib, r, self.plan, self.store))

    def close(self):
        self.lib.prepack_plan_free(self.plan)
        self.lib.prepack_store_free(self.store)
        self.plan, self.store = ctypes.c_void_p(), ctypes.c_void_p()
        self.progress.clear()


def stats_dataset(source, max_seq_len, column="input_ids",
                  loss_mask="loss_mask", labels="labels", algo="ffd",
                  overlong="error", max_seqs_per_row=0, token_dtype="auto",
                  tmp_dir=None, batch_size=8, read_rows=None, group="group",
                  pad_multiple=0, svg=None, progress=None, save_tokens=None,
                  **text_options):
    """What `prepack stats` reports, for the same sources as pack_dataset
    (text with a tokenizer too): the padding report (a PackReport, a dict
    of the plan's figures that prints as `prepack stats`), nothing
    written but the report's picture to svg when given (`stats --svg`)
    and the tokenized sequences to save_tokens (as pack_dataset);
    progress as pack_dataset's."""
    _check_options(algo, overlong, token_dtype)
    _check_ints(max_seq_len=max_seq_len, max_seqs_per_row=max_seqs_per_row,
                batch_size=batch_size, pad_multiple=pad_multiple)
    shown = Progress(progress)
    text = _text(**text_options)
    with open_saved(save_tokens, text, source) as saved:
        planned = _Planned(source, max_seq_len, column, loss_mask, labels,
                           algo, overlong, max_seqs_per_row, False, 0,
                           token_dtype, tmp_dir, batch_size, read_rows, group,
                           pad_multiple, text, shown, saved)
        try:
            _draw(planned, svg)
            saved.commit()
            stats = planned.padding_report("stats")
        finally:
            planned.close()
    shown.done(f"prepack stats: {stats['tokens']:,} tokens planned")
    return stats


def pack_dataset(source, out_dir, max_seq_len, column="input_ids",
                 loss_mask="loss_mask", labels="labels", algo="ffd",
                 overlong="error", max_seqs_per_row=0, shuffle=False, seed=0,
                 rows_per_frame=0, shard_rows=0, shard_bytes=0, level=0,
                 threads=1, overwrite=False, token_dtype="auto",
                 tmp_dir=None, batch_size=8, read_rows=None, group="group",
                 pad_multiple=0, svg=None, progress=None, save_tokens=None,
                 **text_options):
    """Packs `source` (a datasets.Dataset, a pyarrow.Table, or Parquet /
    Arrow IPC files) into a shard set in out_dir, with every option of
    `prepack pack` (the same names, underscores for dashes).

    With `tokenizer` (a Hugging Face tokenizer directory, a tiktoken file,
    or a loaded tokenizer) the rows hold text instead (`text`, `prompt` and
    `completion`, or `messages`, as TRL names its formats), tokenized and
    masked as prepack.text does; the other text options are
    `chat_template` (a Jinja file), `assistant_only_loss` (False),
    `completion_only_loss` (True), `add_eos` (True), `text_field`,
    `untrained` ("error", or "drop" records with nothing to train) and
    `workers` (tokenizing processes; None: every core) (docs/TEXT.md);
    save_tokens, a path, keeps the tokenized sequences there (FILE.jsonl,
    .jsonl.zst, .jsonl.gz, or a Megatron PREFIX.bin/PREFIX.idx pair) once
    the set is written, for `prepack pack` to pack again (docs/TEXT.md).

    Otherwise `column` holds
    the token ids (a list of integers per row); a `loss_mask` (0/1) or
    `labels` (the token or -100) column, when present, becomes the loss
    mask. A `group` column (any values; null = none) keeps consecutive rows
    with one value in one row, in order, as JSONL's "group" field does.
    pad_multiple plans for context parallelism as `pack --pad-multiple`.
    svg, a path, also draws the report there as `pack --svg`.
    progress: None shows progress on stderr when it is a terminal, as the
    command does (python -m prepack --quiet: False), True always, False
    never: documents, tokens and MB of text read, rows written
    (docs/TEXT.md).
    A file given twice is two inputs, as for `prepack pack` (a group never
    spans the two). Returns the padding report (a PackReport: the plan's
    figures as a dict, sequences, input_tokens, items, tokens, rows,
    lower_bound, efficiency, ...; print(report) shows the table `prepack
    pack` prints, report.svg(path) draws its picture). Bad
    data raises DatasetError naming the input, row group (or batch), row
    and value; a source with no rows, naming its files."""
    _check_options(algo, overlong, token_dtype, shard_rows, shard_bytes)
    _check_ints(max_seq_len=max_seq_len, max_seqs_per_row=max_seqs_per_row,
                seed=seed, rows_per_frame=rows_per_frame,
                shard_rows=shard_rows, shard_bytes=shard_bytes, level=level,
                threads=threads, batch_size=batch_size,
                pad_multiple=pad_multiple)
    shown = Progress(progress)
    text = _text(**text_options)
    with open_saved(save_tokens, text, source) as saved:
        planned = _Planned(source, max_seq_len, column, loss_mask, labels,
                           algo, overlong, max_seqs_per_row, shuffle, seed,
                           token_dtype, tmp_dir, batch_size, read_rows, group,
                           pad_multiple, text, shown, saved)
        try:
            wo = _native.WriterOptions(rows_per_frame, shard_rows,
                                       shard_bytes, level, int(overwrite),
                                       threads, None)
            t0 = time.monotonic()
            written = _write(planned.lib, planned.plan, planned.store,
                             os.fspath(out_dir), planned.options, wo,
                             planned.report, shown)
            planned.timings["write_s"] = time.monotonic() - t0
            _draw(planned, svg)
            saved.commit()
            stats = planned.padding_report("pack", dict(
                dir=os.fspath(out_dir), **written))
        finally:
            planned.close()
    shown.done(f"prepack pack: {stats['rows']:,} rows written to "
               f"{os.fspath(out_dir)}")
    return stats


def _draw(planned, svg):
    if svg is not None:
        write_report_svg(planned.lib, planned.report, planned.plan,
                         planned.store, svg)


def _joins(batch, group, base, previous, breaks=None):
    """Sequence ids (base + row) that join the row before them: equal,
    non-null values of the group column (`previous`: the last value of the
    input's batch before, a list of one, updated), but not a row whose
    `breaks` is set (text: a dropped record between them ended the
    group)."""
    if group not in batch.schema.names:
        previous[0] = None
        return np.zeros(0, np.uint64)
    values = batch.column(group).to_pylist()
    ids = []
    for r, v in enumerate(values):
        if v is not None and v == previous[0] and \
                not (breaks and breaks[r]):
            ids.append(base + r)
        previous[0] = v
    return np.asarray(ids, dtype=np.uint64)


def _text(workers=None, **options):
    """The text options as one _Text, or None without a tokenizer."""
    from . import text as ptext
    unknown = set(options) - set(ptext.OPTIONS)
    if unknown:
        raise TypeError(f"unexpected options {sorted(unknown)}")
    if options.get("tokenizer") is None:
        if options.get("chat_template") is not None:
            raise ValueError("chat_template without a tokenizer")
        return None
    if workers is not None and (not isinstance(workers, numbers.Integral)
                                or isinstance(workers, bool)
                                or not 1 <= workers <= 1024):
        raise ValueError(f"workers must be an integer in 1..1024 (the "
                         f"tokenizing processes), not {workers!r}")
    return _Text(options, workers)


class _Text:
    """Text columns tokenized as they are read (prepack.text): the columns
    a record may hold, and each batch turned into input_ids and
    loss_mask (the group column carried over), on `workers` processes."""

    def __init__(self, options, workers):
        from . import text as ptext
        try:
            encode = ptext.from_options(**options)
        except ptext.TextError as e:
            raise DatasetError(str(e)) from None
        self.pool = ptext.TokenizePool(encode, workers)
        self.error = ptext.TextError
        self.dropped = 0  # records with nothing to train, left out
        self.kept = self.breaks = self.last_group = self.pending = None
        self.columns = (encode.text_field, "prompt", "messages",
                        "conversations")
        self.optional = ("completion", "tools", "chat_template_kwargs")

    def begin_input(self):
        self.last_group = None  # the input's last record's group value

    def tokenized(self, batch, where, group):
        """The batch as input_ids, loss_mask and the group column of the
        records kept. Also self.kept (the rows kept, None when all are)
        and self.breaks (per row kept, whether it may not join the row
        kept before it: a dropped record between them broke the group)."""
        pa = _arrow()
        records = [{k: v for k, v in row.items()
                    if v is not None and k != group}
                   for row in batch.to_pylist()]
        wheres = [where.row(r) for r in range(len(records))]
        self.pending = None
        try:
            flat = self.pool.flat(records, wheres)
        except self.error as e:
            if not e.record:
                raise DatasetError(str(e)) from None
            # the records before it first: the store may find an earlier
            # error in them (an id too wide), which comes first in order
            self.pending = DatasetError(str(e))
            records, wheres = records[:e.record], wheres[:e.record]
            batch = batch.slice(0, e.record)
            flat = self.pool.flat(records, wheres)
        self.dropped += len(flat.dropped)
        kept = np.setdiff1d(np.arange(len(records)), flat.dropped)
        self.kept = kept if len(flat.dropped) else None
        offs = pa.array(flat.offsets, pa.int64())
        names = ["input_ids"]
        arrays = [pa.LargeListArray.from_arrays(offs, flat.ids)]
        if flat.mask is not None:
            names.append("loss_mask")
            arrays.append(pa.LargeListArray.from_arrays(offs, flat.mask))
        self.breaks = None
        if group in batch.schema.names:
            names.append(group)
            column = batch.column(group)
            self.breaks = self._breaks(column.to_pylist(), kept)
            arrays.append(column.take(pa.array(kept)))
        return pa.RecordBatch.from_arrays(arrays, names=names)

    def row(self, i):
        """The batch's row of the i-th record kept."""
        return int(self.kept[i]) if self.kept is not None else i

    def _breaks(self, values, kept):
        """Per record kept: whether some record since the last one kept
        (itself included) does not continue the group before it, as the
        input had them (so dropping a record never joins two groups)."""
        breaks, whole, previous = [], True, self.last_group
        kept = set(kept.tolist())
        for r, v in enumerate(values):
            whole = whole and v is not None and v == previous
            if r in kept:
                breaks.append(not whole)
                whole = True
            previous = v
        self.last_group = previous
        return breaks

    def close(self):
        self.pool.close()


# Records read at a time (read_rows=None): token ids in large batches;
# text in smaller ones, which cost no more (measured: 4,096 against 65,536
# documents, 17.9 s and 17.75 s) and move the progress line every few
# seconds rather than every few minutes
READ_ROWS, TEXT_READ_ROWS = 65536, 4096


def _read_into(lib, store, source, column, loss_mask, labels, read_rows,
               group="group", text=None, progress=None, saved=None,
               empty_ok=False):
    if read_rows is None:
        read_rows = READ_ROWS if text is None else TEXT_READ_ROWS
    try:
        _read_batches(lib, store, source, column, loss_mask, labels,
                      read_rows, group, text, progress or Progress(False),
                      saved, empty_ok)
    finally:
        if text is not None:
            text.close()  # the tokenizing processes


def _read_batches(lib, store, source, column, loss_mask, labels, read_rows,
                  group, text, progress, saved, empty_ok=False):
    progress.stage_begins("read")
    current = None
    previous = [None]
    if text is not None:  # text columns in, ids and a loss mask out
        reading = text.columns, text.optional + (group,)
        column, loss_mask, labels = "input_ids", "loss_mask", None
    else:
        reading = column, (loss_mask, labels, group)
    for key, name, unit, index, first, batch in _batches_with_optional(
            source, *reading, read_rows):
        if key != current:  # the input's place, not its name: a file
            # given twice is two inputs, as for `prepack pack`
            fmt = "jsonl" if unit == "lines" else "arrow"
            lib.prepack_store_begin_input(store, os.fsencode(name),
                                          _native.enum_value("format", fmt))
            current = key
            previous = [None]  # a group never spans inputs
            if saved is not None:
                saved.begin_input()
            if text is not None:
                text.begin_input()
        base = lib.prepack_store_sequence_count(store)
        where = _Where(name, unit, index, first)
        if text is not None:
            progress.text_read(batch, text.columns + ("completion",))
            batch = text.tokenized(batch, where, group)
            if saved is not None:  # save_tokens: _saved_tokens.py
                saved.add(batch, where)
        values, offsets = _list_column(batch, column, where)
        tokens = np.ascontiguousarray(_tokens(values, offsets, where, column))
        mask = _mask(batch, values, offsets, where, loss_mask, labels)
        offs = offsets.astype(np.uint64)
        diag = _native.Diag()
        rc = lib.prepack_store_add_sequences(
            store, tokens.ctypes.data, offs.ctypes.data, len(offsets) - 1,
            mask.ctypes.data if mask is not None else None, ctypes.byref(diag))
        if rc != 0:
            row = text.row(diag.record) if text is not None else diag.record
            raise DatasetError(f"{where.row(row)}: "
                               f"{_native.diag_message(diag, rc)}")
        progress.read(len(offsets) - 1, len(tokens))
        joins = _joins(batch, group, base, previous,
                       text.breaks if text is not None else None)
        if len(joins):
            _check(lib.prepack_store_join_sequences(
                store, joins.ctypes.data, len(joins), ctypes.byref(diag)),
                diag, DatasetError)
        if text is not None and text.pending is not None:
            raise text.pending  # a record after those added
    if empty_ok:  # a scan task's parts: the plan checks whole inputs
        return
    if current is None:
        raise DatasetError(f"{_source_name(source)}: no rows (an empty "
                           f"table)")
    if text is not None and lib.prepack_store_sequence_count(store) == 0:
        raise DatasetError(f"{_source_name(source)}: no sequences: every "
                           f"one of its {text.dropped:,} records was "
                           f"dropped with nothing to train")


def _source_name(source, most=3):
    """The source for a message: its files (the first few), or "the
    table" / "the dataset"."""
    pa = _arrow()
    if isinstance(source, pa.Table):
        return "the table"
    if hasattr(source, "with_format") and hasattr(source, "iter"):
        return "the dataset"
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    names = [os.fspath(p) for p in paths[:most]]
    more = f" and {len(paths) - most} more" if len(paths) > most else ""
    return ", ".join(names) + more if names else "the source (no files)"


def _untokenized(path):
    """Why a token file or JSON lines without a tokenizer are refused,
    and what to run instead."""
    tokens = (f"JSON lines of token ids and Megatron or llm.c token "
              f"files are the prepack command's input (prepack pack "
              f"{path}, or prepack stats; python -m prepack runs it when "
              f"every input is one)")
    if not path.endswith(_JSONL):
        return f"{path}: {tokens}"
    return (f"{path}: JSON lines without a tokenizer: text or "
            f"conversations are tokenized here with one (python -m "
            f"prepack pack {path} --tokenizer PATH, or tokenizer=PATH; "
            f"docs/TEXT.md); {tokens}")


def _batches_with_optional(source, column, optional, read_rows):
    """(input number, name, unit, unit index, first row, batch): the
    source's record batches, holding the token column and whichever of the
    mask columns the source (or each file) has."""
    pa = _arrow()
    if isinstance(source, dict) or type(source).__name__ in (
            "DatasetDict", "IterableDatasetDict"):
        raise DatasetError("a dict of splits: pass one split, e.g. "
                           "ds['train']")
    if hasattr(source, "with_format") and hasattr(source, "iter"):
        # a datasets.Dataset or IterableDataset: its rows in its order
        # (select, shuffle and filter keep an index over the table, so the
        # table alone would be the wrong rows), as Arrow tables
        for piece in _hf_batches(source, column, optional, read_rows):
            yield (0,) + piece
        return
    if isinstance(source, pa.Table):
        wanted = _wanted(source.column_names, column, optional,
                         ("", "the table"))
        for piece in _table_batches(source, wanted, read_rows):
            yield (0,) + piece
        return
    paths = [source] if isinstance(source, (str, os.PathLike)) else list(source)
    for k, item in enumerate(paths):
        path = os.fspath(item)
        tokens = path.endswith(_JSONL + (".bin", ".idx"))  # saved tokens
        if tokens and not isinstance(column, tuple):
            raise DatasetError(_untokenized(path))
        if path.endswith(_JSONL):
            pieces = _jsonl_batches(path, read_rows,
                                    getattr(item, "span", None))
        else:
            pieces = _file_batches(path, column, optional, read_rows)
        for piece in pieces:
            yield (k,) + piece


_JSONL = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.zst",
          ".json.gz")


class _Records:
    """JSON lines' records as _Text reads a batch: to_pylist(), the keys
    (schema.names) and a column by name."""

    def __init__(self, records):
        self.records = records
        names = {k for r in records for k in r}
        self.schema = type("schema", (), {"names": sorted(names)})

    def to_pylist(self):
        return self.records

    def column(self, name):
        pa = _arrow()
        return pa.array([r.get(name) for r in self.records])

    def slice(self, offset, length):
        return _Records(self.records[offset:offset + length])


class TextPart(os.PathLike):
    """A scan task's part of a plain JSON-lines file (prepack.steps): the
    lines that start in bytes [begin, end) (a line starts at 0 or after a
    newline), read as pack_dataset reads the whole file."""

    def __init__(self, path, begin, end):
        self.path, self.span = os.fspath(path), (begin, end)

    def __fspath__(self):
        return self.path


def read_text_parts(store, parts, group="group", read_rows=None,
                    watch=None, **text_options):
    """Steps' hook (prepack.steps.scan_text): `parts` (paths or TextPart)
    tokenized into `store` (a prepack_store pointer) exactly as
    pack_dataset reads them; watch.begin_input() and watch.add(batch,
    where) see each part's start and each tokenized batch (the group
    column kept). A part without a record adds no input."""
    text = _text(**text_options)
    if text is None:
        raise ValueError("read_text_parts needs a tokenizer")
    _read_into(_native.library(), store, list(parts), ("input_ids",),
               "loss_mask", None, read_rows, group, text, None, watch,
               empty_ok=True)


def _line_start(f, at, size):
    """The first line start at or after byte `at` (as the command's
    JSONL reader cuts a file among scan tasks)."""
    if at == 0 or at >= size:
        return min(at, size)
    f.seek(at - 1)
    pos = at - 1
    while True:
        chunk = f.read(1 << 16)
        if not chunk:
            return size
        k = chunk.find(b"\n")
        if k >= 0:
            return pos + k + 1
        pos += len(chunk)


def _span_lines(f, path, span):
    """The lines of plain file f that start in span (begin, end), as
    _numbered gives them, numbered from the file's first line."""
    size = os.fstat(f.fileno()).st_size
    p0, p1 = _line_start(f, span[0], size), _line_start(f, span[1], size)
    f.seek(0)
    before, left = 0, p0
    while left:
        chunk = f.read(min(left, 1 << 20))
        if not chunk:
            break
        before += chunk.count(b"\n")
        left -= len(chunk)
    f.seek(p0)

    def part():
        at = p0
        while at < p1:
            raw = f.readline()
            if not raw:
                return
            at += len(raw)
            yield raw
    for n, line in _numbered(part(), path):
        yield before + n, line


def _jsonl_batches(path, batch_rows, span=None):
    """(path, "lines", 0, line numbers, _Records) of a JSON-lines file
    (plain, .zst or .gz): one object a line, blank lines skipped as the
    command skips them. span: the lines starting in bytes (begin, end) of
    a plain file (a scan task's part, TextPart). A line that is not a JSON
    object (or not UTF-8, or past a damaged stream) is an error after the
    records before it are given, so that an earlier record's error is the
    one named."""
    if not os.path.exists(path):
        raise DatasetError(f"cannot open {path}: no such file")
    records, lines = [], []
    with _open_lines(path) as f:
        numbered = _numbered(f, path) if span is None else \
            _span_lines(f, path, span)
        try:
            for n, line in numbered:
                if not line.strip():
                    continue
                records.append(_json_object(line, path, n))
                lines.append(n)
                if len(records) == batch_rows:
                    yield path, "lines", 0, lines, _Records(records)
                    records, lines = [], []
        except DatasetError:
            if records:
                yield path, "lines", 0, lines, _Records(records)
            raise
    if records:
        yield path, "lines", 0, lines, _Records(records)


def _json_object(line, path, n):
    try:
        obj = json.loads(line)
    except ValueError as e:
        raise DatasetError(f"{path}:{n}: invalid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise DatasetError(f"{path}:{n}: not a JSON object")
    return obj


def _numbered(f, path):
    """(line number, line as text) of f's bytes; a line that is not UTF-8,
    or a damaged compressed stream, a DatasetError naming the line."""
    n = 0
    try:
        for n, raw in enumerate(f, 1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError:
                raise DatasetError(f"{path}:{n}: not UTF-8") from None
            yield n, line
    except Exception as e:  # zstandard.ZstdError, gzip's BadGzipFile
        if isinstance(e, DatasetError):
            raise
        raise DatasetError(f"{path}:{n + 1}: cannot decompress ({e})") \
            from None


def _open_lines(path):
    """A file's bytes, decompressed by its suffix (.zst, .gz), to read a
    line at a time."""
    import io
    try:
        if path.endswith(".zst"):
            import zstandard
            raw = zstandard.ZstdDecompressor().stream_reader(
                open(path, "rb"), closefd=True)
            return io.BufferedReader(raw)
        if path.endswith(".gz"):
            import gzip
            return gzip.open(path, "rb")
        return open(path, "rb")
    except OSError as e:
        raise DatasetError(f"cannot open {path}: {e.strerror}") from None


def _hf_batches(source, column, optional, read_rows):
    names = source.column_names
    if names is not None:
        _wanted(names, column, optional, ("", "the dataset"))
    first = 0
    tables = source.with_format("arrow").iter(batch_size=read_rows)
    for i, table in enumerate(tables):
        wanted = _wanted(table.column_names, column, optional,
                         ("", "the dataset"))
        for b in table.select(wanted).to_batches():
            yield "dataset", "batch", i, first, b
            first += b.num_rows


def _write(lib, plan, store, out_dir, po, wo, report, progress):
    diag = _native.Diag()
    builder, writer = ctypes.c_void_p(), ctypes.c_void_p()
    try:
        _check(lib.prepack_row_builder_create(ctypes.byref(builder), plan,
                                              store, ctypes.byref(diag)), diag)
        dtype = lib.prepack_store_dtype(store)
        _check(lib.prepack_writer_create(ctypes.byref(writer),
                                         os.fsencode(out_dir), po.max_seq_len,
                                         dtype, ctypes.byref(wo),
                                         ctypes.byref(diag)), diag)
        row = _native.Row()
        rows = lib.prepack_plan_row_count(plan)
        for r in range(rows):
            rc = lib.prepack_row_builder_get(builder, r, ctypes.byref(row))
            if rc != 0:
                raise ValueError(f"prepack error {rc} building row {r}")
            _check(lib.prepack_writer_add(writer, ctypes.byref(row),
                                          ctypes.byref(diag)), diag)
            progress.write(r + 1, rows)
        info = _native.ManifestInfo(ctypes.pointer(po), store,
                                    ctypes.pointer(report))
        _check(lib.prepack_writer_finish(writer, ctypes.byref(info),
                                         ctypes.byref(diag)), diag)
        return dict(rows=rows, bytes=lib.prepack_writer_bytes(writer),
                    token_bytes=report.plan.tokens
                    * lib.prepack_dtype_width(dtype))
    finally:
        lib.prepack_writer_free(writer)
        lib.prepack_row_builder_free(builder)
