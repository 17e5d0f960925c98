"""Manifest edits and directory changes that make a shard set lie about
itself: both readers (the C one behind `prepack verify`, and Python's
ShardSet) must refuse each one, naming what is wrong. One table drives
both, so the two readers cannot drift apart: CASES, then CHECKS with a
row for every other check either reader makes of a manifest (JSON that
either parser would read its own way included), and ACCEPTED for what
both let through.

The set is the golden one (fixtures/expected/set): 2 shards, 20 rows, 317
tokens, L 16, with stats and inputs."""
import json
import os
import shutil
import subprocess

import pytest

from conftest import ROOT
from prepack import ShardSet, ShardSetError
from prepack._format import MANIFEST_MAX_DEPTH

GOLDEN = os.path.join(ROOT, "fixtures", "expected", "set")
V1_SET = os.path.join(ROOT, "fixtures", "sets", "v1-uint16")
# ShardSet's own reader, and the C one behind it when the library loads
# (the manifest's checks are Python's in both)
BACKENDS = ["python", "c"] if os.environ.get("PREPACK_LIBRARY") \
    else ["python"]


def edit(fn):
    """An edit of the manifest's parsed JSON, in place."""
    def apply(d):
        path = os.path.join(d, "manifest.json")
        with open(path) as f:
            m = json.load(f)
        fn(m)
        with open(path, "w") as f:
            json.dump(m, f)
    return apply


def shard(m, i):
    return m["shards"][i]


def copy_shard(d, src, dst):
    shutil.copy(os.path.join(d, src), os.path.join(d, dst))


def set_many(**changes):
    def fn(m):
        for path, value in changes.items():
            obj, *keys = path.split("__")
            target = m if obj == "top" else m[obj]
            for k in keys[:-1]:
                target = target[int(k)] if k.isdigit() else target[k]
            last = keys[-1]
            target[int(last) if last.isdigit() else last] = value(
                target[int(last) if last.isdigit() else last])
    return edit(fn)


def swap_shards(m):
    m["shards"].reverse()


def shard0_twice(m):
    m["shards"][1] = dict(m["shards"][0])


def no_shards(m):
    m["shards"] = []


def no_shards_no_totals(m):
    m["shards"] = []
    m["rows"] = m["tokens"] = 0


def huge_rows(m, rows=2**62):
    extra = rows - shard(m, 1)["rows"]
    shard(m, 1)["rows"] += extra
    m["rows"] += extra


def huge_rows_and_bytes(m):
    """Claims the bytes could hold: the file's real size gives it away,
    before anything loops over 2^58 rows."""
    huge_rows(m, 2**58)
    extra = 2**58 - shard(m, 1)["tokens"]
    shard(m, 1)["tokens"] += extra
    m["tokens"] += extra
    shard(m, 1)["bytes"] = 2**63
    m["stats"] = None


def tokens_moved(m):
    """Shard token counts that still add up, and no stats to object."""
    shard(m, 0)["tokens"] -= 1
    shard(m, 1)["tokens"] += 1
    m["stats"] = None


def stats_items(m):
    m["stats"]["items"] += 1


def stats_max_seqs(m):
    m["stats"]["max_seqs_in_row"] -= 1


def fewer_sequences(m):
    m["stats"]["sequences"] = 3
    m["inputs"][0]["sequences"] = 3


def max_seqs_per_row(m):
    m["max_seqs_per_row"] = 2


def add(key, delta):
    def fn(m):
        m[key] += delta
    return fn


def set_to(key, value):
    def fn(m):
        m[key] = value
    return fn


def stats_add(key, delta):
    def fn(m):
        m["stats"][key] += delta
    return fn


def inputs_add(key, delta):
    def fn(m):
        m["inputs"][0][key] += delta
    return fn


def stray_shard(d):
    copy_shard(d, "shard-00001.zst", "shard-00002.zst")


def stray_tmp(d):
    copy_shard(d, "shard-00001.zst", "shard-00002.zst.tmp")


