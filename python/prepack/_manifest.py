"""A shard set's manifest.json (docs/FORMAT.md): read without trusting it
(a regular file of a manifest's size, JSON as the C reader's parser takes
it), every value checked for type and range, the shard entries' claims
against their sizes and L, the stats against the totals, a plan-only
set's sources, and the directory against the list of shards. Manifest is
the checked result both readers start from."""

import json
import os
import stat

from ._errors import ShardSetError
from ._files import pread_all
from ._format import (MANIFEST_MAX_DEPTH, MANIFEST_NAME, MIN_FRAME_BYTES,
                      REF_BYTES, SEEK_ENTRY, TOKEN_DTYPES, frame_bytes_bound,
                      stored_token_bound,
                      is_shard_name, seek_table_bytes, shard_name,
                      token_numpy_dtype)

_STATS_KEYS = ("sequences", "input_tokens", "items", "tokens", "rows",
               "lower_bound", "max_seqs_in_row")
_OVERLONG = ("error", "truncate", "split", "drop")
# ~150 bytes a shard: what no set needs (the C reader's bound)
_MAX_MANIFEST_BYTES = 256 << 20


def _uint(where, obj, key, lo, hi):
    """obj[key] as an int in [lo, hi], or ShardSetError naming it."""
    value = obj.get(key) if isinstance(obj, dict) else None
    if type(value) is not int or not lo <= value <= hi:
        raise ShardSetError(f"{where}: {key} must be an integer in "
                            f"{lo}..{hi}, not {value!r}")
    return value


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
                                                   + MIN_FRAME_BYTES):
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


def _no_manifest(path, err):
    """Why DIR/manifest.json is not there, said of DIR where DIR is the
    cause (the C reader's words, manifest_read.cpp)."""
    folder = os.path.dirname(path) or "."
    if isinstance(err, NotADirectoryError):
        return (f"{folder} is not a directory (a shard set is a directory "
                f"holding manifest.json)")
    if not os.path.lexists(folder):
        return f"{folder}: no such directory"
    return (f"{folder} is not a shard set (no manifest.json; or its "
            f"writing was interrupted)")


def _read_manifest(path):
    """manifest.json's bytes: opened once (O_NONBLOCK: a FIFO cannot
    block), checked to be a regular file of a manifest's size through
    that descriptor, and read from it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except (FileNotFoundError, NotADirectoryError) as err:
        raise ShardSetError(_no_manifest(path, err)) from None
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
        return pread_all(fd, st.st_size, 0)
    finally:
        os.close(fd)


def _no_constant(name):
    """NaN and Infinity are not JSON (RFC 8259); simdjson refuses them."""
    raise ValueError(f"{name} is not a JSON number")


def _unique_keys(pairs):
    """An object whose keys are all distinct: JSON leaves a duplicated key
    to the reader (Python's json takes its last value, simdjson its
    first), so both readers refuse one rather than check different
    manifests."""
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        for k, _ in pairs:
            if k in seen:
                shown = "".join(c if " " <= c <= "~" else "?" for c in k[:64])
                raise ValueError(f'key "{shown}" given twice')
            seen.add(k)
    return out


def _parse(manifest_path):
    """manifest.json's JSON, as the C reader's parser takes it."""
    deep = False
    try:
        m = json.loads(_read_manifest(manifest_path), parse_int=_json_int,
                       parse_float=_json_float, parse_constant=_no_constant,
                       object_pairs_hook=_unique_keys)
    except ValueError as e:
        raise ShardSetError(f"{manifest_path}: invalid JSON: {e}")
    except RecursionError:  # far past the limit below
        deep = True
    if deep or _deeper_than(m, MANIFEST_MAX_DEPTH):
        raise ShardSetError(f"{manifest_path}: invalid JSON: nested deeper "
                            f"than {MANIFEST_MAX_DEPTH} levels")
    return m


def _deeper_than(doc, limit):
    """Whether doc's objects and arrays nest more than limit levels (the
    C reader's parser stops at that depth)."""
    stack = [(doc, 1)] if isinstance(doc, (dict, list)) else []
    while stack:
        v, depth = stack.pop()
        if depth > limit:
            return True
        inner = v.values() if isinstance(v, dict) else v
        stack.extend((c, depth + 1) for c in inner
                     if isinstance(c, (dict, list)))
    return False


def _storage(manifest_path, m):
    """"tokens" or "references" (a plan-only set), after the format and
    version."""
    if not isinstance(m, dict) or m.get("format") != "prepack-shards" \
            or m.get("version") not in (1, 2, 3, 4) \
            or type(m.get("version")) is not int:
        raise ShardSetError(f"{manifest_path}: not a prepack shard set "
                            f"manifest (versions 1 to 4)")
    storage = m.get("storage", "tokens") if m["version"] >= 2 \
        else "tokens"
    if storage not in ("tokens", "references"):
        raise ShardSetError(f"{manifest_path}: storage must be \"tokens\" "
                            f"or \"references\", not {storage!r}")
    return storage


def _check_shard_entry(where, i, e, max_seq_len, rows_per_frame):
    """Shard entry i: (name, rows, tokens, bytes), each checked."""
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
    _check_shard_claims(where, n, t, size, max_seq_len, rows_per_frame)
    return name, n, t, size


