"""Format version 4 (docs/FORMAT.md): rows hold id codes (a frequent
token in one byte) through the set's id table, which every shard's index
holds with a hash of each frame's compressed bytes. Every set that holds
its tokens is written as version 4, uint16 or uint32; both readers (the C
library's and the pure-Python one) read it and every older version, and
refuse an index or codes that do not add up, naming the shard (and the
frame, for a row)."""
import json
import os
import shutil
import struct
import subprocess
from collections import Counter

import msgpack
import numpy as np
import pytest
import xxhash

from prepack import CorruptShardError, ShardSet, ShardSetError
from prepack._format import FEW_ESCAPES, decode_id_code_rows, decode_id_codes
from shard_edit import (decode_codes, encode_codes, read_shard, rewrite,
                        zstd_frame)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
OLD = {name: os.path.join(ROOT, "fixtures", "sets", name)
       for name in ("v1-uint16", "v1-uint32", "v3-uint32")}


def backends():
    return ["python"] + (["c"] if os.environ.get("PREPACK_LIBRARY") else [])


def write_source(path, docs, masks=None):
    with open(path, "w") as f:
        for i, d in enumerate(docs):
            rec = {"input_ids": [int(x) for x in d]}
            if masks:
                rec["loss_mask"] = masks[i]
            f.write(json.dumps(rec) + "\n")


def source(path):
    with open(path) as f:
        return {i: json.loads(line)["input_ids"] for i, line in enumerate(f)}


def sequences(s):
    out = {}
    for i in range(len(s)):
        r = s[i]
        cu = r["cu_seqlens"]
        for j, q in enumerate(r["seq_ids"]):
            out.setdefault(int(q), []).extend(
                r["input_ids"][cu[j]:cu[j + 1]].tolist())
    return out


def pack(prepack_bin, src, out, *extra):
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out),
                    "--max-seq-len", "64", "--rows-per-frame", "3",
                    "--shard-rows", "7", "--quiet", *extra], check=True,
                   stdout=subprocess.DEVNULL)


def zipf_docs(rng, n, vocab, big=()):
    """Documents of ids drawn Zipf-like below vocab (so ranks matter),
    with the ids in `big` sprinkled in (past any table: escapes)."""
    docs = []
    for _ in range(n):
        d = np.minimum(rng.zipf(1.3, rng.integers(1, 60)), vocab) - 1
        d = [int(x) for x in d]
        if big:
            d[rng.integers(len(d))] = int(rng.choice(big))
        docs.append(d)
    return docs


@pytest.fixture(params=["uint16", "uint32"])
def v4set(request, tmp_path, prepack_bin):
    """A version 4 set of each dtype (7 shards of up to 7 rows, frames of
    3): uint16 over the whole 16-bit range, uint32 with ids past 2^24."""
    rng = np.random.default_rng(11)
    if request.param == "uint16":
        docs = zipf_docs(rng, 80, 65536, big=(65535, 40000, 300))
    else:
        docs = zipf_docs(rng, 80, 300000, big=(2**24 + 7, 2**32 - 1,
                                                2**22, 2**22 - 1))
    masks = [[int(x) for x in rng.integers(0, 2, len(d))] for d in docs]
    src = tmp_path / "src.jsonl"
    write_source(src, docs, masks)
    pack(prepack_bin, src, tmp_path / "set")
    return tmp_path / "set", src, request.param