# (name, change, what the C reader says, what Python says, found at open)
CASES = [
    ("rows -1", edit(set_to("rows", -1)), "rows", "rows", True),
    ("rows off by 3", edit(add("rows", 3)), "its shards", "its shards", True),
    ("tokens off by 1", edit(add("tokens", 1)), "its shards", "its shards",
     True),
    ("shards reordered", edit(swap_shards), "shard 0 is shard-00000.zst",
     "shard 0 is shard-00000.zst", True),
    ("shard 0 listed twice", edit(shard0_twice), "shard 1 is shard-00001.zst",
     "shard 1 is shard-00001.zst", True),
    ("max_seq_len raised", edit(add("max_seq_len", 16)), "stats.packed.slots",
     "stats.packed.slots", True),
    ("max_seq_len lowered", edit(add("max_seq_len", -4)), "tokens in",
     "tokens in", True),
    ("inputs sequences", edit(inputs_add("sequences", 1)), "stats.sequences",
     "stats.sequences", True),
    ("inputs tokens", edit(inputs_add("tokens", -1)), "stats.input_tokens",
     "stats.input_tokens", True),
    ("inputs first_sequence", edit(inputs_add("first_sequence", 1)),
     "first_sequence", "first_sequence", True),
    ("stats rows", edit(stats_add("rows", 1)), "stats.rows", "stats.rows",
     True),
    ("stats tokens", edit(stats_add("tokens", -1)), "stats.tokens",
     "stats.tokens", True),
    ("stats lower_bound", edit(stats_add("lower_bound", 5)), "lower_bound",
     "lower_bound", True),
    ("no shards", edit(no_shards), "its shards", "its shards", True),
    ("no shards, totals 0", edit(no_shards_no_totals), "stats.rows",
     "stats.rows", True),
    ("rows 2^62", edit(huge_rows), "more than its", "more than its", True),
    ("rows 2^58, bytes 2^63", edit(huge_rows_and_bytes), "the manifest says",
     "the manifest says", True),
    ("xxh64 in capitals", edit(lambda m: shard(m, 0).update(
        xxh64=shard(m, 0)["xxh64"].upper())), "16 lowercase hex digits",
     "16 lowercase hex digits", True),
    ("xxh64 with 0x", edit(lambda m: shard(m, 0).update(
        xxh64="0x" + shard(m, 0)["xxh64"][2:])), "16 lowercase hex digits",
     "16 lowercase hex digits", True),
    ("rows as text", edit(set_to("rows", "20")), "rows", "rows", True),
    ("stats a list", edit(set_to("stats", [])), "stats", "stats", True),
    ("stray shard", stray_shard, "shard-00002.zst: not listed",
     "shard-00002.zst: not listed", True),
    # only the rows can tell
    ("stray temporary", stray_tmp, "shard-00002.zst.tmp: not listed",
     "shard-00002.zst.tmp: not listed", False),
    ("shard tokens moved", edit(tokens_moved), "its rows hold",
     "its rows hold", False),
    ("stats items", edit(stats_items), "stats.items", "stats.items", False),
    ("stats max_seqs_in_row", edit(stats_max_seqs), "max_seqs_in_row",
     "max_seqs_in_row", False),
    ("fewer sequences", edit(fewer_sequences), "sequences were packed",
     "sequences were packed", False),
    ("max_seqs_per_row", edit(max_seqs_per_row), "max_seqs_per_row 2",
     "max_seqs_per_row 2", False),
    ("token_dtype edited", edit(set_to("token_dtype", "uint32")),
     "token_dtype does not match the shards",
     "token_dtype does not match the shards", False),
]


# ---- every other check both readers make (src/shards/manifest_read.cpp,
# the reader's open and verify; python/prepack's ShardSet): at least one
# row each. A change here is a raw edit of the manifest's text or of the
# directory; c_says / py_says are pieces of each reader's message. --------

DROP = object()


def put(*path_value):
    """Sets (or with DROP removes) the value at a key path, such as
    ("shards", 0, "rows")."""
    *path, value = path_value

    def fn(m):
        for k in path[:-1]:
            m = m[k]
        if value is DROP:
            del m[path[-1]]
        else:
            m[path[-1]] = value
    return edit(fn)


def text(fn):
    """An edit of manifest.json's bytes."""
    def apply(d):
        path = os.path.join(d, "manifest.json")
        with open(path, "rb") as f:
            b = f.read()
        with open(path, "wb") as f:
            f.write(fn(b))
    return apply


