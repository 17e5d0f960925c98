"""Reading a shard set (docs/FORMAT.md): the manifest, each shard's seek
table, and row i by decompressing the one zstd frame that holds it."""

import errno
import json
import os
import stat
import struct

import msgpack
import numpy as np
import zstandard

try:  # checks the seek table's and the manifest's XXH64 when present
    import xxhash
except ImportError:  # pragma: no cover - Debian's python3-xxhash is optional
    xxhash = None

# The seek table (docs/FORMAT.md): a skippable frame (magic, body size),
# an entry per frame (compressed, decompressed, XXH64 low 32 bits), then
# frame count, descriptor (bit 7: checksums) and the seekable magic.
SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
SEEK_HEADER = struct.Struct("<II")
SEEK_ENTRY = struct.Struct("<III")
SEEK_FOOTER = struct.Struct("<IBI")
SEEK_CHECKSUMS = 0x80


def seek_table_bytes(frames):
    """The seek table's size for this many frames, header included."""
    return SEEK_HEADER.size + frames * SEEK_ENTRY.size + SEEK_FOOTER.size

_DTYPES = {"uint16": np.dtype("<u2"), "uint32": np.dtype("<u4")}
_FIELDS = {"input_ids": None, "cu_seqlens": np.dtype("<i4"),
           "seq_ids": np.dtype("<u8"), "loss_mask": np.dtype("u1"),
           "seq_starts": np.dtype("<u4")}
# a plan-only set's rows (version 2, "storage": "references"): where each
# sequence's tokens are instead of input_ids
_REF_FIELDS = {"ref_source": np.dtype("<u4"), "ref_offset": np.dtype("<u8")}
_REF_BYTES = 12  # per sequence: bounds a row as a token width of 12 would
_SAMPLE_BLOCK, _SAMPLE_BLOCKS = 4096, 64


class ShardSetError(Exception):
    """A shard set that cannot be opened: no manifest, a bad one."""


class CorruptShardError(ShardSetError):
    """Damaged data: the message names the shard, the frame and the cause."""


def _frame_bytes_bound(rows_per_frame, max_seq_len, width):
    """The most bytes a frame of rows_per_frame rows can decompress to (the
    C reader's bound): a seek table claiming more is damaged, and is
    refused before anything is allocated for it."""
    per_token = width + 4 + 8 + 4 + 1  # id, cu, seq id, start, mask
    return rows_per_frame * (max_seq_len * per_token + 4 + 128) + 16


def _uint(where, obj, key, lo, hi):
    """obj[key] as an int in [lo, hi], or ShardSetError naming it."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if type(value) is not int or not lo <= value <= hi:
        raise ShardSetError(f"{where}: {key} must be an integer in "
                            f"{lo}..{hi}, not {value!r}")
    return value


_MIN_FRAME = 9  # the smallest zstd frame: what each seek-table entry costs
_ZSTD_MAX_RATIO = 128 * 1024 // 4  # decompressed bytes per compressed, at most
_STATS_KEYS = ("sequences", "input_tokens", "items", "tokens", "rows",
               "lower_bound", "max_seqs_in_row")
_OVERLONG = ("error", "truncate", "split", "drop")


def shard_name(i):
    """Shard i's file name: the only name entry i of a manifest may give."""
    return f"shard-{i:05d}.zst"


def _is_shard_name(name):
    return (name.startswith("shard-") and name.endswith(".zst")
            and name[6:-4].isdigit() and name[6:-4].isascii()
            and len(name) < 32)


def _check_shard_claims(where, rows, tokens, size, max_seq_len,
                        rows_per_frame):
    """A shard's rows and tokens against what its bytes and L allow (the C
    reader's rule): nothing is sized or looped over from a count before
    this."""
    if rows == 0:
        raise ShardSetError(f"{where}: holds no rows (a writer never "
                            f"writes an empty shard)")
    frames = -(-rows // rows_per_frame)
    fixed = seek_table_bytes(0)
    if size < fixed or frames > (size - fixed) // (SEEK_ENTRY.size
                                                   + _MIN_FRAME):
        raise ShardSetError(f"{where}: {rows} rows need {frames} frames, "
                            f"more than its {size} bytes can hold")
    if not rows <= tokens <= rows * max_seq_len:
        raise ShardSetError(f"{where}: {tokens} tokens in {rows} rows of 1 "
                            f"to {max_seq_len} tokens")


def _check_inputs(where, m):
    """(has inputs, their sequences, their tokens); first_sequence of each
    follows the ones before it."""
    inputs = m.get("inputs", [])
    if not isinstance(inputs, list):
        raise ShardSetError(f"{where}: \"inputs\" must be an array")
    sequences = tokens = 0
    for i, e in enumerate(inputs):
        at = f"{where}: input {i}"
        seqs = _uint(at, e, "sequences", 0, 2**64 - 1)
        toks = _uint(at, e, "tokens", 0, 2**64 - 1)
        first = _uint(at, e, "first_sequence", 0, 2**64 - 1)
        if first != sequences:
            raise ShardSetError(f"{at}: first_sequence {first}, the inputs "
                                f"before it hold {sequences}")
        sequences += seqs
        tokens += toks
    return bool(inputs), sequences, tokens


