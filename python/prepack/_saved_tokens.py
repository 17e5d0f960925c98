"""Keeping a text pack's tokenized sequences (`save_tokens=PATH`,
`--save-tokens PATH`, docs/TEXT.md "Keep the tokens"), so that packing
again at another L reads tokens instead of tokenizing:

- PATH ending .jsonl, .jsonl.zst or .jsonl.gz: one line a sequence, in
  input order, `{"input_ids": [...]}`, with `"loss_mask": [...]` where the
  batch had a mask and `"group": ...` where the record had one: what
  `prepack pack` reads (docs/CLI.md, jsonl);
- PATH ending .bin or .idx: the Megatron pair PREFIX.bin + PREFIX.idx
  (MMIDIDX version 1, uint16 ids while every id is below 65536, else
  int32; one document a sequence, as Megatron's preprocess_data.py writes
  unsplit documents). It holds no loss mask and no groups: a set with
  either is refused, naming the .jsonl.zst to use instead.

Nothing half-written: each file is written to `.NAME.prepack-XXXXXX`
beside it (created O_EXCL|O_NOFOLLOW), fsync'd, and renamed over NAME
only when the whole pack (or stats) succeeded; any failure unlinks the
temporaries. NAME may be an existing regular file (replaced, as --svg
replaces its file); a symbolic link or anything else at NAME is refused
before anything is read, and the rename replaces a name, never follows
it."""
import json
import os
import secrets
import stat
import struct

import numpy as np

from . import _optional

_JSONL = (".jsonl", ".jsonl.zst", ".jsonl.gz")
_MEGATRON = (".bin", ".idx")
# Megatron's index (megatron/core/datasets/indexed_dataset.py): magic,
# version 1, its dtype codes for the two token widths used here
_MAGIC = b"MMIDIDX\x00\x00"
_UINT16, _INT32 = 8, 4
_PIECE = 1 << 22  # tokens formatted as JSON at a time


def open_saved(path, text, source=None):
    """What _read_into hands each tokenized batch to: a _Saved writing
    path, or a _NotSaved when path is None. ValueError before anything
    is read for a path without a tokenizer (`text` None), a suffix that
    names no format, one of the source's files (it would be replaced), or
    a link or non-file at a name to be written."""
    if path is None:
        return _NotSaved()
    path = os.fspath(path)
    if text is None:
        raise ValueError(f"save_tokens {path}: keeps the sequences a text "
                         f"pack tokenized, so it needs a tokenizer (token "
                         f"inputs are already tokens)")
    inputs = [source] if isinstance(source, (str, os.PathLike)) else \
        source if isinstance(source, (list, tuple)) else []
    for p in inputs:
        if isinstance(p, (str, os.PathLike)) and os.path.exists(p) and \
                os.path.exists(path) and os.path.samefile(p, path):
            raise ValueError(f"save_tokens {path} is an input: the saved "
                             f"tokens would replace it")
    if path.endswith(_JSONL):
        return _SavedJsonl(path)
    if path.endswith(_MEGATRON):
        return _SavedMegatron(path[:-4])
    raise ValueError(f"save_tokens {path}: name a JSON lines file (.jsonl, "
                     f".jsonl.zst, .jsonl.gz) or a Megatron pair (.bin or "
                     f".idx: PREFIX.bin and PREFIX.idx are written)")


class _NotSaved:
    """No save_tokens: every call does nothing."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def begin_input(self):
        pass

    def add(self, batch, where):
        pass

    def commit(self):
        pass


def _check_target(path):
    """A name to be replaced: absent, or a regular file; never a link."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return
    if stat.S_ISLNK(st.st_mode):
        raise ValueError(f"{path} is a symbolic link: saved tokens are "
                         f"written to a file, never through a link")
    if not stat.S_ISREG(st.st_mode):
        raise ValueError(f"{path} is not a regular file")


