"""The shard set's on-disk format (docs/FORMAT.md), the Python twin of
src/shards/shard_format.h: the seek table's magic numbers and structs, the
bounds a frame's size must keep, the file names, each row field's dtype,
and the token widths. tests/python/test_package_shape.py compares the
numbers and bounds with the header."""

import struct

import numpy as np

# The seek table: a skippable frame (magic, body size), an entry per frame
# (compressed, decompressed, XXH64 low 32 bits), then frame count,
# descriptor (bit 7: checksums) and the seekable magic.
ZSTD_MAGIC = 0xFD2FB528  # a zstd frame's first four bytes
SKIPPABLE_MAGIC = 0x184D2A5E
SEEKABLE_MAGIC = 0x8F92EAB1
SEEK_HEADER = struct.Struct("<II")
SEEK_ENTRY = struct.Struct("<III")
SEEK_FOOTER = struct.Struct("<IBI")
SEEK_CHECKSUMS = 0x80
MIN_FRAME_BYTES = 9  # the smallest zstd frame: what each entry costs
REF_BYTES = 12  # a plan-only reference per sequence: bounds a row as a
# token width of 12 would


def seek_table_bytes(frames):
    """The seek table's size for this many frames, header included."""
    return SEEK_HEADER.size + frames * SEEK_ENTRY.size + SEEK_FOOTER.size


def row_bytes_bound(max_seq_len, width):
    """The most bytes one row of at most max_seq_len tokens of `width`
    bytes packs to: id, cu, seq id, start and mask per token, and the
    map's keys and headers."""
    return max_seq_len * (width + 4 + 8 + 4 + 1) + 4 + 128


def frame_bytes_bound(rows, max_seq_len, width):
    """The most bytes a frame of `rows` rows can decompress to (the C
    reader's bound): a seek table claiming more is damaged, and is refused
    before anything is allocated for it."""
    return rows * row_bytes_bound(max_seq_len, width) + 16