def _check_stats(where, m, rows, tokens, max_seq_len, inputs):
    """The packing report's figures that follow from the totals and L (the
    C reader's checks); None when the manifest has no stats."""
    st = m.get("stats")
    if st is None:
        return None
    packed = st.get("packed") if isinstance(st, dict) else None
    figures = {}
    for key in _STATS_KEYS:
        figures[key] = _uint(f"{where}: stats", st, key, 0, 2**64 - 1)
    for key in ("rows", "slots", "pad_tokens"):
        figures["packed." + key] = _uint(f"{where}: stats.packed", packed,
                                         key, 0, 2**64 - 1)
    has_inputs, in_seqs, in_tokens = inputs
    slots = rows * max_seq_len
    want = {"rows": rows, "tokens": tokens, "packed.rows": rows,
            "packed.slots": slots, "packed.pad_tokens": slots - tokens}
    if has_inputs:
        want.update(sequences=in_seqs, input_tokens=in_tokens)
    for key, value in want.items():
        if figures[key] != value:
            raise ShardSetError(f"{where}: stats.{key} is {figures[key]}, "
                                f"the rest of the manifest makes it {value}")
    least = -(-tokens // max_seq_len)
    if not least <= figures["lower_bound"] <= rows:
        raise ShardSetError(f"{where}: stats.lower_bound "
                            f"{figures['lower_bound']} is outside "
                            f"{least}..{rows}")
    if (figures["items"] < rows or figures["max_seqs_in_row"] >
            figures["items"] or (rows and not figures["max_seqs_in_row"])):
        raise ShardSetError(f"{where}: stats.items and max_seqs_in_row do "
                            f"not fit its rows")
    return figures


def _pread_all(fd, n, at):
    """n bytes at `at` of fd, fewer only where the file ends."""
    parts = []
    while n > 0:
        chunk = os.pread(fd, min(n, 1 << 24), at)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
        at += len(chunk)
    return b"".join(parts)


def sample_xxh64_fd(fd, size):
    """An open file's sampled XXH64 (docs/FORMAT.md, version 2): the whole
    file up to 64 blocks of 4096 bytes, else those 64 blocks at
    floor(b * (size - 4096) / 63), concatenated."""
    h = xxhash.xxh64()
    if size <= _SAMPLE_BLOCK * _SAMPLE_BLOCKS:
        h.update(_pread_all(fd, size, 0))
    else:
        for b in range(_SAMPLE_BLOCKS):
            at = b * (size - _SAMPLE_BLOCK) // (_SAMPLE_BLOCKS - 1)
            h.update(_pread_all(fd, _SAMPLE_BLOCK, at))
    return h.hexdigest()


def sample_xxh64(path):
    """A file's sampled XXH64, by path (see sample_xxh64_fd)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sample_xxh64_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def _fd_xxh64(fd, size):
    h = xxhash.xxh64()
    at = 0
    while at < size:
        chunk = os.pread(fd, min(1 << 20, size - at), at)
        if not chunk:
            break
        h.update(chunk)
        at += len(chunk)
    return h.hexdigest()


def _is_hex64(v):
    return isinstance(v, str) and len(v) == 16 and all(
        c in "0123456789abcdef" for c in v)


def _check_sources(where, m):
    """A plan-only set's "sources", each checked for type and range."""
    sources = m.get("sources")
    if not isinstance(sources, list):
        raise ShardSetError(f"{where}: a set of references needs a "
                            f"\"sources\" array")
    # a source per input (each token file is one), so the inputs bound
    # them; without inputs, the tokens the rows could reference
    inputs, tokens = m.get("inputs"), m.get("tokens")
    most = len(inputs) if isinstance(inputs, list) and inputs else \
        max(1, tokens if type(tokens) is int else 0)
    if len(sources) > most:
        raise ShardSetError(f"{where}: {len(sources)} sources, more than "
                            f"the {most} a set of its inputs or tokens can "
                            f"reference")
    out = []
    for i, e in enumerate(sources):
        at = f"{where}: source {i}"
        if not isinstance(e, dict) or not isinstance(e.get("path"), str) \
                or not e["path"].startswith("/") or "\0" in e["path"]:
            raise ShardSetError(f"{at}: path must be an absolute path")
        width = e.get("width")
        if width not in (1, 2, 4, 8) or type(width) is not int:
            raise ShardSetError(f"{at}: width must be 1, 2, 4 or 8 bytes")
        if type(e.get("signed")) is not bool:
            raise ShardSetError(f"{at}: signed must be true or false")
        _uint(at, e, "bytes", 0, 2**64 - 1)
        if not _is_hex64(e.get("sample_xxh64")):
            raise ShardSetError(f"{at}: sample_xxh64 must be 16 lowercase "
                                f"hex digits")
        if "index" in e:
            idx = e["index"]
            if not isinstance(idx, str) or not idx.startswith("/") \
                    or not _is_hex64(e.get("index_xxh64")):
                raise ShardSetError(f"{at}: index needs an absolute path, "
                                    f"index_bytes and index_xxh64")
            _uint(at, e, "index_bytes", 0, 2**64 - 1)
        out.append(e)
    return out


def _changed(path, what, now, then):
    return CorruptShardError(f"{path}: changed since the set was packed "
                             f"({what} {now}, the manifest records {then}); "
                             f"pack it again")


def _open_regular(path, what):
    """A manifest's path opened once, only when it is a regular file (a
    FIFO would block the open, hence O_NONBLOCK): its descriptor and
    stat. Everything after is checked and read through that descriptor,
    so a path swapped after the check cannot change what is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        hint = (" (a reader holds each referenced file open: raise the "
                "open-file limit, ulimit -n or resource.setrlimit)"
                if err.errno == errno.EMFILE else "")
        raise ShardSetError(f"{path}: cannot open the {what} this set "
                            f"references: {err.strerror}{hint}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CorruptShardError(f"{path}: the {what} this set references is "
                                f"not a regular file")
    return fd, st


def _open_shard(path):
    """A shard file, opened only when it is a regular file (never
    blocking: a FIFO named like a shard is refused, not waited on)."""
    fd, _ = _open_regular(path, "shard")
    return os.fdopen(fd, "rb")


# Megatron's dtype codes: (bytes per id, signed); floats have none
_MEGATRON_DTYPES = {1: (1, False), 2: (1, True), 3: (2, True), 4: (4, True),
                    5: (8, True), 8: (2, False)}
# llm.c headers: (magic, version) -> bytes per id
_LLMC = {(20240520, 1): 2, (20240801, 7): 4}


def _width_contradicted(e, file, width, signed):
    return CorruptShardError(
        f"{e['path']}: the manifest says width {e['width']}"
        f"{' signed' if e['signed'] else ''}, but {file} says {width}-byte "
        f"{'signed' if signed else 'unsigned'} ids")


_IDX_HEADER = 34  # magic, version, dtype, count, documents


def _index_count(e, index_fd):
    """A Megatron index's entry count, its dtype (the header is hashed
    with the whole index, so it binds the width to the identity) checked
    against the manifest's width."""
    h = _pread_all(index_fd, _IDX_HEADER, 0)
    size = e["index_bytes"]
    got = _MEGATRON_DTYPES.get(h[17]) if len(h) == _IDX_HEADER and \
        h[:9] == b"MMIDIDX\0\0" else None
    count = struct.unpack_from("<Q", h, 18)[0] if got else 0
    if got is None or count > (size - _IDX_HEADER) // 12:
        raise CorruptShardError(f"{e['index']}: not a Megatron index of "
                                f"integer ids")
    if got != (e["width"], e["signed"]):
        raise _width_contradicted(e, e["index"], *got)
    return count