def as_text(m):
    return json.dumps(m).encode()


def manifest_replaced(make):
    """manifest.json removed and make(path) put in its place."""
    def apply(d):
        path = os.path.join(d, "manifest.json")
        os.unlink(path)
        make(path)
    return apply


def sparse(path):
    with open(path, "wb") as f:
        f.truncate((256 << 20) + 1)  # holes: no disk, no time


def references(**source):
    """A version-2 plan-only manifest listing one source, whose fields
    are a valid entry's but for those given (DROP removes one)."""
    entry = {"path": "/nonexistent/tokens.bin", "width": 2, "signed": False,
             "bytes": 64, "sample_xxh64": "0123456789abcdef"}
    entry.update(source)

    def fn(m):
        m.update(version=2, storage="references",
                 sources=[{k: v for k, v in entry.items() if v is not DROP}])
    return edit(fn)


def shard_rows(rows, tokens, nbytes=None, rpf=None):
    """Shard 1 claims rows and tokens (totals and stats follow, so only
    the claim itself can be refused)."""
    def fn(m):
        s = shard(m, 1)
        m["rows"] += rows - s["rows"]
        m["tokens"] += tokens - s["tokens"]
        s.update(rows=rows, tokens=tokens)
        if nbytes is not None:
            s["bytes"] = nbytes
        if rpf is not None:
            m["rows_per_frame"] = rpf
        m["stats"] = None
    return edit(fn)


def shards_overflow(m):
    """Two shards of 2^63 rows each, claims within their bytes: their sum
    passes 2^64."""
    for s in m["shards"]:
        s.update(rows=2**63, tokens=2**63, bytes=2**64 - 1)
    m.update(rows_per_frame=2**32 - 1, rows=2**64 - 1, tokens=2**64 - 1,
             stats=None, max_seq_len=1)


def slots_overflow(m):
    """rows x L past 2^64: the stats' slots cannot be right."""
    s = shard(m, 1)
    extra = 2**62 - s["rows"]
    s.update(rows=2**62, tokens=s["tokens"] + extra, bytes=2**64 - 1)
    m.update(rows_per_frame=2**32 - 1, rows=m["rows"] + extra,
             tokens=m["tokens"] + extra)
    m["stats"].update(rows=m["rows"], tokens=m["tokens"])
    m["stats"]["packed"]["rows"] = m["rows"]


def inputs_overflow(m):
    m["inputs"] = [dict(m["inputs"][0], sequences=2**64 - 1),
                   dict(m["inputs"][0], first_sequence=2**64 - 1)]


def remove(name):
    def apply(d):
        os.unlink(os.path.join(d, name))
    return apply


def made_dir(name):
    def apply(d):
        os.unlink(os.path.join(d, name))
        os.mkdir(os.path.join(d, name))
    return apply


def stray_manifest_tmp(d):
    shutil.copy(os.path.join(d, "manifest.json"),
                os.path.join(d, "manifest.json.tmp"))


def shard_bytes(delta):
    return edit(lambda m: shard(m, 0).update(bytes=shard(m, 0)["bytes"]
                                             + delta))


