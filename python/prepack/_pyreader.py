"""The pure-Python row reader (docs/FORMAT.md alone: numpy, zstandard,
msgpack, xxhash), independent of the C one: each shard's seek table, row i
by decompressing the one zstd frame that holds it, each row's fields
checked, and a plan-only set's tokens read from its sources. The tests
read every fixture through both readers and require the same rows."""

import os

import msgpack
import numpy as np
import zstandard

from ._errors import CorruptShardError, ShardSetError
from ._files import open_shard, pread_all
from ._format import (FIELDS, FIRST_ID_CODE_VERSION, ID_TABLE_MAX,
                      INDEX_FRAME_HEAD, INDEX_HEAD, INDEX_MAGIC,
                      MalformedMap, REF_FIELDS,
                      SEEK_CHECKSUMS, SEEK_ENTRY, SEEK_FOOTER, SEEK_HEADER,
                      SEEKABLE_MAGIC, SKIPPABLE_MAGIC, TOKEN_DTYPES,
                      ZSTD_MAGIC,
                      decode_id_code_rows, decode_id_codes, decode_ids,
                      index_frame_bytes, row_map, seek_table_bytes,
                      token_width, zstd_expansion_bound)
from ._sources import Sources

try:  # checks each frame's XXH64 (low 32 bits) when present
    import xxhash
except ImportError:  # pragma: no cover - Debian's python3-xxhash is optional
    xxhash = None


# an index that is whole only at the other token width (reader.c's words)
DTYPE_EDITED = ("the manifest's token_dtype does not match the shards (their "
                "index holds ids of the other width)")


class _Shard:
    """A shard's seek table, read and checked against the manifest's
    claims and the frame bound: `frames`, each one's (offset, compressed,
    decompressed, checksum)."""

    def __init__(self, path, rows, size, rows_per_frame, frame_bound,
                 table_width=0):
        """table_width: the token width of a version 4 set's id table
        (0: a set without an index)."""
        self.path = path
        self.rows = rows
        self.frames = []  # (offset, compressed, decompressed, checksum)
        with open_shard(path) as f:
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
            if d > zstd_expansion_bound(c):  # a block: >= 4 bytes, <= 128 KiB
                raise CorruptShardError(
                    f"{path}: frame {i} claims {d} bytes from {c} "
                    f"compressed, more than zstd can expand to")
            self.frames.append((offset, c, d, s))
            offset += c
        # version 4: the index frame between the frames and the seek table,
        # its size a whole number of ids (read with the shard's first frame)
        self.index_at, gap = offset, size - table - offset
        def fits(width):
            least = index_frame_bytes(0, width, n)
            return gap >= least and (gap - least) % width == 0 and \
                (gap - least) // width <= ID_TABLE_MAX
        if table_width and not fits(table_width) and fits(6 - table_width):
            raise CorruptShardError(f"{path}: {DTYPE_EDITED}")
        if not (gap == 0 if not table_width else fits(table_width)):
            raise CorruptShardError(
                f"{path}: frames cover {offset} bytes, the file holds "
                f"{size - table} before its seek table"
                + (", which must be the frames and the shard's index"
                   if table_width else ""))
        self.index_bytes, self.table_width = gap, table_width
        self.table = self.hashes = None  # the index's, once read

    def read_index(self):
        """A version 4 shard's index, read and checked against its hash on
        first use: the id table (a numpy array), and each frame's hash."""
        if self.table is not None:
            return
        w, frames = self.table_width, len(self.frames)
        with open_shard(self.path) as f:
            f.seek(self.index_at)
            data = f.read(self.index_bytes)
        if len(data) != self.index_bytes:
            raise CorruptShardError(f"{self.path}: cannot read its index")
        magic, body = INDEX_FRAME_HEAD.unpack_from(data)
        n, nframes, digest = INDEX_HEAD.unpack_from(data,
                                                    INDEX_FRAME_HEAD.size)
        rest = data[INDEX_FRAME_HEAD.size + INDEX_HEAD.size:]
        if magic == INDEX_MAGIC and n * w + 8 * frames != len(rest) and \
                n * (6 - w) + 8 * frames == len(rest):
            raise CorruptShardError(f"{self.path}: {DTYPE_EDITED}")
        if magic != INDEX_MAGIC or body != len(data) - INDEX_FRAME_HEAD.size \
                or nframes != frames or n * w + 8 * frames != len(rest):
            raise CorruptShardError(
                f"{self.path}: no index before the seek table, or a bad "
                f"index frame header")
        if xxhash and xxhash.xxh64_intdigest(rest) != digest:
            raise CorruptShardError(
                f"{self.path}: its index does not match its hash")
        self.hashes = np.frombuffer(rest, "<u8", frames, n * w).tolist()
        self.table = np.frombuffer(rest, f"<u{w}", n).astype(np.uint32)


