"""A plan-only set's sources (docs/FORMAT.md, version 2): the token files
its rows refer to, each checked to be the file that was packed (size and
sampled XXH64), opened once (entries naming one file share it), its width
checked against its Megatron index or llm.c header, and each reference
checked against the index before its tokens are read."""

import os
import struct

import numpy as np

from ._errors import CorruptShardError, ShardSetError
from ._files import open_regular, pread_all

try:  # the sources' identity is their sampled XXH64
    import xxhash
except ImportError:  # pragma: no cover - Debian's python3-xxhash is optional
    xxhash = None

_SAMPLE_BLOCK, _SAMPLE_BLOCKS = 4096, 64


def sample_xxh64_fd(fd, size):
    """An open file's sampled XXH64 (docs/FORMAT.md, version 2): the whole
    file up to 64 blocks of 4096 bytes, else those 64 blocks at
    floor(b * (size - 4096) / 63), concatenated."""
    h = xxhash.xxh64()
    if size <= _SAMPLE_BLOCK * _SAMPLE_BLOCKS:
        h.update(pread_all(fd, size, 0))
    else:
        for b in range(_SAMPLE_BLOCKS):
            at = b * (size - _SAMPLE_BLOCK) // (_SAMPLE_BLOCKS - 1)
            h.update(pread_all(fd, _SAMPLE_BLOCK, at))
    return h.hexdigest()


def sample_xxh64(path):
    """A file's sampled XXH64, by path (see sample_xxh64_fd)."""
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        return sample_xxh64_fd(fd, os.fstat(fd).st_size)
    finally:
        os.close(fd)


def fd_xxh64(fd, size):
    """An open file's whole XXH64 (a Megatron index's identity)."""
    h = xxhash.xxh64()
    at = 0
    while at < size:
        chunk = os.pread(fd, min(1 << 20, size - at), at)
        if not chunk:
            break
        h.update(chunk)
        at += len(chunk)
    return h.hexdigest()


def _changed(path, what, now, then):
    return CorruptShardError(f"{path}: changed since the set was packed "
                             f"({what} {now}, the manifest records {then}); "
                             f"pack it again")


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
    h = pread_all(index_fd, _IDX_HEADER, 0)
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
        magic, version = struct.unpack("<II", pread_all(fd, 8, 0))
        w = _LLMC.get((magic, version))
        if w and (w != e["width"] or e["signed"]):
            raise _width_contradicted(e, "its llm.c header", w, False)
    if e["signed"]:
        raise _width_contradicted(e, "a file without an index", e["width"],
                                  False)


class Sources:
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
        fd, st = open_regular(path, what)
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
                                        fd_xxh64)
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
        size = pread_all(fd, 4, _IDX_HEADER + 4 * e)
        ptr = pread_all(fd, 8, _IDX_HEADER + 4 * count + 8 * e)
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