# (name, change, C says, Python says, found at open)
CHECKS = [
    # the file
    ("manifest missing", remove("manifest.json"), "manifest.json",
     "no manifest", True),
    ("manifest a directory", made_dir("manifest.json"),
     "not a regular file", "not a regular file", True),
    ("manifest a FIFO", manifest_replaced(os.mkfifo), "not a regular file",
     "not a regular file", True),
    ("manifest over 256 MiB", manifest_replaced(sparse),
     "more than a manifest can", "more than a manifest can", True),
    ("not JSON", text(lambda b: b[:-3]), "invalid JSON", "invalid JSON",
     True),
    ("trailing bytes after the JSON", text(lambda b: b + b" x"),
     "invalid JSON", "invalid JSON", True),
    ("a JSON array", text(lambda b: b"[" + b + b"]"), "invalid JSON",
     "not a prepack",
     True),
    ("a JSON number", text(lambda b: b"2"), "invalid JSON", "not a prepack",
     True),
    ("a JSON null", text(lambda b: b"null"), "invalid JSON",
     "not a prepack", True),
    ("an integer past 2^64", text(lambda b: b.replace(
        b'"seed": 7', b'"seed": 18446744073709551616')), "invalid JSON",
     "invalid JSON",
     True),
    ("invalid UTF-8 in a string", text(lambda b: b.replace(
        b'"ffd"', b'"ff\xff"')),
     "invalid JSON", "invalid JSON", True),
    # the header
    ("format missing", put("format", DROP), "not a prepack shard set",
     "not a prepack shard set", True),
    ("format another", put("format", "prepack-shard"),
     "not a prepack shard set", "not a prepack shard set", True),
    ("version 5", put("version", 5), "version", "version", True),
    ("version 0", put("version", 0), "version", "version", True),
    ("version 1.0", put("version", 1.0), "version", "version", True),
    ("version as text", put("version", "1"), "version", "version", True),
    ("version missing", put("version", DROP), "version", "version", True),
    ("max_seq_len 0", put("max_seq_len", 0), "max_seq_len", "max_seq_len",
     True),
    ("max_seq_len over 2^24", put("max_seq_len", 2**24 + 1), "max_seq_len",
     "max_seq_len", True),
    ("max_seq_len missing", put("max_seq_len", DROP), "max_seq_len",
     "max_seq_len", True),
    ("max_seq_len 16.0", put("max_seq_len", 16.0), "max_seq_len",
     "max_seq_len", True),
    ("rows_per_frame 0", put("rows_per_frame", 0), "rows_per_frame",
     "rows_per_frame", True),
    ("rows_per_frame 2^32", put("rows_per_frame", 2**32), "rows_per_frame",
     "rows_per_frame", True),
    ("rows_per_frame missing", put("rows_per_frame", DROP), "rows_per_frame",
     "rows_per_frame", True),
    ("token_dtype uint8", put("token_dtype", "uint8"), "token_dtype",
     "token_dtype", True),
    ("token_dtype missing", put("token_dtype", DROP), "token_dtype",
     "token_dtype", True),
    ("token_dtype a number", put("token_dtype", 16), "token_dtype",
     "token_dtype", True),
    ("overlong unknown", put("overlong", "wrap"), "overlong must be",
     "overlong must be", True),
    ("overlong in capitals", put("overlong", "SPLIT"), "overlong must be",
     "overlong must be", True),
    ("overlong null", put("overlong", None), "overlong must be",
     "overlong must be", True),
    ("max_seqs_per_row -1", put("max_seqs_per_row", -1), "max_seqs_per_row",
     "max_seqs_per_row", True),
    ("max_seqs_per_row 2^32", put("max_seqs_per_row", 2**32),
     "max_seqs_per_row", "max_seqs_per_row", True),
    ("max_seqs_per_row as text", put("max_seqs_per_row", "2"),
     "max_seqs_per_row", "max_seqs_per_row", True),
    ("pad_multiple 1", put("pad_multiple", 1), "pad_multiple",
     "pad_multiple", True),
    ("pad_multiple 3 (not dividing 16)", put("pad_multiple", 3),
     "pad_multiple", "pad_multiple", True),
    ("pad_multiple 32 (over L)", put("pad_multiple", 32), "pad_multiple",
     "pad_multiple", True),
    ("pad_multiple null", put("pad_multiple", None), "pad_multiple",
     "pad_multiple", True),
    # version 2's storage and a plan-only set's sources
    ("storage a number", edit(lambda m: m.update(version=2, storage=5)),
     "storage must be", "storage must be", True),
    ("storage unknown", edit(lambda m: m.update(version=2, storage="refs")),
     "storage must be", "storage must be", True),
    ("references without sources", edit(lambda m: m.update(
        version=2, storage="references")), "\"sources\" array",
     "\"sources\" array", True),
    ("more sources than inputs", edit(lambda m: m.update(
        version=2, storage="references", sources=[{}, {}])),
     "more than the 1", "more than the 1", True),
    ("source not an object", edit(lambda m: m.update(
        version=2, storage="references", sources=[7])), "source 0",
     "source 0", True),
    ("source path relative", references(path="tokens.bin"),
     "path must be an absolute path", "path must be an absolute path", True),
    ("source path missing", references(path=DROP), "source 0",
     "source 0", True),
    ("source path with a NUL", references(path="/x\0/tokens.bin"),
     "path must be an absolute path", "path must be an absolute path", True),
    ("source width 3", references(width=3), "width must be 1, 2, 4 or 8",
     "width must be 1, 2, 4 or 8", True),
    ("source signed missing", references(signed=DROP), "signed",
     "signed", True),
    ("source signed as text", references(signed="no"), "signed", "signed",
     True),
    ("source bytes missing", references(bytes=DROP), "bytes", "bytes", True),
    ("source sample_xxh64 short", references(sample_xxh64="0123"),
     "sample_xxh64", "sample_xxh64", True),
    ("source index relative", references(index="tokens.idx", index_bytes=8,
                                         index_xxh64="0123456789abcdef"),
     "index needs an absolute path", "index needs an absolute path", True),
    ("source index without its hash", references(index="/x/tokens.idx",
                                                 index_bytes=8),
     "index needs an absolute path", "index needs an absolute path", True),
    ("source index without its bytes",
     references(index="/x/tokens.idx", index_xxh64="0123456789abcdef"),
     "index_bytes", "index_bytes", True),
    # the shards
    ("shards missing", put("shards", DROP), "shards", "shards", True),
    ("shards an object", put("shards", {}), "shards", "shards", True),
    ("shard entry not an object", edit(lambda m: m["shards"].__setitem__(
        1, "shard-00001.zst")), "shard entry 1", "shard entry 1", True),
    ("shard entry without xxh64", put("shards", 1, "xxh64", DROP),
     "shard entry 1", "shard entry 1", True),
    ("shard entry without bytes", put("shards", 1, "bytes", DROP),
     "shard entry 1", "shard entry 1", True),
    ("shard rows as text", put("shards", 1, "rows", "8"), "shard entry 1",
     "shard entry 1", True),
    ("shard rows negative", put("shards", 1, "rows", -8), "shard entry 1",
     "shard entry 1", True),
    ("shard file skipped", put("shards", 1, "file", "shard-00002.zst"),
     "shard 1 is shard-00001.zst", "shard 1 is shard-00001.zst", True),
    ("shard of no rows", shard_rows(0, 0), "holds no rows", "holds no rows",
     True),
    ("fewer tokens than rows", shard_rows(8, 7), "7 tokens in 8 rows",
     "7 tokens in 8 rows", True),
    ("more tokens than rows of L", shard_rows(8, 129), "129 tokens in 8 rows",
     "129 tokens in 8 rows", True),
    ("more frames than bytes", shard_rows(8, 8, nbytes=40, rpf=1),
     "more than its 40 bytes", "more than its 40 bytes", True),
    ("shard totals past 2^64", edit(shards_overflow), "the totals overflow",
     "its shards 18446744073709551616", True),
    ("rows total missing", put("rows", DROP), "rows", "rows", True),
    ("tokens total as text", put("tokens", "317"), "tokens", "tokens", True),
    # the inputs
    ("inputs an object", put("inputs", {}), "\"inputs\" must be an array",
     "\"inputs\" must be an array", True),
    ("inputs null", put("inputs", None), "\"inputs\" must be an array",
     "\"inputs\" must be an array", True),
    ("input without tokens", put("inputs", 0, "tokens", DROP), "input 0",
     "input 0", True),
    ("input not an object", put("inputs", [5]), "input 0", "input 0", True),
    ("input sequences past 2^64", edit(inputs_overflow),
     "input 1: the totals overflow", "stats.sequences", True),
    # the stats
    ("stats without packed", put("stats", "packed", DROP), "stats", "stats",
     True),
    ("stats without items", put("stats", "items", DROP), "stats", "stats",
     True),
    ("stats rows negative", put("stats", "rows", -1), "stats", "stats",
     True),
    ("stats packed.rows", edit(lambda m: m["stats"]["packed"].update(
        rows=21)), "stats.packed.rows", "stats.packed.rows", True),
    ("stats packed.pad_tokens", edit(lambda m: m["stats"]["packed"].update(
        pad_tokens=4)), "stats.packed.pad_tokens",
     "stats.packed.pad_tokens", True),
    ("stats sequences, no inputs", edit(lambda m: (
        m.pop("inputs"), m["stats"].update(sequences=-1))), "stats", "stats",
     True),
    ("stats lower_bound under the tokens'", edit(stats_add("lower_bound",
                                                           -1)),
     "lower_bound 19 is outside 20..20", "lower_bound 19 is outside 20..20",
     True),
    ("stats items under rows", put("stats", "items", 19),
     "stats.items and max_seqs_in_row", "stats.items and max_seqs_in_row",
     True),
    ("stats max_seqs_in_row over items", put("stats", "max_seqs_in_row", 35),
     "stats.items and max_seqs_in_row", "stats.items and max_seqs_in_row",
     True),
    ("stats max_seqs_in_row 0", put("stats", "max_seqs_in_row", 0),
     "stats.items and max_seqs_in_row", "stats.items and max_seqs_in_row",
     True),
    ("rows x L past 2^64", edit(slots_overflow), "rows x max_seq_len",
     "stats.packed.slots", True),
    ("no shards, stats say items", edit(lambda m: m.update(
        shards=[], rows=0, tokens=0, stats=None)), "lists no shards",
     "lists no shards", True),
    # the directory and the shards' bytes
    ("shard missing", remove("shard-00001.zst"), "shard-00001.zst",
     "shard-00001.zst", True),
    ("shard a directory", made_dir("shard-00001.zst"), "shard-00001.zst",
     "shard-00001.zst", True),
    ("stray shard of one digit", lambda d: copy_shard(
        d, "shard-00001.zst", "shard-2.zst"), "shard-2.zst: not listed",
     "shard-2.zst: not listed", True),
    ("stray shard of six digits", lambda d: copy_shard(
        d, "shard-00001.zst", "shard-000002.zst"),
     "shard-000002.zst: not listed", "shard-000002.zst: not listed", True),
    ("stray manifest.json.tmp", stray_manifest_tmp,
     "manifest.json.tmp: not listed", "manifest.json.tmp: not listed",
     False),
    ("shard xxh64 another", put("shards", 0, "xxh64", "0123456789abcdef"),
     "xxh64", "xxh64", False),
    ("shard bytes one less", shard_bytes(-1), "shard-00000.zst",
     "shard-00000.zst", True),
    ("shard bytes one more", shard_bytes(1), "shard-00000.zst",
     "shard-00000.zst", True),
]