class _Temp:
    """`.NAME.prepack-XXXXXX` beside path, created new (never through a
    link), renamed over path by commit, unlinked by discard."""

    def __init__(self, path):
        self.path = path
        folder, name = os.path.split(path)
        for _ in range(100):
            self.tmp = os.path.join(folder, f".{name}.prepack-"
                                    f"{secrets.token_hex(3)}")
            try:
                self.fd = os.open(self.tmp, os.O_RDWR | os.O_CREAT |
                                  os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                                  0o666)
                break
            except FileExistsError:
                continue
            except OSError as e:
                raise ValueError(f"cannot create {path}: {e.strerror}") \
                    from None
        else:
            raise ValueError(f"cannot create {path}: no free temporary "
                             f"name beside it")
        self.file = os.fdopen(self.fd, "wb")

    def sync(self):
        self.file.flush()
        os.fsync(self.file.fileno())
        self.file.close()

    def rename(self):
        os.rename(self.tmp, self.path)  # replaces a name, follows none
        self.tmp = None

    def discard(self):
        if not self.file.closed:
            self.file.close()
        if self.tmp is not None:
            try:
                os.unlink(self.tmp)
            except OSError:
                pass
            self.tmp = None


def _sync_folder(path):
    fd = os.open(os.path.dirname(path) or ".", os.O_RDONLY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class _Saved:
    """The common part: the files (targets checked, temporaries made),
    commit after the whole run, discard otherwise (on leaving `with`)."""

    def __init__(self, paths):
        for p in paths:
            _check_target(p)
        self.temps = []
        try:
            for p in paths:
                self.temps.append(_Temp(p))
        except BaseException:
            self._discard()
            raise
        self.committed = False

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        if not self.committed:
            self._discard()
        return False

    def _discard(self):
        for t in self.temps:
            t.discard()

    def begin_input(self):
        pass

    def _finish(self):
        """Writes what is left before the files are synced."""

    def commit(self):
        """Every file synced, then renamed (the last one last), then the
        folder synced: called once the pack or stats succeeded."""
        try:
            self._finish()
            for t in self.temps:
                t.sync()
            for t in self.temps:
                t.rename()
            _sync_folder(self.temps[-1].path)
        except OSError as e:
            raise ValueError(f"writing {self.temps[-1].path} failed: "
                             f"{e.strerror}") from None
        self.committed = True


def _rows(batch):
    """A tokenized batch's ids, offsets, mask (or None) as numpy, and its
    group values (or None)."""
    ids = batch.column("input_ids")
    offsets = np.asarray(ids.offsets, dtype=np.int64)
    span = slice(offsets[0], offsets[-1])  # a sliced batch's own values
    values = ids.values.to_numpy(zero_copy_only=False)[span]
    mask = None
    if "loss_mask" in batch.schema.names:
        mask = batch.column("loss_mask").values.to_numpy(
            zero_copy_only=False)[span]
    names = [n for n in batch.schema.names
             if n not in ("input_ids", "loss_mask")]
    groups = batch.column(names[0]).to_pylist() if names else None
    return values, offsets - offsets[0], mask, groups


class _SavedJsonl(_Saved):
    """JSON lines, compressed by the name's suffix."""

    def __init__(self, path):
        super().__init__([path])
        self.path = path
        t = self.temps[0]
        self.out = t.file
        if path.endswith(".zst"):
            import zstandard
            self.out = zstandard.ZstdCompressor(level=3).stream_writer(
                t.file, closefd=False)
        elif path.endswith(".gz"):
            import gzip
            self.out = gzip.GzipFile(fileobj=t.file, mode="wb",
                                     compresslevel=6, mtime=0)
        self.last_group = None
        self.new_input = False

    def begin_input(self):
        self.new_input = True

    def add(self, batch, where):
        """The batch's lines, a piece of about _PIECE tokens at a time
        (the text of a piece is all that is held)."""
        values, offsets, mask, groups = _rows(batch)
        if groups is not None:
            self._check_groups(groups, where)
        n, r = len(offsets) - 1, 0
        while r < n:
            end = int(np.searchsorted(offsets, offsets[r] + _PIECE,
                                      side="right")) - 1
            end = min(max(end, r + 1), n)
            a, b = offsets[r], offsets[end]
            self._write(values[a:b], offsets[r:end + 1] - a,
                        None if mask is None else mask[a:b],
                        None if groups is None else groups[r:end])
            r = end

    def _write(self, values, offsets, mask, groups):
        """Rows' lines, formatted by Arrow's kernels (a number a token
        costs no Python call): the ids and the mask cast to text, joined
        with commas a row, then each row's line assembled."""
        pa = _optional.require("pyarrow", "text", "save_tokens")
        pc = _optional.require("pyarrow.compute", "text", "save_tokens")
        offs = pa.array(offsets, pa.int64())

        def constant(text):
            return pa.scalar(text, pa.large_string())

        def joined(a):
            text = pc.cast(pa.array(a), pa.large_string())
            return pc.binary_join(pa.LargeListArray.from_arrays(offs, text),
                                  constant(","))
        parts = [constant('{"input_ids":['), joined(values), constant("]")]
        if mask is not None:
            parts += [constant(',"loss_mask":['), joined(mask),
                      constant("]")]
        if groups is not None:
            parts.append(pa.array(
                ["" if g is None else ',"group":' + json.dumps(g)
                 for g in groups], pa.large_string()))
        lines = pc.binary_join_element_wise(*parts, constant("}\n"),
                                            constant(""))
        ends = np.frombuffer(lines.buffers()[1], np.int64)[
            lines.offset:lines.offset + len(lines) + 1]
        data = lines.buffers()[2]
        if data is not None:
            self.out.write(memoryview(data)[ends[0]:ends[-1]])

    def _check_groups(self, groups, where):
        """Groups JSON lines can hold (an integer or a string), and none
        that a saved file would join across two inputs."""
        for r, g in enumerate(groups):
            if g is not None and (isinstance(g, bool) or
                                  not isinstance(g, (int, str))):
                raise ValueError(f"{where.row(r)}: group {g!r}: saved "
                                 f"tokens ({self.path}) hold groups that "
                                 f"are integers or strings")
        if self.new_input and groups and groups[0] is not None and \
                groups[0] == self.last_group:
            raise ValueError(f"{where.row(0)}: group {groups[0]!r} is the "
                             f"last group of the input before; one saved "
                             f"file ({self.path}) would join the two: give "
                             f"the inputs distinct group values")
        self.new_input = False
        self.last_group = groups[-1] if groups else self.last_group

    def _finish(self):
        if self.out is not self.temps[0].file:
            self.out.close()  # the compressor's end; the file stays open


class _SavedMegatron(_Saved):
    """PREFIX.bin and PREFIX.idx, as Megatron's IndexedDatasetBuilder
    writes them: uint16 ids while each is below 65536, the .bin rewritten
    as int32 once one is not."""

    def __init__(self, prefix):
        self.prefix = prefix
        super().__init__([prefix + ".bin", prefix + ".idx"])
        self.dtype = np.dtype("<u2")
        self.lengths = []
        self.written = 0  # tokens in the .bin

    def add(self, batch, where):
        values, offsets, mask, groups = _rows(batch)
        if mask is not None:
            raise ValueError(f"{where}: the sequences carry a loss mask "
                             f"(assistant-only or completion-only loss), "
                             f"and a Megatron .bin/.idx pair ({self.prefix}"
                             f".bin) holds none: save them to a .jsonl.zst "
                             f"file instead")
        if groups is not None and any(g is not None for g in groups):
            r = next(r for r, g in enumerate(groups) if g is not None)
            raise ValueError(f"{where.row(r)}: a group, and a Megatron "
                             f".bin/.idx pair ({self.prefix}.bin) holds "
                             f"none: save to a .jsonl.zst file instead")
        if self.dtype.itemsize == 2 and values.size and \
                int(values.max()) > 0xFFFF:
            self._widen()
        self.temps[0].file.write(values.astype(self.dtype).tobytes())
        self.written += int(values.size)
        self.lengths.append(np.diff(offsets))

    def _widen(self):
        """The uint16 ids written so far, rewritten as int32."""
        old = self.temps[0]
        old.file.flush()
        new = _Temp(old.path)
        try:
            chunk = 1 << 22
            for at in range(0, self.written, chunk):
                n = min(chunk, self.written - at)
                raw = os.pread(old.file.fileno(), 2 * n, 2 * at)
                new.file.write(np.frombuffer(raw, "<u2").astype("<i4")
                               .tobytes())
        except BaseException:
            new.discard()
            raise
        old.discard()
        self.temps[0] = new
        self.dtype = np.dtype("<i4")

    def _finish(self):
        lengths = np.concatenate(self.lengths).astype("<i4") \
            if self.lengths else np.zeros(0, "<i4")
        n = len(lengths)
        pointers = np.zeros(n, "<i8")
        if n:
            np.cumsum(lengths[:-1].astype("<i8") * self.dtype.itemsize,
                      out=pointers[1:])
        code = _UINT16 if self.dtype.itemsize == 2 else _INT32
        f = self.temps[1].file
        f.write(_MAGIC + struct.pack("<QBQQ", 1, code, n, n + 1))
        f.write(lengths.tobytes())
        f.write(pointers.tobytes())
        f.write(np.arange(n + 1, dtype="<i8").tobytes())