class Manifest:
    """A set directory's manifest.json, read and checked (what both
    readers start from): `doc` (the parsed JSON), the values (max_seq_len,
    rows_per_frame, token_dtype as numpy's, overlong, max_seqs_per_row,
    pad_multiple, stats or None, references, sources), `shards` (each
    shard's path, rows, tokens and bytes, in order), `first` (each shard's
    first row), `rows`, and `frame_bound` (the most bytes a frame may
    claim). ShardSetError names the first thing wrong."""

    def __init__(self, path):
        self.path = os.fspath(path)
        self.manifest_path = os.path.join(self.path, MANIFEST_NAME)
        self.doc = m = _parse(self.manifest_path)
        self.references = _storage(self.manifest_path, m) == "references"
        self.sources = (_check_sources(self.manifest_path, m)
                        if self.references else [])
        self._check_values(m)
        claims = self._check_shards(m)
        self._check_directory(claims)

    def _check_values(self, m):
        """Every value checked for type and range: a manifest is input
        too."""
        where = self.manifest_path
        self.max_seq_len = _uint(where, m, "max_seq_len", 1, 1 << 24)
        self.rows_per_frame = _uint(where, m, "rows_per_frame", 1,
                                    2**32 - 1)
        if not isinstance(m.get("token_dtype"), str) or \
                m["token_dtype"] not in TOKEN_DTYPES:
            raise ShardSetError(f"{where}: token_dtype must be uint16 "
                                f"or uint32, not {m.get('token_dtype')!r}")
        self.token_dtype = token_numpy_dtype(m["token_dtype"])
        self.version = m["version"]  # _format.py: what each holds
        overlong = m.get("overlong", "error")
        if overlong not in _OVERLONG:
            raise ShardSetError(f"{where}: overlong must be error, "
                                f"truncate, split or drop")
        self.overlong = overlong
        self.max_seqs_per_row = (_uint(where, m, "max_seqs_per_row",
                                       0, 2**32 - 1)
                                 if "max_seqs_per_row" in m else 0)
        # context parallelism: readers pad each sequence to a multiple
        self.pad_multiple = (_uint(where, m, "pad_multiple", 2,
                                   self.max_seq_len)
                             if "pad_multiple" in m else 1)
        if self.max_seq_len % self.pad_multiple:
            raise ShardSetError(f"{where}: pad_multiple "
                                f"{self.pad_multiple} does not divide "
                                f"max_seq_len {self.max_seq_len}")

    def _check_shards(self, m):
        """The shard entries, their totals against the manifest's, the
        inputs and the stats; the entries' (name, rows, tokens, bytes)."""
        where = self.manifest_path
        entries = m.get("shards")
        if not isinstance(entries, list):
            raise ShardSetError(f"{where}: shards must be a list")
        self.frame_bound = frame_bytes_bound(
            self.rows_per_frame, self.max_seq_len,
            REF_BYTES if self.references else stored_token_bound(
                self.version, self.token_dtype.itemsize))
        claims = [_check_shard_entry(f"{where}: shard entry {i}", i, e,
                                     self.max_seq_len, self.rows_per_frame)
                  for i, e in enumerate(entries)]
        rows = sum(n for _, n, _, _ in claims)
        tokens = sum(t for _, _, t, _ in claims)
        for key, value in (("rows", rows), ("tokens", tokens)):
            if m.get(key) != value or type(m.get(key)) is not int:
                raise ShardSetError(
                    f"{where}: says {m.get(key)!r} {key}, its shards "
                    f"{value}")
        inputs = _check_inputs(where, m)
        self.stats = _check_stats(where, m, rows, tokens, self.max_seq_len,
                                  inputs)
        if not entries and not (self.stats["items"] == 0 if self.stats
                                else inputs[0] and inputs[1] == 0):
            raise ShardSetError(
                f"{where}: lists no shards, yet does not say it was "
                f"packed from nothing (stats.items 0, or inputs of no "
                f"sequences): a truncated or edited manifest?")
        return claims

    def _check_directory(self, claims):
        """No shard in the directory the manifest does not list, none it
        lists missing; sets shards, first and rows."""
        listed = {name for name, *_ in claims}
        for name in sorted(os.listdir(self.path)):
            if is_shard_name(name) and name not in listed:
                raise ShardSetError(f"{os.path.join(self.path, name)}: not "
                                    f"listed in the manifest (left by "
                                    f"another run?)")
        self.shards, self.first, self.rows = [], [], 0
        for name, n, t, size in claims:
            path = os.path.join(self.path, name)
            if not os.path.exists(path):
                raise ShardSetError(f"{path}: missing")
            self.shards.append((path, n, t, size))
            self.first.append(self.rows)
            self.rows += n

    def source_spans(self):
        """Each source's (first sequence id, sequences): one input per
        source (_check_inputs checked each entry), else None each."""
        inputs = self.doc.get("inputs") or []
        return [(e["first_sequence"], e["sequences"]) for e in inputs] \
            if len(inputs) == len(self.sources) \
            else [None] * len(self.sources)