# changes both readers accept: what is optional, and what a reader ignores
ACCEPTED = [
    ("inputs absent", put("inputs", DROP)),
    ("stats absent", put("stats", DROP)),
    ("stats null", put("stats", None)),
    ("overlong absent", put("overlong", DROP)),
    ("max_seqs_per_row absent", put("max_seqs_per_row", DROP)),
    ("version 4, storage tokens", put("storage", "tokens")),
    ("keys a reader does not know", put("comment", {"any": [1, "thing"]})),
    ("another shuffle seed", put("seed", 8)),
    ("reindented", text(lambda b: json.dumps(json.loads(b),
                                             indent=7).encode())),
    ("a file of another name beside the shards", lambda d: copy_shard(
        d, "shard-00001.zst", "shard-00001.zst.bak")),
]

def nested(levels):
    """A "comment" key nesting the document `levels` deep (its root
    object counts one)."""
    return text(lambda b: b.replace(
        b"{", b'{"comment": ' + b"[" * (levels - 1) + b"]" * (levels - 1)
        + b",", 1))


# JSON that one parser or the other would take its own way (a duplicated
# key: simdjson reads the first value, Python's json the last; NaN; depth
# past either parser's limit): both refuse, at the same bounds
CHECKS += [
    ("a key given twice", text(lambda b: b.replace(
        b'"max_seq_len": 16,', b'"max_seq_len": 16, "max_seq_len": 32,')),
     'key "max_seq_len" given twice', 'key "max_seq_len" given twice', True),
    ("a key given twice in a shard's entry", text(lambda b: b.replace(
        b'"rows": 12,', b'"rows": 10, "rows": 12,', 1)),
     'key "rows" given twice', 'key "rows" given twice', True),
    ("a key given twice in an unread object",
     text(lambda b: b.replace(b"{", b'{"comment": {"a": 1, "a": 2}, ', 1)),
     'key "a" given twice', 'key "a" given twice', True),
    ("two keys given twice: the one whose second use comes first",
     text(lambda b: b.replace(
         b"{", b'{"comment": {"a": 1, "b": 1, "b": 2, "a": 2}, ', 1)),
     'key "b" given twice', 'key "b" given twice', True),
    ("NaN in a figure no reader checks", text(lambda b: b.replace(
        b'"efficiency": 0.990625', b'"efficiency": NaN')),
     "invalid JSON", "NaN is not a JSON number", True),
    ("Infinity in a figure no reader checks", text(lambda b: b.replace(
        b'"efficiency": 0.990625', b'"efficiency": -Infinity')),
     "invalid JSON", "Infinity is not a JSON number", True),
    ("nested one level past the limit", nested(MANIFEST_MAX_DEPTH + 1),
     "too deep", f"nested deeper than {MANIFEST_MAX_DEPTH} levels", True),
    ("nested past Python's recursion limit", nested(3000),
     "too deep", f"nested deeper than {MANIFEST_MAX_DEPTH} levels", True),
]
ACCEPTED += [
    ("nested to the limit", nested(MANIFEST_MAX_DEPTH)),
    ("one key in two objects", put("comment", {"max_seq_len": 1})),
]