def _zstd_frame_size(data):
    """The size of the one zstd frame `data` must be (its header, blocks
    and checksum, walked by the block headers), or None when data does not
    begin with a whole zstd frame. A shard's frame is exactly one: zstd
    would read on into a second frame or over a skippable one."""
    if len(data) < 4 or int.from_bytes(data[:4], "little") != ZSTD_MAGIC:
        return None
    try:
        at = zstandard.frame_header_size(data)
        checksum = zstandard.get_frame_parameters(data).has_checksum
    except zstandard.ZstdError:
        return None
    last = False
    while not last:
        if at + 3 > len(data):
            return None
        head = int.from_bytes(data[at:at + 3], "little")
        last, kind, size = head & 1, (head >> 1) & 3, head >> 3
        if kind == 3:  # reserved
            return None
        at += 3 + (1 if kind == 1 else size)  # an RLE block holds a byte
    at += 4 if checksum else 0
    return at if at <= len(data) else None


class _FrameStream:
    """One frame's rows, decompressed and unpacked as far as asked
    (rows_through), its whole content checked against the seek table
    entry (size and XXH64) once decompressed to its end, and every row
    found before a row is handed out then. zstd and msgpack are fed CHUNK
    bytes at a time, so no damaged header sizes an allocation."""

    CHUNK = 1 << 16

    def __init__(self, dctx, data, entry, expect, where, skip=0):
        """skip: rows before this one are passed over, not built (None in
        `rows`): a random read's."""
        _, _, self.decomp, self.checksum = entry
        self.expect, self.where, self.skip = expect, where, skip
        self.rows = []
        # PyReader's, for a frame read in order: its rows' ids, decoded
        # together
        self.ids = None
        self._source = dctx.stream_reader(data, read_across_frames=False)
        # its counts bounded by the content's size, as unpackb's by its input
        # row_map refuses keys that are not UTF-8 strings, and keys twice,
        # as reader.c does; a string elsewhere need not be UTF-8 (C never
        # reads one), so its bytes are kept, not refused
        self._unpacker = msgpack.Unpacker(raw=False, use_list=True,
                                          max_buffer_size=max(self.decomp, 1),
                                          strict_map_key=False,
                                          unicode_errors="surrogateescape",
                                          object_pairs_hook=row_map)
        self._hash = xxhash.xxh64() if xxhash else None
        self._read = 0  # decompressed bytes so far
        self._header_read = False  # the frame's array header

    def rows_through(self, local):
        """The rows, at least as far as row `local` (< expect); all of
        them, checked, once the content has been decompressed to its end
        (as reader.c's stream_row: a row is not handed out from a frame
        known whole but not yet checked)."""
        while len(self.rows) <= local:
            if not self._next_object() and not self._feed():
                raise CorruptShardError(
                    f"{self.where}: not a msgpack array of {self.expect} "
                    f"rows: its content ends inside row {len(self.rows)}")
        if self._source is None and len(self.rows) < self.expect:
            return self.rows_through(self.expect - 1)
        if len(self.rows) == self.expect:
            self.read_all_bytes()
            if self._unpacker.tell() != self._read:
                raise CorruptShardError(
                    f"{self.where}: not a msgpack array of {self.expect} "
                    f"rows: bytes follow its last row")
        return self.rows

    def _next_object(self):
        """The array header or the next row out of the unpacker: False
        when it needs more bytes."""
        try:
            if not self._header_read:
                n = self._unpacker.read_array_header()
                if n != self.expect:
                    raise ValueError(f"an array of {n}")
                self._header_read = True
            elif len(self.rows) < self.skip:
                self._unpacker.skip()  # a quarter of unpack's time
                self.rows.append(None)
            else:
                self.rows.append(self._unpacker.unpack())
            return True
        except msgpack.OutOfData:
            return False
        except Exception as e:
            raise CorruptShardError(
                f"{self.where}: not a msgpack array of {self.expect} rows "
                f"(row {len(self.rows)}: {str(e) or type(e).__name__})") from None

    def read_all_bytes(self):
        """Decompress to the frame's end, unpacking nothing more, and check
        its size and checksum against the seek table entry."""
        while self._feed():
            pass

    def _feed(self):
        """The next chunk of content into the unpacker: False at the end
        (checked then)."""
        if self._source is None:
            return False
        try:  # asks for one byte more than the entry allows, to see it
            chunk = self._source.read(min(self.CHUNK,
                                          self.decomp - self._read + 1))
        except zstandard.ZstdError as e:
            raise CorruptShardError(f"{self.where}: {e}") from None
        self._read += len(chunk)
        if self._read > self.decomp or not chunk:
            self._finish()
            return False
        if self._hash:
            self._hash.update(chunk)
        self._unpacker.feed(chunk)
        if self._read == self.decomp:
            self._finish()  # all there: checked now, not on the next call
        return True

    def _finish(self):
        """The content's end: its size and checksum against the seek table
        entry (a byte past the entry's size, asked for, must not come)."""
        try:
            more = self._source.read(1) if self._read == self.decomp else b""
        except zstandard.ZstdError as e:
            raise CorruptShardError(f"{self.where}: {e}") from None
        finally:
            self._source = None
        if more or self._read != self.decomp or (
                self._hash and self._hash.intdigest() & 0xFFFFFFFF
                != self.checksum):
            raise CorruptShardError(f"{self.where}: content does not match "
                                    f"its seek table entry")