def _check_width(e, fd):
    """A file without an index: an llm.c header (inside the first
    sampled block) decides its width, and it is unsigned: the C reader's
    rule."""
    if e["bytes"] >= 1024:
        magic, version = struct.unpack("<II", _pread_all(fd, 8, 0))
        w = _LLMC.get((magic, version))
        if w and (w != e["width"] or e["signed"]):
            raise _width_contradicted(e, "its llm.c header", w, False)
    if e["signed"]:
        raise _width_contradicted(e, "a file without an index", e["width"],
                                  False)


class _Sources:
    """A plan-only set's files, each opened once, checked through its
    descriptor and read with os.pread (never a map: a file cut short
    after the open is an error, not SIGBUS). Entries naming one file (one
    device and inode) share its descriptor and hash: a file listed many
    times is hashed once."""

    def __init__(self, entries, spans):
        self.fds, self.files = [], []
        self.indexes = []  # Megatron: (fd, entries, first id, ids)
        self._owned = []
        try:
            seen, seen_index = {}, {}
            for e, span in zip(entries, spans):
                self._open(e, span, seen, seen_index)
        except BaseException:
            self.close()
            raise

    def _open_once(self, path, what, size, seen, hash_fd):
        """path opened, its size checked, and hashed by hash_fd; a file
        already open (same device and inode) lends its descriptor and
        hash. Returns (fd, stat, digest)."""
        fd, st = _open_regular(path, what)
        key = (st.st_dev, st.st_ino)
        if key in seen:
            os.close(fd)
            fd = seen[key][0]
        else:
            self._owned.append(fd)
        if st.st_size != size:
            raise _changed(path, "bytes", st.st_size, size)
        if key not in seen:
            seen[key] = (fd, hash_fd(fd, st.st_size))
        return fd, st, seen[key][1]

    def _open(self, e, span, seen, seen_index):
        path = e["path"]
        fd, st, digest = self._open_once(path, "input", e["bytes"], seen,
                                         sample_xxh64_fd)
        if digest != e["sample_xxh64"]:
            raise _changed(path, "sampled xxh64", int(digest, 16),
                           int(e["sample_xxh64"], 16))
        if st.st_size % e["width"]:
            raise CorruptShardError(
                f"{path}: {st.st_size} bytes is not a whole number of the "
                f"manifest's {e['width']}-byte tokens (width)")
        index = None
        if "index" in e:
            index_fd, count = self._check_index(e, seen_index)
            if span is None:
                raise CorruptShardError(
                    f"{path}: a Megatron source needs its input listed "
                    f"(\"inputs\", one per source) to check its references")
            index = (index_fd, count) + span
        else:
            _check_width(e, fd)
        self.indexes.append(index)
        kind = "i" if e["signed"] else "u"
        self.fds.append(fd)
        self.files.append((st.st_size, np.dtype(f"<{kind}{e['width']}")))

    def _check_index(self, e, seen_index):
        """The index's size, whole hash (once per file) and dtype; held
        open (one descriptor a file) for the references' checks."""
        fd, _, digest = self._open_once(e["index"], "index",
                                        e["index_bytes"], seen_index,
                                        _fd_xxh64)
        if digest != e["index_xxh64"]:
            raise _changed(e["index"], "xxh64", int(digest, 16),
                           int(e["index_xxh64"], 16))
        return fd, _index_count(e, fd)

    def check_entry(self, s, seq_id, at, start, n):
        """Whether a Megatron source's reference is where its index puts
        it: sequence seq_id is entry seq_id - first, its chunk from token
        `start` lies at pointer + start x width within the entry's length.
        None when it is, else why not (the C reader's rule)."""
        fd, count, first, ids = self.indexes[s]
        width = self.files[s][1].itemsize
        e = seq_id - first
        if not (0 <= e < ids and e < count):
            return "its sequence id is not one of this input's"
        size = _pread_all(fd, 4, _IDX_HEADER + 4 * e)
        ptr = _pread_all(fd, 8, _IDX_HEADER + 4 * count + 8 * e)
        if len(size) != 4 or len(ptr) != 8:
            raise ShardSetError(f"cannot read a Megatron index entry: cut "
                                f"short since the set was opened?")
        if start + n > struct.unpack("<I", size)[0]:
            return "its tokens run past its index entry's length"
        if at != struct.unpack("<Q", ptr)[0] + start * width:
            return "its offset is not where its index entry puts it"
        return None

    def close(self):
        for fd in self._owned:
            os.close(fd)
        self._owned = []

    def __del__(self):
        try:
            self.close()
        except (OSError, TypeError):  # at interpreter exit
            pass