@pytest.fixture
def golden(tmp_path):
    d = tmp_path / "set"
    shutil.copytree(GOLDEN, d)
    return str(d)


def test_golden_passes_both(golden, prepack_bin):
    p = subprocess.run([prepack_bin, "verify", golden], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stdout + p.stderr
    ShardSet(golden).verify()


@pytest.mark.parametrize("name,change,c_says,py_says,at_open", CASES,
                         ids=[c[0] for c in CASES])
def test_edit_refused_by_both(golden, prepack_bin, name, change, c_says,
                              py_says, at_open):
    change(golden)
    p = subprocess.run([prepack_bin, "verify", golden], capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 1, p.stdout + p.stderr
    assert c_says in p.stdout, p.stdout
    for backend in BACKENDS:
        with pytest.raises(ShardSetError, match=None) as e:
            s = ShardSet(golden, backend=backend)
            assert not at_open, "opened a set that lies at open"
            s.verify()
        assert py_says in str(e.value), str(e.value)


def test_empty_set_that_says_so(tmp_path, prepack_bin):
    """Packed from sequences that all drop: zero shards, and the stats say
    nothing was placed. Both readers accept it as empty."""
    src = tmp_path / "long.jsonl"
    src.write_text('{"input_ids": [1, 2, 3, 4, 5]}\n')
    out = tmp_path / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                    "--max-seq-len", "4", "--overlong", "drop", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    assert json.load(open(out / "manifest.json"))["shards"] == []
    subprocess.run([prepack_bin, "verify", str(out)], check=True,
                   capture_output=True)
    s = ShardSet(out)
    assert len(s) == 0
    s.verify()


def test_pad_multiple_raised_is_refused_by_every_reader(tmp_path, prepack_bin):
    """pad_multiple edited from 8 to 64 (still dividing L): rows whose
    sequences, padded to 64, no longer fit L. verify refuses the set, and
    so must every reader that pads (ShardSet's rows, PackedDataset's
    batches), by the one rule: a row's padded sequences fit L."""
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input_ids": list(range(1, n + 1))})
                           + "\n" for n in (40, 30, 20, 10, 9, 50, 7, 60)))
    out = tmp_path / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                    "--max-seq-len", "128", "--pad-multiple", "8", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    edit(lambda m: m.update(pad_multiple=64))(str(out))
    p = subprocess.run([prepack_bin, "verify", str(out)], capture_output=True,
                       text=True)
    assert p.returncode == 1 and "padded to multiples of 64" in p.stdout
    backends = ["python", "c"] if os.environ.get("PREPACK_LIBRARY") \
        else ["python"]
    for backend in backends:
        s = ShardSet(str(out), backend=backend)
        with pytest.raises(ShardSetError, match="padded to multiples of 64"):
            [s[i] for i in range(len(s))]
    if not os.environ.get("PREPACK_LIBRARY"):
        return
    from prepack.torch import PackedDataset
    for backend in backends:
        ds = PackedDataset(str(out), batch_rows=1, form="varlen",
                           backend=backend)
        with pytest.raises(ShardSetError, match="padded to multiples of 64"):
            for batch in ds:
                assert batch["input_ids"].shape[-1] <= 128