def zstd_expansion_bound(compressed):
    """The most bytes `compressed` bytes of zstd frame decompress to: a
    block yields at most 128 KiB and costs at least 4 bytes."""
    return compressed * (128 * 1024 // 4)


# ---- format versions and id codes (version 4) -----------------------------

FIRST_ID3_VERSION = 3  # the first format version whose rows hold 3-byte ids
FIRST_ID_CODE_VERSION = 4  # rows hold id codes through the shard's id table
ID_ONE_BYTE = 192  # ranks below: one byte
ID_ESCAPE = 255  # then the id itself, token_dtype's width
ID_TABLE_MAX = ID_ONE_BYTE + (ID_ESCAPE - ID_ONE_BYTE) * 256
ID_TABLE_ID_LIMIT = 1 << 22  # the writer ranks no id at or past this
# A version 4 shard's index: a skippable frame between the last zstd
# frame and the seek table (magic, body size), its body: id count, frame
# count, XXH64 of the rest; the ids; each frame's compressed bytes' XXH64.
INDEX_MAGIC = 0x184D2A5D
INDEX_FRAME_HEAD = struct.Struct("<II")
INDEX_HEAD = struct.Struct("<IIQ")


def stored_token_bound(version, width):
    """The most bytes a token takes on disk: an id code (an escape byte
    and the id) from version 4, else the width."""
    return width + 1 if version >= FIRST_ID_CODE_VERSION else width


def index_frame_bytes(n, width, frames):
    """A version 4 shard's index frame's size: n ids of `width` bytes and
    a hash for each of `frames` frames."""
    return INDEX_FRAME_HEAD.size + INDEX_HEAD.size + n * width + 8 * frames


# Bytes with more escape bytes than this find their codes by jumps, the
# rest by parity with a step for each escape: a row holds a few, where
# parity's fewer numpy calls win; a frame read in order holds thousands,
# and jumps, whose steps touch only the lead bytes, take 0.6-0.8x
# parity's time on it even without escapes.
FEW_ESCAPES = 64


def decode_id_codes(value, token_dtype, tokens, table):
    """A version 4 row's input_ids bin as exactly `tokens` ids of
    token_dtype through the shard's id table (a numpy array), or None when
    its bytes are not that many codes: shard_format.c's
    pp_decode_id_codes's twin, in whole-array numpy steps."""
    rows = decode_id_code_rows([value], token_dtype, [tokens], table)
    return None if rows is None else rows[0]


def decode_id_code_rows(values, token_dtype, tokens, table):
    """Several rows' input_ids bins (tokens[k] ids in values[k]) decoded
    in one pass, as a frame read in order is: numpy's cost a call is paid
    once, not once a row. A list of id arrays, or None when any row is not
    exactly its count of codes (decode_id_codes on each says which)."""
    if 0 in tokens:
        return None
    b = np.frombuffer(b"".join(values), np.uint8)  # one value: no copy
    w = token_dtype.itemsize
    escapes = np.flatnonzero(b == ID_ESCAPE)  # escape bytes, or not
    if len(escapes) <= FEW_ESCAPES:
        lead = _code_starts_by_parity(b, w, escapes)
    else:
        lead = _code_starts_by_jumps(b, w)
    if lead is None:
        return None
    at = np.flatnonzero(lead)
    # each row begins with a code (so none ran into the next) and holds
    # its count of them
    bounds = np.cumsum([0] + [len(v) for v in values])
    firsts = np.searchsorted(at, bounds)
    if not np.array_equal(np.diff(firsts), tokens) or \
            not lead[bounds[:-1]].all():
        return None
    out = _ids_of_codes(b, at, w, token_dtype, table)
    if out is None:
        return None
    if len(values) == 1:
        return [out]
    return [out[i:j] for i, j in zip(firsts[:-1].tolist(),
                                     firsts[1:].tolist())]


def _ids_of_codes(b, at, w, token_dtype, table):
    """The ids of the codes beginning at `at` (their starts in b, every
    code whole), or None for a rank past the table."""
    first = b[at]
    # a two-byte code's rank from both bytes; an escape's comes out past
    # any table, so it is the one code allowed there, and its id replaces
    # the table's below
    second = np.append(b, np.uint8(0))[at + 1]
    rank = np.where(first >= ID_ONE_BYTE,
                    (first.astype(np.int32) << 8) + second
                    - ((ID_ONE_BYTE << 8) - ID_ONE_BYTE), first)
    esc = np.flatnonzero(first == ID_ESCAPE)
    if np.count_nonzero(rank >= len(table)) != len(esc):
        return None
    if len(esc) == len(at):
        out = np.empty(len(at), token_dtype)
    else:
        rank[esc] = 0
        out = np.take(table, rank).astype(token_dtype, copy=False)
    if len(esc):
        raw = np.zeros((len(esc), 8), np.uint8)
        for k in range(w):
            raw[:, k] = b[at[esc] + 1 + k]
        out[esc] = raw.view("<u8").ravel()
    return out


def _code_starts_by_parity(b, w, escapes):
    """Which bytes begin a code (a bool array), or None when the last code
    runs past the end. Without escapes, a run of bytes >= ID_ONE_BYTE
    begins with a code (the byte before it ends one, being a one-byte code
    or a second byte), and holds leads at every other byte: a byte begins
    a code when the run just before it is even. An escape's id bytes are
    no codes, and the parity restarts after them for the run of lead bytes
    they end in: one step for each escape that begins a code."""
    n = len(b)
    if n == 0:
        return np.zeros(0, bool)
    at = np.arange(n)
    other = b < ID_ONE_BYTE
    last_other = np.maximum.accumulate(np.where(other, at, -1))
    run_before = np.empty(n, np.int64)
    run_before[0] = 0
    run_before[1:] = at[:-1] - last_other[:-1]
    lead = (run_before & 1) == 0
    if len(escapes):
        next_other = np.minimum.accumulate(
            np.where(other, at, n)[::-1])[::-1]
        for e in escapes.tolist():
            if not lead[e]:
                continue
            resume = e + 1 + w
            if resume > n:
                return None
            lead[e + 1:resume] = False
            end = int(next_other[resume - 1]) + 1 if resume < n else resume
            lead[resume:end:2] = True
            lead[resume + 1:end:2] = False
    last = int(np.flatnonzero(lead)[-1])
    size = 1 if b[last] < ID_ONE_BYTE else (2 if b[last] < ID_ESCAPE
                                             else 1 + w)
    return lead if last + size == n else None


def _code_starts_by_jumps(b, w):
    """_code_starts_by_parity's answer for any number of escapes: the
    longer codes' leads are the first candidate's orbit under `after`."""
    lead = np.ones(len(b), bool)
    c = np.flatnonzero(b >= ID_ONE_BYTE)  # candidate starts of longer codes
    if len(c):
        size = np.where(b[c] == ID_ESCAPE, 1 + w, 2)
        # A longer code's lead is followed by one-byte codes up to the first
        # candidate past its end, which is the next lead: the leads are the
        # first candidate's orbit under `after`, found by doubling the jump
        # (log2 rounds of whole-array steps, no loop over bytes).
        m = len(c)
        jump = np.append(np.searchsorted(c, c + size), m)  # m: past the end
        on = np.zeros(m + 1, bool)
        on[0] = True
        reach = 1
        while reach <= m:
            on[jump[np.flatnonzero(on)]] = True
            jump = jump[jump]
            reach *= 2
        starts, size = c[on[:m]], size[on[:m]]
        if starts[-1] + size[-1] > len(b):
            return None
        for k in range(1, 1 + w):
            lead[starts[size > k] + k] = False
    return lead


# ---- file names ----------------------------------------------------------

MANIFEST_NAME = "manifest.json"
# The deepest a manifest nests (a set's is 4): both readers refuse more.
MANIFEST_MAX_DEPTH = 64
TMP_SUFFIX = ".tmp"  # written under name + this, then renamed
SHARD_NAME_MAX = 32  # with C's NUL


def shard_name(i):
    """Shard i's file name: the only name entry i of a manifest may give."""
    return f"shard-{i:05d}.zst"


def is_shard_name(name):
    """Whether name is a shard's: "shard-", digits, ".zst", shorter than
    SHARD_NAME_MAX."""
    return (name.startswith("shard-") and name.endswith(".zst")
            and name[6:-4].isdigit() and name[6:-4].isascii()
            and len(name) < SHARD_NAME_MAX)


def is_tmp_set_file(name):
    """Whether name is the temporary name of a manifest or a shard (what
    an interrupted writer leaves)."""
    base = name[:-len(TMP_SUFFIX)]
    return name.endswith(TMP_SUFFIX) and (base == MANIFEST_NAME
                                          or is_shard_name(base))


# ---- rows' fields and token widths ----------------------------------------

TOKEN_DTYPES = ("uint16", "uint32")  # a manifest's token_dtype


def token_width(token_dtype):
    """Bytes per token of a token_dtype name: uint16 is 2, else 4 (the
    one place Python says so)."""
    return 2 if token_dtype == "uint16" else 4


def token_numpy_dtype(token_dtype):
    """A token_dtype name's numpy dtype: little-endian unsigned."""
    return np.dtype(f"<u{token_width(token_dtype)}")


def decode_ids(value, token_dtype, tokens, version):
    """A row's input_ids bin as `tokens` ids of token_dtype (numpy's), or
    None when its length fits no width the set allows: the one decoding
    of token bytes in Python, shard_format.c's pp_decode_ids's twin.
    Version 3 stores a uint32 row in 3 bytes a token when its ids are below
    2^24 (the bin's 3 x tokens bytes say so); otherwise the bin holds
    token_dtype's width."""
    w = token_dtype.itemsize
    if version >= FIRST_ID3_VERSION and w == 4 and tokens > 0 \
            and len(value) == 3 * tokens:
        out = np.zeros(tokens, token_dtype)
        out.view(np.uint8).reshape(tokens, 4)[:, :3] = np.frombuffer(
            value, np.uint8).reshape(tokens, 3)
        return out
    if len(value) % w:
        return None
    return np.frombuffer(value, dtype=token_dtype)


# a row's fields and their dtypes; input_ids' is the set's token_dtype
FIELDS = {"input_ids": None, "cu_seqlens": np.dtype("<i4"),
          "seq_ids": np.dtype("<u8"), "loss_mask": np.dtype("u1"),
          "seq_starts": np.dtype("<u4")}
# a plan-only set's rows (version 2, "storage": "references"): where each
# sequence's tokens are instead of input_ids
REF_FIELDS = {"ref_source": np.dtype("<u4"), "ref_offset": np.dtype("<u8")}
# the format's field names, in either kind of set: each at most once in a
# row, and a bin (reader.c's row_fields)
ROW_FIELD_NAMES = tuple(FIELDS) + tuple(REF_FIELDS)


class MalformedMap:
    """A msgpack map that cannot be a row (row_map's verdict), left in
    its place so that only a row that is one is refused: `why` says
    what is wrong with it."""
    __slots__ = ("why",)

    def __init__(self, why):
        self.why = why


def _is_utf8(key):
    """Whether a key decoded with errors="surrogateescape" was UTF-8 (a
    byte that was not comes back as a lone surrogate, which UTF-8 cannot
    encode)."""
    if key.isascii():
        return True
    try:
        key.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def row_map(pairs):
    """A frame's msgpack map as a dict (msgpack's object_pairs_hook), or a
    MalformedMap for the first fault in map order, in reader.c's words
    (check_row_keys): a key that is not a UTF-8 string, one of the
    format's field names twice (a dict would keep the last, the C reader
    reads the first) or not a bin (the C reader would read it as absent).
    Maps nested in other values pass through the same hook and are
    ignored with them."""
    seen = set()
    for key, value in pairs:
        if type(key) is not str or not _is_utf8(key):
            return MalformedMap("a key that is not a UTF-8 string")
        if key in ROW_FIELD_NAMES:
            if key in seen:
                return MalformedMap(f"{key} twice")
            if not isinstance(value, bytes):
                return MalformedMap(f"{key} is not a bin")
            seen.add(key)
    return dict(pairs)