class _Shard:
    def __init__(self, path, rows, size, rows_per_frame, frame_bound):
        self.path = path
        self.rows = rows
        self.frames = []  # (offset, compressed, decompressed, checksum)
        with _open_shard(path) as f:
            f.seek(0, os.SEEK_END)
            actual = f.tell()
            if actual != size:
                raise CorruptShardError(
                    f"{path}: {actual} bytes, the manifest says {size}")
            if size < seek_table_bytes(0):
                raise CorruptShardError(f"{path}: too short for a seek table")
            f.seek(size - SEEK_FOOTER.size)
            n, desc, magic = SEEK_FOOTER.unpack(f.read(SEEK_FOOTER.size))
            if magic != SEEKABLE_MAGIC or desc != SEEK_CHECKSUMS:
                raise CorruptShardError(f"{path}: no seek table at the end")
            table = seek_table_bytes(n)
            want = -(-rows // rows_per_frame)
            if table > size or n != want:
                raise CorruptShardError(
                    f"{path}: seek table lists {n} frames, {rows} rows need "
                    f"{want}")
            f.seek(size - table)
            head = f.read(SEEK_HEADER.size)
            body = f.read(SEEK_ENTRY.size * n)
        skip_magic, frame_size = SEEK_HEADER.unpack(head)
        if skip_magic != SKIPPABLE_MAGIC or frame_size != table - SEEK_HEADER.size:
            raise CorruptShardError(f"{path}: bad seek table frame header")
        offset = 0
        for i in range(n):
            c, d, s = SEEK_ENTRY.unpack_from(body, SEEK_ENTRY.size * i)
            if d > frame_bound:
                raise CorruptShardError(
                    f"{path}: frame {i} claims {d} bytes, more than "
                    f"{rows_per_frame} rows can hold")
            if d > c * _ZSTD_MAX_RATIO:  # a block: >= 4 bytes, <= 128 KiB
                raise CorruptShardError(
                    f"{path}: frame {i} claims {d} bytes from {c} "
                    f"compressed, more than zstd can expand to")
            self.frames.append((offset, c, d, s))
            offset += c
        if offset != size - table:
            raise CorruptShardError(
                f"{path}: frames cover {offset} bytes, the file holds "
                f"{size - table} before its seek table")


def _json_int(text):
    """A JSON integer as the C reader's parser (simdjson) takes it: one
    past 64 bits makes the document invalid, wherever it is."""
    v = int(text)
    if not -2**63 <= v < 2**64:
        raise ValueError(f"number {text} does not fit 64 bits")
    return v


def _json_float(text):
    v = float(text)
    if v in (float("inf"), float("-inf")):
        raise ValueError(f"number {text} is out of range")
    return v


# ~150 bytes a shard: what no set needs (the C reader's bound)
_MAX_MANIFEST_BYTES = 256 << 20


def _read_manifest(path):
    """manifest.json's bytes: opened once (O_NONBLOCK: a FIFO cannot
    block), checked to be a regular file of a manifest's size through
    that descriptor, and read from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ShardSetError(f"{path}: no manifest (not a shard set, or its "
                            f"writing was interrupted)") from None
    except OSError as err:
        raise ShardSetError(f"cannot read {path}: {err.strerror}") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise ShardSetError(f"{path}: not a regular file")
        if st.st_size > _MAX_MANIFEST_BYTES:
            raise ShardSetError(f"{path}: holds {st.st_size} bytes, more "
                                f"than a manifest can "
                                f"({_MAX_MANIFEST_BYTES})")
        return _pread_all(fd, st.st_size, 0)
    finally:
        os.close(fd)


class ShardSet:
    """A shard set directory. `len(s)`, `s[i]` (a row: a dict of numpy
    arrays `input_ids`, `cu_seqlens`, `seq_ids`, and `loss_mask` /
    `seq_starts` when the set has them), iteration, and `manifest`.

    backend="auto" reads rows through libprepack's C reader when the
    library loads (backend="c" requires it), else through this module's
    own reader (backend="python", an independent implementation of
    docs/FORMAT.md); both check everything and give the same rows. The
    manifest is checked here in both cases. The last frame read is cached,
    so reading rows in order decompresses each frame once."""

    def __init__(self, path, backend="auto"):
        if backend not in ("auto", "c", "python"):
            raise ValueError(f"backend must be 'auto', 'c' or 'python', not "
                             f"{backend!r}")
        self.path = os.fspath(path)
        manifest_path = os.path.join(self.path, "manifest.json")
        try:
            self.manifest = json.loads(_read_manifest(manifest_path),
                                       parse_int=_json_int,
                                       parse_float=_json_float)
        except ValueError as e:
            raise ShardSetError(f"{manifest_path}: invalid JSON: {e}")
        m = self.manifest
        if not isinstance(m, dict) or m.get("format") != "prepack-shards" \
                or m.get("version") not in (1, 2) \
                or type(m.get("version")) is not int:
            raise ShardSetError(f"{manifest_path}: not a prepack shard set "
                                f"manifest (versions 1 and 2)")
        storage = m.get("storage", "tokens") if m["version"] >= 2 \
            else "tokens"
        if storage not in ("tokens", "references"):
            raise ShardSetError(f"{manifest_path}: storage must be \"tokens\" "
                                f"or \"references\", not {storage!r}")
        self.references = storage == "references"
        self.sources = (_check_sources(manifest_path, m) if self.references
                        else [])
        # every value checked for type and range: a manifest is input too
        self.max_seq_len = _uint(manifest_path, m, "max_seq_len", 1, 1 << 24)
        self.rows_per_frame = _uint(manifest_path, m, "rows_per_frame", 1,
                                    2**32 - 1)
        if not isinstance(m.get("token_dtype"), str) or \
                m["token_dtype"] not in _DTYPES:
            raise ShardSetError(f"{manifest_path}: token_dtype must be uint16 "
                                f"or uint32, not {m.get('token_dtype')!r}")
        self.token_dtype = _DTYPES[m["token_dtype"]]
        overlong = m.get("overlong", "error")
        if overlong not in _OVERLONG:
            raise ShardSetError(f"{manifest_path}: overlong must be error, "
                                f"truncate, split or drop")
        self.overlong = overlong
        self.max_seqs_per_row = (_uint(manifest_path, m, "max_seqs_per_row",
                                       0, 2**32 - 1)
                                 if "max_seqs_per_row" in m else 0)
        # context parallelism: readers pad each sequence to a multiple
        self.pad_multiple = (_uint(manifest_path, m, "pad_multiple", 2,
                                   self.max_seq_len)
                             if "pad_multiple" in m else 1)
        if self.max_seq_len % self.pad_multiple:
            raise ShardSetError(f"{manifest_path}: pad_multiple "
                                f"{self.pad_multiple} does not divide "
                                f"max_seq_len {self.max_seq_len}")
        entries = m.get("shards")
        if not isinstance(entries, list):
            raise ShardSetError(f"{manifest_path}: shards must be a list")
        bound = _frame_bytes_bound(self.rows_per_frame, self.max_seq_len,
                                   _REF_BYTES if self.references
                                   else self.token_dtype.itemsize)
        self._shards = []
        self._first = []
        rows = tokens = 0
        claims = []
        for i, e in enumerate(entries):
            where = f"{manifest_path}: shard entry {i}"
            if not isinstance(e, dict):
                raise ShardSetError(f"{where} is not an object")
            name = e.get("file")
            # shard i is shard-NNNNN.zst for i: a name listed twice, out of
            # order or skipped is a manifest that lies about the set
            if name != shard_name(i):
                raise ShardSetError(f"{where}: names {name!r}, shard {i} is "
                                    f"{shard_name(i)}")
            digest = e.get("xxh64")
            if not (isinstance(digest, str) and len(digest) == 16
                    and all(c in "0123456789abcdef" for c in digest)):
                raise ShardSetError(f"{where}: xxh64 must be 16 lowercase hex "
                                    f"digits")
            n = _uint(where, e, "rows", 0, 2**64 - 1)
            t = _uint(where, e, "tokens", 0, 2**64 - 1)
            size = _uint(where, e, "bytes", 0, 2**64 - 1)
            _check_shard_claims(where, n, t, size, self.max_seq_len,
                                self.rows_per_frame)
            claims.append((name, n, t, size))
            rows += n
            tokens += t
        for key, value in (("rows", rows), ("tokens", tokens)):
            if m.get(key) != value or type(m.get(key)) is not int:
                raise ShardSetError(
                    f"{manifest_path}: says {m.get(key)!r} {key}, its shards "
                    f"{value}")
        inputs = _check_inputs(manifest_path, m)
        self.stats = _check_stats(manifest_path, m, rows, tokens,
                                  self.max_seq_len, inputs)
        if not entries and not (self.stats["items"] == 0 if self.stats
                                else inputs[0] and inputs[1] == 0):
            raise ShardSetError(
                f"{manifest_path}: lists no shards, yet does not say it was "
                f"packed from nothing (stats.items 0, or inputs of no "
                f"sequences): a truncated or edited manifest?")
        listed = {name for name, *_ in claims}
        for name in sorted(os.listdir(self.path)):
            if _is_shard_name(name) and name not in listed:
                raise ShardSetError(f"{os.path.join(self.path, name)}: not "
                                    f"listed in the manifest (left by "
                                    f"another run?)")
        rows = 0
        self._paths = [os.path.join(self.path, name) for name, *_ in claims]
        for path, (_, n, _, _) in zip(self._paths, claims):
            if not os.path.exists(path):
                raise ShardSetError(f"{path}: missing")
            self._first.append(rows)
            rows += n
        self._rows = rows
        # rows through libprepack's reader when it loads ("auto") or on
        # request ("c"), which reads and checks the seek tables itself;
        # this module's own reader otherwise
        self._c = None
        if backend != "python":
            from ._creader import CReader
            try:
                self._c = CReader(self.path)
            except RuntimeError:  # no libprepack
                if backend == "c":
                    raise
        self.backend = "c" if self._c else "python"
        if not self._c:
            if self.references and xxhash is None:  # pragma: no cover
                raise ShardSetError(f"{manifest_path}: a plan-only set's "
                                    f"inputs are checked with xxhash: "
                                    f"install it")
            # one input per source: its sequence ids (_check_inputs
            # checked each entry)
            inputs = m.get("inputs") or []
            spans = [(e["first_sequence"], e["sequences"]) for e in inputs] \
                if len(inputs) == len(self.sources) \
                else [None] * len(self.sources)
            self._files = _Sources(self.sources, spans)
            self._shards = [_Shard(path, n, size, self.rows_per_frame, bound)
                            for path, (_, n, _, size) in zip(self._paths,
                                                             claims)]
        self._dctx = zstandard.ZstdDecompressor()
        self._cache_key = None
        self._cache = None

    def __len__(self):
        return self._rows

    def __iter__(self):
        for i in range(self._rows):
            yield self[i]

    def __getitem__(self, i):
        if i < 0:
            i += self._rows
        if not 0 <= i < self._rows:
            raise IndexError(f"row {i} of {self._rows}")
        if self._c:
            return self._c.row(i)
        lo, hi = 0, len(self._first)
        while hi - lo > 1:  # the shard holding row i
            mid = (lo + hi) // 2
            if self._first[mid] <= i:
                lo = mid
            else:
                hi = mid
        local = i - self._first[lo]
        frame = local // self.rows_per_frame
        rows = self._frame(lo, frame)
        return self._row(rows[local % self.rows_per_frame], lo, frame)

    def _frame(self, s, f):
        if self._cache_key == (s, f):
            return self._cache
        shard = self._shards[s]
        offset, comp, decomp, checksum = shard.frames[f]
        where = f"{shard.path}: frame {f}"
        with _open_shard(shard.path) as fh:
            fh.seek(offset)
            data = fh.read(comp)
        try:
            # decompress() sizes its output from the frame header's content
            # size when there is one, whatever max_output_size says: a
            # damaged header must not choose the allocation.
            declared = zstandard.frame_content_size(data)
            if declared not in (-1, decomp):
                raise CorruptShardError(
                    f"{where}: the zstd frame says {declared} bytes, its seek "
                    f"table entry {decomp}")
            # python-zstandard 0.20's decompress() reads one frame and needs
            # its size: both come from the seek table.
            raw = self._dctx.decompress(data, max_output_size=decomp)
        except zstandard.ZstdError as e:
            raise CorruptShardError(f"{where}: {e}") from None
        if len(raw) != decomp or (
                xxhash and xxhash.xxh64_intdigest(raw) & 0xFFFFFFFF != checksum):
            raise CorruptShardError(
                f"{where}: content does not match its seek table entry")
        try:
            rows = msgpack.unpackb(raw, raw=False, use_list=True)
        except Exception as e:
            raise CorruptShardError(f"{where}: not msgpack: {e}") from None
        expect = min(self.rows_per_frame,
                     shard.rows - f * self.rows_per_frame)
        if not isinstance(rows, list) or len(rows) != expect:
            raise CorruptShardError(f"{where}: not an array of {expect} rows")
        self._cache_key, self._cache = (s, f), rows
        return rows

    def _row(self, obj, s, f):
        where = f"{self._paths[s]}: frame {f}"
        if not isinstance(obj, dict):
            raise CorruptShardError(f"{where}: a row is not a map")
        row = {}
        fields = dict(_FIELDS, **_REF_FIELDS) if self.references else _FIELDS
        for key, dtype in fields.items():
            value = obj.get(key)
            if value is None:
                continue
            if not isinstance(value, bytes):
                raise CorruptShardError(f"{where}: {key} is not a bin")
            dtype = dtype or self.token_dtype
            if len(value) % dtype.itemsize:
                raise CorruptShardError(f"{where}: {key} has a partial value")
            row[key] = np.frombuffer(value, dtype=dtype)
        if self.references:
            row.pop("input_ids", None)
            self._fetch_tokens(row, where)
        for key in ("input_ids", "cu_seqlens", "seq_ids"):
            if key not in row:
                raise CorruptShardError(f"{where}: a row lacks {key}")
        cu, t = row["cu_seqlens"], len(row["input_ids"])
        width = self.token_dtype.itemsize
        other = 6 - width  # 2 <-> 4
        nbytes = t * width
        count = len(row["loss_mask"]) if "loss_mask" in row else (
            int(cu[-1]) if len(cu) else 0)
        if count != t and count > 0 and count * other == nbytes:
            raise CorruptShardError(
                f"{where}: input_ids holds {nbytes} bytes, which agrees with "
                f"the row's other fields as uint{8 * other} tokens, not "
                f"uint{8 * width}: the manifest's token_dtype does not match "
                f"the shards")
        k = len(cu) - 1
        if (k < 1 or cu[0] != 0 or cu[-1] != t or (cu[1:] <= cu[:-1]).any()
                or t > self.max_seq_len or len(row["seq_ids"]) != k
                or ("loss_mask" in row and len(row["loss_mask"]) != t)
                or ("seq_starts" in row and len(row["seq_starts"]) != k)):
            raise CorruptShardError(f"{where}: a row's fields disagree")
        m = self.pad_multiple
        if m > 1:
            lengths = np.diff(cu.astype(np.int64))
            padded = int(((lengths + m - 1) // m).sum()) * m
            if padded > self.max_seq_len:
                raise CorruptShardError(
                    f"{where}: its sequences padded to multiples of {m} take "
                    f"{padded} tokens, more than max_seq_len "
                    f"{self.max_seq_len}")
        return row

    def _fetch_tokens(self, row, where):
        """A plan-only row's input_ids, read from the referenced files;
        ref_source and ref_offset are taken out of the row."""
        src, off = row.pop("ref_source", None), row.pop("ref_offset", None)
        cu = row.get("cu_seqlens")
        if src is None or off is None or cu is None:
            raise CorruptShardError(f"{where}: a row lacks ref_source, "
                                    f"ref_offset or cu_seqlens")
        k = len(cu) - 1
        if k < 1 or len(src) != k or len(off) != k or cu[0] != 0 \
                or (cu[1:] <= cu[:-1]).any() or cu[-1] > self.max_seq_len:
            raise CorruptShardError(f"{where}: a row's fields disagree")
        out = np.empty(int(cu[-1]), self.token_dtype)
        ids, starts = row.get("seq_ids"), row.get("seq_starts")
        if ids is None or len(ids) != k or (starts is not None
                                            and len(starts) != k):
            raise CorruptShardError(f"{where}: a row's fields disagree")
        for j in range(k):
            s, at, n = int(src[j]), int(off[j]), int(cu[j + 1] - cu[j])
            start = int(starts[j]) if starts is not None else 0
            out[cu[j]:cu[j + 1]] = self._fetch(s, at, n, where, j,
                                               int(ids[j]), start)
        row["input_ids"] = out

    def _fetch(self, s, at, n, where, j, seq_id, start):
        """Sequence j's n tokens at byte `at` of source s: the reference
        checked to name a source and lie inside its file on a token
        boundary, each id checked to fit token_dtype (the C reader's
        rules and classes of error)."""
        if s >= len(self._files.fds):
            raise CorruptShardError(f"{where}: sequence {j} refers to source "
                                    f"{s}, outside the manifest's sources")
        size, dtype = self._files.files[s]
        path = self.sources[s]["path"]
        if at % dtype.itemsize:
            raise CorruptShardError(
                f"{where}: sequence {j} starts at byte {at} of {path}, not a "
                f"multiple of its {dtype.itemsize}-byte tokens")
        if at > size or (size - at) // dtype.itemsize < n:
            raise CorruptShardError(
                f"{where}: sequence {j} refers to {n} tokens at byte {at} of "
                f"source {s}, outside {path}")
        why = self._files.check_entry(s, seq_id, at, start, n) \
            if self._files.indexes[s] else None
        if why:
            raise CorruptShardError(f"{where}: sequence {j} (id {seq_id}, "
                                    f"byte {at} of {path}): {why}")
        data = _pread_all(self._files.fds[s], n * dtype.itemsize, at)
        if len(data) != n * dtype.itemsize:
            raise ShardSetError(f"{path}: cannot read {n} tokens at byte "
                                f"{at} (for {where}): the file ends first: "
                                f"cut short since the set was opened?")
        ids = np.frombuffer(data, dtype=dtype)
        if n and (dtype.kind == "i" or dtype.itemsize >
                  self.token_dtype.itemsize):
            lo, hi = int(ids.min()), int(ids.max())
            most = np.iinfo(self.token_dtype).max
            if lo < 0 or hi > most:
                k = int(np.argmax((ids < 0) | (ids > most)))
                raise CorruptShardError(
                    f"{where}: sequence {j}'s token {k} is {int(ids[k])} at "
                    f"byte {at + k * dtype.itemsize} of {path}, which does "
                    f"not fit token_dtype {self.token_dtype.name}")
        return ids.astype(self.token_dtype)

    def verify(self):
        """Checks what the C reader's verify does: every shard file's XXH64
        against the manifest, every row, each shard's tokens, the stats
        only the rows can prove (items, max_seqs_in_row, sequence ids
        below stats.sequences), max_seqs_per_row, and no writer's file
        the manifest does not list. Raises CorruptShardError at the first
        problem."""
        if xxhash is None:  # pragma: no cover
            raise ShardSetError("verify() needs the xxhash module")
        for entry, path in zip(self.manifest["shards"], self._paths):
            h = xxhash.xxh64()
            with _open_shard(path) as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
            if h.hexdigest() != entry["xxh64"]:
                raise CorruptShardError(
                    f"{path}: xxh64 {h.hexdigest()}, the manifest "
                    f"says {entry['xxh64']}")
        for name in sorted(os.listdir(self.path)):
            if name.endswith(".tmp") and (name[:-4] == "manifest.json"
                                          or _is_shard_name(name[:-4])):
                raise CorruptShardError(
                    f"{os.path.join(self.path, name)}: not listed in the "
                    f"manifest (left by another run?)")
        items = most = 0
        sequences = self.stats["sequences"] if self.stats else None
        for s, entry in enumerate(self.manifest["shards"]):
            tokens = 0
            for i in range(self._first[s], self._first[s] + entry["rows"]):
                row = self[i]
                k = len(row["seq_ids"])
                tokens += len(row["input_ids"])
                items += k
                most = max(most, k)
                if self.max_seqs_per_row and k > self.max_seqs_per_row:
                    raise CorruptShardError(
                        f"{self._paths[s]}: row {i}: {k} sequences, "
                        f"max_seqs_per_row {self.max_seqs_per_row}")
                if sequences is not None and k and \
                        int(row["seq_ids"].max()) >= sequences:
                    raise CorruptShardError(
                        f"{self._paths[s]}: row {i}: sequence id "
                        f"{int(row['seq_ids'].max())}, the manifest says "
                        f"{sequences} sequences were packed")
            if tokens != entry["tokens"]:
                raise CorruptShardError(
                    f"{self._paths[s]}: its rows hold {tokens} tokens, "
                    f"the manifest says {entry['tokens']}")
        manifest = os.path.join(self.path, "manifest.json")
        if self.stats and items != self.stats["items"]:
            raise CorruptShardError(f"{manifest}: stats.items is "
                                    f"{self.stats['items']}, the rows hold "
                                    f"{items}")
        if self.stats and most != self.stats["max_seqs_in_row"]:
            raise CorruptShardError(f"{manifest}: stats.max_seqs_in_row is "
                                    f"{self.stats['max_seqs_in_row']}, the "
                                    f"rows' most is {most}")