def refused_by_c(d, prepack_bin):
    p = subprocess.run([prepack_bin, "verify", d], capture_output=True,
                       text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def python_verdict(d, backend="python"):
    """None when ShardSet accepts the set (open, then verify), else
    (message, whether it refused at open)."""
    try:
        s = ShardSet(d, backend=backend)
    except ShardSetError as e:
        return str(e), True
    try:
        s.verify()
    except ShardSetError as e:
        return str(e), False
    return None


@pytest.mark.parametrize("name,change,c_says,py_says,at_open", CHECKS,
                         ids=[c[0] for c in CHECKS])
def test_every_check_refuses_in_both(golden, prepack_bin, name, change,
                                     c_says, py_says, at_open):
    change(golden)
    rc, out = refused_by_c(golden, prepack_bin)
    assert rc == 1 and c_says in out, out
    for backend in BACKENDS:
        verdict = python_verdict(golden, backend)
        assert verdict is not None, f"ShardSet({backend!r}) accepted it"
        assert py_says in verdict[0] and verdict[1] == at_open, verdict


@pytest.mark.parametrize("name,change", ACCEPTED,
                         ids=[c[0] for c in ACCEPTED])
def test_accepted_by_both(golden, prepack_bin, name, change):
    change(golden)
    rc, out = refused_by_c(golden, prepack_bin)
    assert rc == 0, out
    for backend in BACKENDS:
        assert python_verdict(golden, backend) is None, backend


# what a version 1 set (fixtures/sets/v1-uint16, an earlier writer's)
# says of its storage: nothing a reader of tokens needs
ACCEPTED_V1 = [
    ("storage in version 1, ignored", put("storage", "whatever")),
    ("version 2, storage tokens", edit(lambda m: m.update(
        version=2, storage="tokens"))),
    ("version 2, no storage", put("version", 2)),
]


@pytest.mark.parametrize("name,change", ACCEPTED_V1,
                         ids=[c[0] for c in ACCEPTED_V1])
def test_accepted_by_both_in_a_version_1_set(tmp_path, prepack_bin, name,
                                             change):
    d = str(tmp_path / "set")
    shutil.copytree(V1_SET, d)
    change(d)
    rc, out = refused_by_c(d, prepack_bin)
    assert rc == 0, out
    for backend in BACKENDS:
        assert python_verdict(d, backend) is None, backend


def _peak_kib(cmd):
    """The exit status, output and peak resident set (KiB) of one run of
    cmd: wait4's figure is this child's alone, not the test run's."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT)
    _, status, usage = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    return p.returncode, p.stdout.read().decode(), usage.ru_maxrss


def test_a_huge_object_costs_its_keys_once(golden, prepack_bin):
    """The duplicate-key walk over an object of 2M keys (a crafted 22 MB
    manifest; 256 MiB holds 23M) allocates no node per key (a hash set
    took ~60 bytes a key: a 246 MiB manifest of one object went from 1.4
    to 2.7 GB and from 1.5 to 25 s)."""
    path = os.path.join(golden, "manifest.json")
    with open(path, "rb") as f:
        base = f.read()
    head, tail = base.split(b"{", 1)

    def with_comment(open_, item, close):
        """A comment of `keys` items, written in pieces: this process's
        own peak would stand as the child's (wait4 counts it from fork)."""
        with open(path, "wb") as f:
            f.write(head + b'{"comment": ' + open_)
            for lo in range(0, keys, 100_000):
                f.write(b",".join(item % i for i in range(lo, lo + 100_000)))
                f.write(b"," if lo + 100_000 < keys else b"")
            f.write(close + b", " + tail)

    keys = 2_000_000
    with_comment(b"[", b'"k%x", 0', b"]")
    rc, out, as_array = _peak_kib([prepack_bin, "verify", golden])
    assert rc == 0, out
    with_comment(b"{", b'"k%x": 0', b', "k0": 1}')
    rc, out, as_object = _peak_kib([prepack_bin, "verify", golden])
    assert rc == 1 and 'key "k0" given twice' in out, out
    # keys sorted by hash: 32 bytes each, 64 MB; a hash set's nodes took
    # 115 MB and more
    assert as_object - as_array < 96 << 10, (as_array, as_object)