class PyReader:
    """Rows of a checked Manifest (_manifest.py): row(i), and frame(s, f)
    (shard s's frame f as msgpack decoded it). The last frame read is
    cached, so reading rows in order decompresses each frame once."""

    def __init__(self, manifest):
        m = manifest
        if m.references and xxhash is None:  # pragma: no cover
            raise ShardSetError(f"{m.manifest_path}: a plan-only set's "
                                f"inputs are checked with xxhash: "
                                f"install it")
        self.references, self.sources = m.references, m.sources
        self.max_seq_len, self.pad_multiple = m.max_seq_len, m.pad_multiple
        self.rows_per_frame, self.token_dtype = m.rows_per_frame, \
            m.token_dtype
        self.version = m.version
        self._first = m.first
        self._paths = [path for path, *_ in m.shards]
        self._files = Sources(m.sources, m.source_spans())
        coded = m.version >= FIRST_ID_CODE_VERSION and not m.references
        self._shards = [_Shard(path, n, size, m.rows_per_frame,
                               m.frame_bound,
                               m.token_dtype.itemsize if coded else 0)
                        for path, n, _, size in m.shards]
        self._dctx = zstandard.ZstdDecompressor()
        self._cache_key = None
        self._cache = None
        self._damaged = set()  # (shard, frame)s found damaged: read whole

    def row(self, i):
        """Row i (0 <= i < rows): a dict of numpy arrays."""
        lo, hi = 0, len(self._first)
        while hi - lo > 1:  # the shard holding row i
            mid = (lo + hi) // 2
            if self._first[mid] <= i:
                lo = mid
            else:
                hi = mid
        local = i - self._first[lo]
        frame, local = divmod(local, self.rows_per_frame)
        rows = self._rows_of(lo, frame, local)
        return self._row(rows[local], lo, frame, self._ids_in_order(local))

    def frame(self, s, f):
        """Shard s's frame f: its rows as msgpack decodes them, checked
        against the seek table."""
        return self._rows_of(s, f, None)

    def _rows_of(self, s, f, local):
        """Shard s's frame f's rows, at least as far as row `local` (None:
        all of them), as reader.c's stream_row reads them. A version 4
        frame, whose compressed bytes the shard's index vouches for, is
        decompressed and unpacked only as far as the rows asked for, and
        picks up there for later rows: half a frame a random row on
        average; the rows before the one a fresh stream starts at are
        passed over, and asking for one of them starts the frame again. A
        read from row 0 (in order), of an older frame or of one found
        damaged before reads the frame to its end and checks it whole
        first; so does a read that reaches the last row."""
        try:
            if self._cache_key != (s, f):
                self._start_frame(s, f, local, skip=local or 0)
            elif self._cache.skip and (local is None or
                                       local < self._cache.skip):
                # a row passed over: the frame again, keeping every row
                # this time (read backwards, it starts once, not each row)
                self._start_frame(s, f, local, skip=0)
            return self._cache.rows_through(
                self._cache.expect - 1 if local is None else local)
        except CorruptShardError:
            self._damaged.add((s, f))
            self._cache_key, self._cache = None, None  # not left half read
            raise

    def _start_frame(self, s, f, local, skip):
        """Frame f of shard s as the frame being read from row `local`
        (None: all of it), passing over the rows before `skip` (_rows_of's
        rules)."""
        self._cache_key, self._cache = None, None
        shard = self._shards[s]
        data = self._frame_bytes(shard, f)
        expect = min(self.rows_per_frame,
                     shard.rows - f * self.rows_per_frame)
        whole = local in (0, None) or not shard.table_width or \
            (s, f) in self._damaged
        stream = _FrameStream(self._dctx, data, shard.frames[f], expect,
                              f"{shard.path}: frame {f}",
                              skip=0 if whole else skip)
        if whole:
            stream.read_all_bytes()  # checked whole, every row found,
            stream.rows_through(expect - 1)  # before any is handed out
        if local == 0 and shard.table_width:
            stream.ids = self._decode_in_groups(stream.rows, s)
        self._cache_key, self._cache = (s, f), stream

    def _ids_in_order(self, local):
        """Row `local`'s ids of the frame being read, when it is read in
        order: its codes decoded with its neighbours' when the frame was
        started, or None (the row decodes its own, and says what is
        wrong)."""
        ids = self._cache.ids
        return ids[local] if ids else None

    # Rows decoded together up to this many bytes of codes: numpy's cost a
    # call is paid once for the lot, and its arrays stay in the cache
    # (0.55x the time of a row at a time on debian-doc, 0.75x a whole
    # frame at once).
    GROUP_BYTES = 1 << 16

    def _decode_in_groups(self, rows, s):
        """Every row's ids (None for a row to decode alone: a row that is
        not a map with an input_ids bin, or in a group that did not
        decode), rows decoded GROUP_BYTES at a time."""
        values = [r.get("input_ids") if isinstance(r, dict) else None
                  for r in rows]
        ids, i = [None] * len(rows), 0
        while i < len(rows):
            j, size = i, 0
            while j < len(rows) and isinstance(values[j], bytes) and \
                    (j == i or size + len(values[j]) <= self.GROUP_BYTES):
                size += len(values[j])
                j += 1
            if j > i:
                got = decode_id_code_rows(
                    values[i:j], self.token_dtype,
                    [self._row_tokens(r) for r in rows[i:j]],
                    self._shards[s].table)
                ids[i:j] = got or [None] * (j - i)
            i = max(j, i + 1)
        return ids

    def _row_tokens(self, obj):
        """A row's token count as its cu_seqlens says (0: none it can
        hold), which its input_ids must decode to."""
        cu = obj.get("cu_seqlens") if isinstance(obj, dict) else None
        if not isinstance(cu, bytes) or not cu or len(cu) % 4:
            return 0
        tokens = int(np.frombuffer(cu, FIELDS["cu_seqlens"])[-1])
        return tokens if 0 < tokens <= self.max_seq_len else 0

    def _frame_bytes(self, shard, f):
        """Frame f's compressed bytes, checked against the shard's index
        (version 4) and against what its seek table entry says they hold."""
        offset, comp, decomp, _ = shard.frames[f]
        where = f"{shard.path}: frame {f}"
        if shard.table_width:
            shard.read_index()
        with open_shard(shard.path) as fh:
            fh.seek(offset)
            data = fh.read(comp)
        if shard.table_width and xxhash and \
                xxhash.xxh64_intdigest(data) != shard.hashes[f]:
            raise CorruptShardError(f"{where}: its bytes do not match the "
                                    f"shard's index")
        if _zstd_frame_size(data) != len(data):
            raise CorruptShardError(f"{where}: not one zstd frame, as its "
                                    f"seek table entry says")
        try:
            declared = zstandard.frame_content_size(data)
        except zstandard.ZstdError as e:
            raise CorruptShardError(f"{where}: {e}") from None
        if declared not in (-1, decomp):
            raise CorruptShardError(
                f"{where}: the zstd frame says {declared} bytes, its seek "
                f"table entry {decomp}")
        return data

    def _row(self, obj, s, f, ids=None):
        """Row obj of frame f of shard s, its fields as numpy arrays, each
        checked as the C reader checks it (reader.c's copy_fields); ids:
        its input_ids already decoded with its frame's."""
        where = f"{self._paths[s]}: frame {f}"
        row = self._fields(obj, where, s, ids)
        if self.references:
            row.pop("input_ids", None)
            self._fetch_tokens(row, where)
        for key in ("input_ids", "cu_seqlens", "seq_ids"):
            if key not in row:
                raise CorruptShardError(f"{where}: a row lacks {key}")
        self._check_dtype(row, where)
        self._check_shape(row, where)
        # the arrays view the cached frame's bytes (read-only, shared by
        # its rows): the row owns writable copies, as the C reader's do
        return {k: v if v.flags.owndata else v.copy() for k, v in row.items()}

    def _fields(self, obj, where, s, ids=None):
        """The msgpack map's known fields as arrays: bins of whole values
        (input_ids as `ids` when given)."""
        if isinstance(obj, MalformedMap):
            raise CorruptShardError(f"{where}: {obj.why}")
        if not isinstance(obj, dict):
            raise CorruptShardError(f"{where}: a row is not a map")
        row = {}
        fields = dict(FIELDS, **REF_FIELDS) if self.references else FIELDS
        for key, dtype in fields.items():
            value = obj.get(key)  # a bin or absent (row_map's check)
            if value is None:
                continue
            if dtype is None:  # input_ids: decoded once cu_seqlens is read
                continue
            if len(value) % dtype.itemsize:
                raise CorruptShardError(f"{where}: {key} has a partial value")
            row[key] = np.frombuffer(value, dtype=dtype)
        value = obj.get("input_ids")
        if ids is not None:
            row["input_ids"] = ids
        elif value is not None and not self.references:
            tokens = self._row_tokens(obj)
            if self.version >= FIRST_ID_CODE_VERSION:
                ids = decode_id_codes(value, self.token_dtype, tokens,
                                      self._shards[s].table)
                if ids is None:
                    raise CorruptShardError(
                        f"{where}: input_ids is not the id codes of the "
                        f"row's tokens")
            else:
                ids = decode_ids(value, self.token_dtype, tokens,
                                 self.version)
            if ids is None:
                raise CorruptShardError(f"{where}: input_ids has a partial "
                                        f"value")
            row["input_ids"] = ids
        return row

    def _check_dtype(self, row, where):
        """Tokens whose byte count fits the other token dtype and not the
        manifest's: a manifest edited to the wrong token_dtype, said so
        rather than as fields that disagree."""
        cu, t = row["cu_seqlens"], len(row["input_ids"])
        mine = self.token_dtype.name
        other = next(d for d in TOKEN_DTYPES if d != mine)
        nbytes = t * token_width(mine)
        count = len(row["loss_mask"]) if "loss_mask" in row else (
            int(cu[-1]) if len(cu) else 0)
        if count != t and count > 0 and count * token_width(other) == nbytes:
            raise CorruptShardError(
                f"{where}: input_ids holds {nbytes} bytes, which agrees with "
                f"the row's other fields as {other} tokens, not "
                f"{mine}: the manifest's token_dtype does not match "
                f"the shards")

    def _check_shape(self, row, where):
        """cu_seqlens from 0 strictly up to the row's tokens (at most L,
        and at most L with each sequence padded to pad_multiple), and
        every other field the length it must be."""
        cu, t = row["cu_seqlens"], len(row["input_ids"])
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
        data = pread_all(self._files.fds[s], n * dtype.itemsize, at)
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