@pytest.mark.parametrize("backend", backends())
def test_new_sets_are_version_4_and_read_back(v4set, backend, prepack_bin):
    set_dir, src, dtype = v4set
    m = json.load(open(set_dir / "manifest.json"))
    assert (m["version"], m["token_dtype"]) == (4, dtype)
    s = ShardSet(str(set_dir), backend=backend)
    assert sequences(s) == source(src)
    s.verify()
    out = subprocess.run([prepack_bin, "verify", str(set_dir), "--input",
                          str(src)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("name", sorted(OLD))
def test_old_versions_still_read(name, backend, prepack_bin):
    """Sets the writers of versions 1 and 3 made, committed: the same
    tokens as their JSON lines, through either reader and verify."""
    s = ShardSet(OLD[name], backend=backend)
    assert s.manifest["version"] == int(name[1])
    assert sequences(s) == source(OLD[name] + ".jsonl")
    s.verify()
    out = subprocess.run([prepack_bin, "verify", OLD[name], "--input",
                          OLD[name] + ".jsonl"], capture_output=True,
                         text=True)
    assert out.returncode == 0, out.stderr


def test_codes_and_table_are_what_the_format_says(v4set):
    """Every shard holds the same table: the ids of the set's first frame
    by count, most first, ties by the smaller id; each row's codes, read
    by the format's text (shard_edit), are its tokens; frequent ids take
    one byte, an id past the table or 2^22 an escape."""
    set_dir, src, dtype = v4set
    width = 2 if dtype == "uint16" else 4
    m = json.load(open(set_dir / "manifest.json"))
    s = ShardSet(str(set_dir))
    first = [s[i]["input_ids"] for i in range(m["rows_per_frame"])]
    counts = Counter(int(x) for r in first for x in r if x < 2**22)
    want = sorted(counts, key=lambda i: (-counts[i], i))[:16320]
    row = 0
    for e in m["shards"]:
        frames, table, w = read_shard(set_dir / e["file"])
        assert (table, w) == (want, width)
        for rows in frames:
            for r in rows:
                ids = decode_codes(r["input_ids"], table, width)
                assert ids == s[row]["input_ids"].tolist()
                assert r["input_ids"] == encode_codes(ids, table, width)
                row += 1
    assert row == len(s)


@pytest.mark.parametrize("dtype", ["uint16", "uint32"])
def test_bytes_identical_at_any_thread_count(tmp_path, prepack_bin, dtype):
    rng = np.random.default_rng(5)
    docs = zipf_docs(rng, 200, 65536 if dtype == "uint16" else 300000)
    src = tmp_path / "src.jsonl"
    write_source(src, docs)
    sets = []
    for threads in ("1", "2", "3"):
        out = tmp_path / f"t{threads}"
        pack(prepack_bin, src, out, "--threads", threads,
             *(["--token-dtype", "uint32"] if dtype == "uint32" else []))
        sets.append({n: (out / n).read_bytes() for n in os.listdir(out)})
    assert sets[0] == sets[1] == sets[2]


@pytest.mark.parametrize("L", [1024, 4096, 2**20])
def test_default_frames_hold_2_20_tokens(tmp_path, prepack_bin, L):
    """rows_per_frame 0: as many rows of L as hold 2^20 tokens (at least
    one), uint16 or uint32."""
    for name, ids in (("u16", [1, 2, 3]), ("u32", [70000, 2, 3])):
        write_source(tmp_path / f"{name}.jsonl", [ids])
        out = tmp_path / name
        subprocess.run([prepack_bin, "pack", str(tmp_path / f"{name}.jsonl"),
                        "-o", str(out), "--max-seq-len", str(L), "--quiet"],
                       check=True, stdout=subprocess.DEVNULL)
        m = json.load(open(out / "manifest.json"))
        assert m["rows_per_frame"] == max(1, 2**20 // L), (name, L)


def test_python_decoding_matches_the_format(v4set):
    """_format.decode_id_codes against the format's text on every row,
    and on every cut, extended or mangled copy of one row's codes: the
    same ids or both refuse (None; the text's walk raises or disagrees on
    the count)."""
    set_dir, _, dtype = v4set
    width = 2 if dtype == "uint16" else 4
    frames, table, _ = read_shard(set_dir / "shard-00000.zst")
    np_table = np.array(table, np.uint32)
    npdtype = np.dtype(f"<u{width}")
    rng = np.random.default_rng(2)
    codes = [r["input_ids"] for rows in frames for r in rows]
    cases = list(codes)
    for c in codes[:6]:
        cases += [c[:-1], c + b"\x00", c[1:], bytes([255]) + c,
                  bytes(rng.integers(0, 256, len(c), dtype=np.uint8))]
    for c in cases:
        try:
            want = decode_codes(c, table, width)
        except IndexError:
            want = None
        for n in {len(want) if want else 1, 5}:
            got = decode_id_codes(c, npdtype, n, np_table)
            if want is None or len(want) != n:
                assert got is None
            else:
                assert got.tolist() == want


def random_codes(rng, width, n, escapes, leads):
    """n codes drawn at random: an escape (and any id bytes) with chance
    `escapes`, a two-byte code with chance `leads`, else a one-byte code;
    the id bytes and second bytes take any value, 255 included."""
    out = bytearray()
    for kind in rng.random(n):
        if kind < escapes:
            out += bytes([255]) + rng.bytes(width)
        elif kind < escapes + leads:
            out += bytes([int(rng.integers(192, 255)),
                          int(rng.integers(0, 256))])
        else:
            out.append(int(rng.integers(0, 192)))
    return bytes(out)


@pytest.mark.parametrize("width", [2, 4])
def test_python_decoding_any_bytes(width):
    """decode_id_codes on random codes and random bytes, few escapes
    (found by parity) and many (found by jumps), against the format's
    text walked a code at a time: the same ids, or both refuse. Long runs
    of leads, escapes after them, ids holding 255 and rows cut one byte
    short or long are among the cases."""
    rng = np.random.default_rng(31)
    npdtype = np.dtype(f"<u{width}")
    checked = {"parity": 0, "jumps": 0}
    for case in range(600):
        escapes = [0.0, 0.001, 0.02, 0.2, 0.6][case % 5]
        leads = [0.0, 0.3, 0.6, 0.97][case // 5 % 4]
        codes = random_codes(rng, width, int(rng.integers(1, 1500)),
                             escapes, leads)
        if case % 7 == 0:
            codes = rng.bytes(len(codes))
        elif case % 7 == 1:
            codes = codes[:-1]
        elif case % 7 == 2:
            codes += bytes([int(rng.integers(192, 256))])
        size = int(rng.choice([0, 1, 192, 193, 16320, 16320]))
        table = rng.integers(0, 2**(8 * width), size, dtype=np.uint64)
        np_table = table.astype(np.uint32 if width == 4 else np.uint16)
        try:
            want = decode_codes(codes, np_table.tolist(), width)
        except IndexError:
            want = None
        path = "parity" if codes.count(255) <= FEW_ESCAPES else "jumps"
        for n in {len(want) if want else 1, len(want) + 1 if want else 2}:
            got = decode_id_codes(codes, npdtype, n, np_table)
            if want is None or len(want) != n:
                assert got is None, (case, n)
            else:
                assert got is not None and got.tolist() == want, case
                checked[path] += 1
    assert min(checked.values()) > 40, checked


@pytest.mark.parametrize("width", [2, 4])
def test_rows_decoded_together_are_rows_decoded_alone(width):
    """decode_id_code_rows (a frame's rows in one pass) gives each row's
    decode_id_codes, and refuses whenever one row alone would be refused,
    even where a code running into the next row leaves every count right
    (a row ending in a lead, the next short of one code)."""
    rng = np.random.default_rng(33)
    npdtype = np.dtype(f"<u{width}")
    table = rng.integers(0, 2**(8 * width), 16320, dtype=np.uint64).astype(
        npdtype)
    lone = decode_id_codes(bytes([200]), npdtype, 1, table)
    assert lone is None
    assert decode_id_code_rows([bytes([200]), bytes([7, 9])], npdtype,
                               [1, 1], table) is None
    refused = 0
    for case in range(300):
        rows = [random_codes(rng, width, int(rng.integers(1, 300)),
                             [0.0, 0.01, 0.3][case % 3], 0.3)
                for _ in range(int(rng.integers(1, 12)))]
        tokens = [len(decode_codes(r, table.tolist(), width)) for r in rows]
        if case % 4 == 1:  # one row mangled: cut, lengthened or recounted
            k = int(rng.integers(len(rows)))
            rows[k] = [rows[k][:-1], rows[k] + bytes([250]),
                       rows[k]][case % 3]
            tokens[k] += case % 3 == 2
        alone = [decode_id_codes(r, npdtype, t, table)
                 for r, t in zip(rows, tokens)]
        together = decode_id_code_rows(rows, npdtype, tokens, table)
        if any(a is None for a in alone):
            assert together is None, case
            refused += 1
        else:
            assert together is not None, case
            assert [t.tolist() for t in together] == \
                [a.tolist() for a in alone], case
    assert refused > 30


# ---- hostile sets: both readers and verify refuse, naming the shard ------

def verify_refuses(set_dir, prepack_bin, *patterns):
    """`prepack verify` exits 1 naming shard 0 and every pattern."""
    out = subprocess.run([prepack_bin, "verify", str(set_dir)],
                         capture_output=True, text=True)
    said = out.stdout + out.stderr
    assert out.returncode == 1 and "shard-00000.zst" in said, said
    assert all(p in said for p in patterns), said


def refused(set_dir, prepack_bin, backend, *patterns):
    verify_refuses(set_dir, prepack_bin, *patterns)
    with pytest.raises((CorruptShardError, ShardSetError)) as e:
        s = ShardSet(str(set_dir), backend=backend)
        for i in range(len(s)):
            s[i]
    assert "shard-00000.zst" in str(e.value)
    assert all(p in str(e.value) for p in patterns), str(e.value)


def mangled(v4set, how):
    """The set with shard 0 rewritten by how(frames, table, width) ->
    (frames, table or None), the rest made to agree."""
    set_dir = v4set[0]
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    frames, table = how(frames, table, width)
    rewrite(str(set_dir), frames, table=table, width=width)
    return set_dir


def with_codes(change):
    def how(frames, table, width):
        r = frames[1][0]
        r["input_ids"] = change(r["input_ids"], table, width)
        return frames, table
    return how


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("change", [
    lambda c, t, w: c[:-1],                      # cut short
    lambda c, t, w: c + b"\x00",                 # a code left over
    lambda c, t, w: c[:-1] + b"\xff",            # an escape cut short
    lambda c, t, w: c[:-1] + bytes([254]),       # a two-byte code cut short
    lambda c, t, w: b"",                         # no codes at all
    lambda c, t, w: c + bytes([255]) + bytes(w),  # one escape too many
])
def test_codes_that_are_not_the_rows_tokens(v4set, prepack_bin, backend,
                                            change):
    set_dir = mangled(v4set, with_codes(change))
    refused(set_dir, prepack_bin, backend, "frame 1", "id codes")


@pytest.mark.parametrize("backend", backends())
def test_a_rank_past_the_table(v4set, prepack_bin, backend):
    """The table cut to its first 3 ids; rows still use the ranks past
    them."""
    set_dir = mangled(v4set, lambda f, t, w: (f, t[:3]))
    refused(set_dir, prepack_bin, backend, "id codes")


@pytest.mark.parametrize("backend", backends())
def test_a_version_4_shard_without_its_index(v4set, prepack_bin, backend):
    set_dir = mangled(v4set, lambda f, t, w: (f, None))
    refused(set_dir, prepack_bin, backend, "frames cover", "index")


@pytest.mark.parametrize("backend", backends())
def test_an_index_in_an_older_set(tmp_path, prepack_bin, backend):
    """fixtures/sets/v1-uint16 with an index added to shard 0: a version
    1 set holds nothing between its frames and its seek table."""
    set_dir = tmp_path / "set"
    shutil.copytree(OLD["v1-uint16"], set_dir)
    frames, _, _ = read_shard(set_dir / "shard-00000.zst")
    rewrite(str(set_dir), frames, table=[1, 2, 3], width=2)
    refused(set_dir, prepack_bin, backend, "frames cover")


def flip_in_shard(set_dir, at):
    """Flips byte `at` (from the end when negative) of shard 0, and makes
    the manifest's size and hash agree."""
    p = set_dir / "shard-00000.zst"
    data = bytearray(p.read_bytes())
    data[at] ^= 0x40
    p.write_bytes(bytes(data))
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["shards"][0]["xxh64"] = xxhash.xxh64_hexdigest(bytes(data))
    mp.write_text(json.dumps(m))


def index_at(set_dir):
    data = (set_dir / "shard-00000.zst").read_bytes()
    return data.rfind(b"\x5d\x2a\x4d\x18")


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("where,says", [
    (0, "no index before the seek table"),      # its magic
    (8, "bad index frame header"),              # its id count
    (12, "bad index frame header"),             # its frame count
    (16, "its index does not match its hash"),  # the hash itself
    (25, "its index does not match its hash"),  # an id
])
def test_a_damaged_index(v4set, prepack_bin, backend, where, says):
    set_dir = v4set[0]
    flip_in_shard(set_dir, index_at(set_dir) + where)
    refused(set_dir, prepack_bin, backend, says)


@pytest.mark.parametrize("backend", backends())
def test_a_frame_whose_bytes_the_index_does_not_know(v4set, prepack_bin,
                                                     backend):
    """Frame 0's bytes changed and its seek table entry made to agree:
    only the index's hash of the compressed bytes sees it, before zstd
    reads them."""
    set_dir = v4set[0]
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    rewrite(str(set_dir), frames, table=table, width=width)
    data = bytearray((set_dir / "shard-00000.zst").read_bytes())
    at = index_at(set_dir) + 24 + len(table) * width  # frame 0's hash
    data[at] ^= 1
    rest_at = index_at(set_dir) + 24
    end = len(data) - 9 - 12 * len(frames) - 8
    data[index_at(set_dir) + 16:index_at(set_dir) + 24] = struct.pack(
        "<Q", xxhash.xxh64_intdigest(bytes(data[rest_at:end])))
    (set_dir / "shard-00000.zst").write_bytes(bytes(data))
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["shards"][0]["xxh64"] = xxhash.xxh64_hexdigest(bytes(data))
    mp.write_text(json.dumps(m))
    refused(set_dir, prepack_bin, backend, "frame 0",
            "do not match the shard's index")


@pytest.mark.parametrize("backend", backends())
def test_an_index_claiming_too_many_ids(v4set, prepack_bin, backend):
    """An index longer than 16320 ids (whatever it says) is refused when
    the set opens, before anything is sized from it."""
    set_dir = v4set[0]
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    rewrite(str(set_dir), frames, table=list(range(16321)), width=width)
    refused(set_dir, prepack_bin, backend, "frames cover")


@pytest.mark.parametrize("backend", backends())
def test_a_token_dtype_edited_on_a_version_4_set(v4set, prepack_bin,
                                                 backend):
    set_dir, _, dtype = v4set
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["token_dtype"] = "uint32" if dtype == "uint16" else "uint16"
    mp.write_text(json.dumps(m))
    with pytest.raises((CorruptShardError, ShardSetError)):
        s = ShardSet(str(set_dir), backend=backend)
        for i in range(len(s)):
            s[i]
    out = subprocess.run([prepack_bin, "verify", str(set_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 1


def test_rows_read_at_random_are_the_rows_read_in_order(tmp_path,
                                                        prepack_bin):
    """Frames of many chunks (the pure-Python reader decompresses and
    unpacks them a chunk at a time, only as far as the row asked for):
    rows read in a random order, hopping between frames and back, are the
    rows read in order, through either reader."""
    rng = np.random.default_rng(12)
    docs = [[int(x) for x in np.minimum(rng.zipf(1.2, int(n)), 60000) - 1]
            for n in rng.integers(50, 1100, 600)]
    src = tmp_path / "src.jsonl"
    write_source(src, docs)
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(tmp_path / "s"),
                    "--max-seq-len", "1024", "--overlong", "split",
                    "--rows-per-frame", "200", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    m = json.load(open(tmp_path / "s" / "manifest.json"))
    entry = m["shards"][0]
    assert entry["rows"] > 200  # two frames at least
    first = ShardSet(str(tmp_path / "s"), backend="python")
    want = [first[i] for i in range(len(first))]
    for backend in backends():
        s = ShardSet(str(tmp_path / "s"), backend=backend)
        for i in rng.permutation(len(s)).tolist() + [150, 20, 199, 201]:
            got = s[i]
            assert got.keys() == want[i].keys()
            for k in got:
                assert np.array_equal(got[k], want[i][k]), (backend, i, k)
    assert sum(len(d) for d in docs) == sum(len(r["input_ids"])
                                            for r in want)


# Frame 1's content stored as more than one zstd frame, its hashes made
# to agree: zstd alone would read on and serve what follows.
NOT_ONE_FRAME = {
    "two frames": lambda c: zstd_frame(c[:len(c) // 2], False)
    + zstd_frame(c[len(c) // 2:], False),
    "a skippable frame after": lambda c: zstd_frame(c)
    + struct.pack("<II", 0x184D2A50, 4) + b"junk",
    "a byte after": lambda c: zstd_frame(c) + b"\x28",
    "a cut magic after": lambda c: zstd_frame(c) + b"\x28\xb5\x2f",
    "a skippable frame": lambda c: struct.pack("<II", 0x184D2A50, len(c))
    + c,
}


@pytest.mark.parametrize("kind", sorted(NOT_ONE_FRAME))
@pytest.mark.parametrize("backend", backends())
def test_a_frame_that_is_not_one_zstd_frame_is_refused(v4set, prepack_bin,
                                                       backend, kind):
    """Every read of such a frame is refused, in any order and on every
    path (streamed, whole, once found damaged), by both readers and
    verify; the frames around it read."""
    set_dir = v4set[0]
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    rewrite(set_dir, frames, table=table, width=width,
            store=lambda i, c: NOT_ONE_FRAME[kind](c) if i == 1
            else zstd_frame(c))
    r = len(frames[0])
    for order in ([r + 1, r + 2, r, r + 1], list(range(2 * r + 1))):
        s = ShardSet(str(set_dir), backend=backend)
        for i in order:
            if r <= i < 2 * r:
                with pytest.raises(CorruptShardError,
                                   match="frame 1: not one zstd frame"):
                    s[i]
            else:
                s[i]
    verify_refuses(set_dir, prepack_bin, "frame 1: not one zstd frame")


@pytest.mark.parametrize("backend", backends())
def test_an_old_frame_that_is_not_one_zstd_frame_is_refused(tmp_path,
                                                            backend):
    """The same rule on a version 1 set (no index: read whole)."""
    old = tmp_path / "v1"
    shutil.copytree(os.path.join(ROOT, "fixtures", "sets", "v1-uint16"),
                    old)
    frames, _, _ = read_shard(old / "shard-00000.zst")
    rewrite(old, frames, store=lambda i, c: NOT_ONE_FRAME["two frames"](c)
            if i == 1 else zstd_frame(c))
    s = ShardSet(str(old), backend=backend)
    r = len(frames[0])
    s[0]
    for i in (r, r, r + 1):
        with pytest.raises(CorruptShardError,
                           match="frame 1: not one zstd frame"):
            s[i]


# Frame 1's content (what its seek table entry and the index vouch for)
# not the array of rows its header says, past the row a random read asks
# for.
SHORT_OF_ITS_ROWS = {
    "fewer rows": lambda head, rows: head + b"".join(rows[:-1]),
    "more rows": lambda head, rows: head + b"".join(rows + rows[:1]),
    "not msgpack after": lambda head, rows: head + b"".join(rows[:-1])
    + b"\xc1",
}


@pytest.mark.parametrize("kind", sorted(SHORT_OF_ITS_ROWS))
@pytest.mark.parametrize("backend", backends())
def test_a_frame_all_there_is_checked_before_a_random_row(v4set, backend,
                                                         kind):
    """A random read that has decompressed the frame to its end (a small
    frame: the first chunk) checks every row before it hands one out, as
    a read to the last row does: refused, then and on every later read."""
    set_dir = v4set[0]
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    r = len(frames[1])
    assert r >= 3
    packed = [msgpack.packb(row, use_bin_type=True) for row in frames[1]]
    head = b"\xdd" + struct.pack(">I", r)
    frames[1] = SHORT_OF_ITS_ROWS[kind](head, packed)
    rewrite(set_dir, frames, table=table, width=width)
    s = ShardSet(str(set_dir), backend=backend)
    for i in (r + 1, r + 2, r + 1, r):
        with pytest.raises(CorruptShardError,
                           match="frame 1: not a msgpack array of"):
            s[i]
    s[0]


def break_frame_1_checksum(set_dir):
    """Frame 1's seek table checksum flipped, its bytes still the index's,
    the manifest's hash made to agree."""
    data = bytearray((set_dir / "shard-00000.zst").read_bytes())
    n = int.from_bytes(data[-9:-5], "little")
    data[len(data) - 9 - 12 * n + 12 + 8] ^= 1
    (set_dir / "shard-00000.zst").write_bytes(bytes(data))
    mp = set_dir / "manifest.json"
    m = json.load(open(mp))
    m["shards"][0]["xxh64"] = xxhash.xxh64_hexdigest(bytes(data))
    mp.write_text(json.dumps(m))


@pytest.mark.parametrize("backend", backends())
def test_a_frame_read_in_order_is_checked_whole_first(v4set, prepack_bin,
                                                      backend):
    """A frame whose content fails its seek table checksum under a right
    index: read from its first row (in order), refused by both readers at
    that row, and at every row after; verify refuses."""
    set_dir = v4set[0]
    break_frame_1_checksum(set_dir)
    s = ShardSet(str(set_dir), backend=backend)
    r = s.rows_per_frame
    for i in range(r, 2 * r):
        with pytest.raises(CorruptShardError,
                           match="frame 1: content does not match its seek"):
            s[i]
    s[0]  # frame 0 is intact
    verify_refuses(set_dir, prepack_bin, "frame 1: content does not match")


@pytest.mark.parametrize("backend", backends())
def test_a_damaged_frame_read_at_random_is_refused_once_found(v4set,
                                                              backend):
    """The same frame read from its last row first (a random read that
    stops at that row): either reader has then read the frame to its end,
    refuses it, and from then on refuses every row of it, whatever the
    order (the whole-frame path)."""
    set_dir = v4set[0]
    break_frame_1_checksum(set_dir)
    s = ShardSet(str(set_dir), backend=backend)
    r = s.rows_per_frame
    with pytest.raises(CorruptShardError, match="frame 1: content does not"):
        s[2 * r - 1]
    for i in (r + 1, r, 2 * r - 1):
        with pytest.raises(CorruptShardError, match="frame 1: content"):
            s[i]


def test_random_damage_both_readers_agree(v4set, tmp_path):
    """Bytes of shard 0 flipped at random, its rows' codes too (the index
    and seek table made to agree, so the damage reaches the decoders):
    each reader refuses or reads rows, and where both read they read the
    same rows; no crash, no hang."""
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs the C reader")
    set_dir = v4set[0]
    frames0, table, width = read_shard(set_dir / "shard-00000.zst")
    rng = np.random.default_rng(9)
    for trial in range(40):
        d = tmp_path / f"t{trial}"
        shutil.copytree(set_dir, d)
        frames = [[dict(r) for r in rows] for rows in frames0]
        r = frames[rng.integers(len(frames))][0]
        codes = bytearray(r["input_ids"])
        for _ in range(rng.integers(1, 4)):
            codes[rng.integers(len(codes))] = int(rng.integers(0, 256))
        if trial % 3 == 0:
            codes = codes[:rng.integers(len(codes))]
        r["input_ids"] = bytes(codes)
        tab = table if trial % 4 else table[:rng.integers(0, len(table) + 1)]
        rewrite(str(d), frames, table=tab, width=width)
        got = {}
        for backend in ("c", "python"):
            try:
                s = ShardSet(str(d), backend=backend)
                got[backend] = [s[i]["input_ids"].tolist()
                                for i in range(len(s))]
            except (CorruptShardError, ShardSetError) as e:
                got[backend] = "refused"
                assert "shard-00000.zst" in str(e)
        assert got["c"] == got["python"], trial


# ---- row maps (docs/FORMAT.md, "Rows"): keys UTF-8 strings, each field
# once and a bin; both readers and verify refuse alike, read alike ----------

class Packed(bytes):
    """A value already packed (msgpack.packb cannot make a str that is
    not UTF-8)."""


def packed_map(pairs):
    """A msgpack map of (packed key, value) pairs as given: keys of any
    type and twice, which msgpack.packb of a dict cannot make."""
    n = len(pairs)
    head = bytes([0x80 | n]) if n < 16 else b"\xde" + struct.pack(">H", n)
    return head + b"".join(
        k + (v if isinstance(v, Packed) else msgpack.packb(v, use_bin_type=True))
        for k, v in pairs)


def str_key(raw):
    """raw bytes packed as a msgpack str (UTF-8 or not)."""
    return bytes([0xa0 | len(raw)]) + raw


def with_row_pairs(set_dir, change, frame=1):
    """Shard 0 with row 0 of `frame` rewritten as the map of
    change(pairs): its (packed key, value) pairs, in order."""
    frames, table, width = read_shard(set_dir / "shard-00000.zst")
    rows = [msgpack.packb(r, use_bin_type=True) for r in frames[frame]]
    rows[0] = packed_map(change([(msgpack.packb(k), v)
                                 for k, v in frames[frame][0].items()]))
    frames[frame] = b"\xdd" + struct.pack(">I", len(rows)) + b"".join(rows)
    rewrite(str(set_dir), frames, table=table, width=width)
    return set_dir


def replaced(name, value):
    return lambda pairs: [(k, value if k == msgpack.packb(name) else v)
                          for k, v in pairs]


def added(*extra):
    return lambda pairs: pairs + list(extra)


def added_twice(name, value=None):
    """name's pair again at the end (with `value` when given)."""
    key = msgpack.packb(name)
    return lambda pairs: pairs + [(key, dict(pairs)[key] if value is None
                                   else value(dict(pairs)[key]))]


NOT_A_KEY = "a key that is not a UTF-8 string"
BAD_ROW_MAPS = {
    "loss_mask a str": (replaced("loss_mask", "xx"), "loss_mask is not a bin"),
    "loss_mask an int": (replaced("loss_mask", 7), "loss_mask is not a bin"),
    "loss_mask nil": (replaced("loss_mask", None), "loss_mask is not a bin"),
    "seq_ids an array": (replaced("seq_ids", [1, 2]), "seq_ids is not a bin"),
    "seq_starts nil": (added((msgpack.packb("seq_starts"), None)),
                       "seq_starts is not a bin"),
    "ref_source an int": (added((msgpack.packb("ref_source"), 3)),
                          "ref_source is not a bin"),
    "input_ids twice": (added_twice("input_ids"), "input_ids twice"),
    "cu_seqlens twice": (added_twice("cu_seqlens"), "cu_seqlens twice"),
    "loss_mask twice, zeros last": (
        added_twice("loss_mask", lambda m: bytes(len(m))), "loss_mask twice"),
    "an int key": (added((msgpack.packb(5), b"x")), NOT_A_KEY),
    "a nil key": (added((b"\xc0", b"x")), NOT_A_KEY),
    "a bin key": (added((b"\xc4\x02ab", b"x")), NOT_A_KEY),
    "an array key": (added((b"\x91\x01", b"x")), NOT_A_KEY),
    "a byte past ASCII": (added((str_key(b"\xff"), b"x")), NOT_A_KEY),
    "a lone continuation": (added((str_key(b"a\x80"), b"x")), NOT_A_KEY),
    "an overlong NUL": (added((str_key(b"\xc0\x80"), b"x")), NOT_A_KEY),
    "an overlong three bytes": (added((str_key(b"\xe0\x9f\xbf"), b"x")),
                                NOT_A_KEY),
    "a surrogate": (added((str_key(b"\xed\xa0\x80"), b"x")), NOT_A_KEY),
    "past U+10FFFF": (added((str_key(b"\xf4\x90\x80\x80"), b"x")),
                      NOT_A_KEY),
    "a code point cut short": (added((str_key(b"\xe2\x82"), b"x")),
                               NOT_A_KEY),
}


@pytest.mark.parametrize("backend", backends())
@pytest.mark.parametrize("case", sorted(BAD_ROW_MAPS))
def test_a_row_map_the_format_refuses(v4set, prepack_bin, backend, case):
    """Each kind of malformed row map, refused by verify and the reader
    at frame 1 with what is wrong: a malformed loss_mask read as absent
    would train every token, and a field twice is read as its first by
    the C reader and its last by a dict."""
    change, says = BAD_ROW_MAPS[case]
    set_dir = with_row_pairs(v4set[0], change)
    refused(set_dir, prepack_bin, backend, "frame 1", says)


GOOD_ROW_MAPS = {
    "an unknown key twice": added((msgpack.packb("zz"), b"1"),
                                  (msgpack.packb("zz"), 2)),
    "an unknown key's str not UTF-8": added(
        (msgpack.packb("zz"), Packed(b"\xa3\xff\xfe\x80"))),
    "keys of UTF-8 past ASCII": added(
        (str_key("é".encode()), b"1"), (str_key("😀".encode()), 2),
        (str_key("\U0010ffff".encode()), [3]),
        (str_key("\ud7ff".encode()), None)),
    "nested maps of any keys": added(
        (msgpack.packb("zz"), Packed(b"\x82\x01\xc4\x01x\xc0\x02"))),
}


@pytest.mark.parametrize("case", sorted(GOOD_ROW_MAPS))
def test_row_maps_the_format_allows_read_alike(v4set, prepack_bin, case):
    """Unknown keys, whatever their values (twice, a nested map with keys
    of any type, a str that is not UTF-8) and keys of UTF-8 past ASCII:
    both readers ignore them and read the rows they read before; verify
    passes."""
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs the C reader")
    set_dir = v4set[0]
    before = ShardSet(str(set_dir), backend="python")
    want = [before[i] for i in range(len(before))]
    with_row_pairs(set_dir, GOOD_ROW_MAPS[case])
    for backend in ("c", "python"):
        s = ShardSet(str(set_dir), backend=backend)
        got = [s[i] for i in range(len(s))]
        assert len(got) == len(want), backend
        for a, b in zip(got, want):
            assert a.keys() == b.keys(), backend
            for k in a:
                assert np.array_equal(a[k], b[k]), (backend, k)
    out = subprocess.run([prepack_bin, "verify", str(set_dir)],
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
