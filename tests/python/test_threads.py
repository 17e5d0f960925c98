"""--threads: JSONL parsed on worker threads while the reading thread adds
what they parsed to the store in input order. Every input format gives
byte-identical sets, the same report and the same error (message, line,
exit status) at 1, 2, 3 and 7 threads, including inputs of several 16 MiB
chunks with a document cut by a chunk's end and groups across it."""
import json
import os
import random
import struct
import subprocess

import numpy as np
import pytest

import step_inputs as si
from conftest import CORPUS

THREADS = (1, 2, 3, 7)
CHUNK = 16 << 20  # the JSONL reader's chunk (jsonl.cpp kFirstChunk)


def run(bin_, *args):
    return subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def assert_same_at_every_thread_count(bin_, tmp_path, inputs, opts):
    sets, reports = [], []
    for t in THREADS:
        out = tmp_path / f"t{t}"
        p = run(bin_, "pack", *inputs, "-o", out, "--quiet", "--threads", t, *opts)
        assert p.returncode == 0, p.stderr
        sets.append(files(out))
        p = run(bin_, "stats", *inputs, "--json", "--threads", t, *opts)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout)
        r.pop("timings", None)
        r.pop("io", None)
        reports.append(r)
    for t, s, r in zip(THREADS[1:], sets[1:], reports[1:]):
        assert s == sets[0], t
        assert r == reports[0], t


@pytest.fixture(scope="module")
def formats(tmp_path_factory):
    d = tmp_path_factory.mktemp("formats")
    seqs = si.sequences(7, 600)
    paths = {}
    for kind, compress in (("plain", None), ("zst", "zst"), ("gz", "gz")):
        name = {"plain": "a.jsonl", "zst": "a.jsonl.zst", "gz": "a.jsonl.gz"}[kind]
        si.write_jsonl(str(d / name), seqs, seed=3, compress=compress)
        paths[kind] = [d / name]
    si.write_megatron(str(d / "m"), seqs, dtype=__import__("numpy").int32)
    paths["megatron"] = [d / "m"]
    si.write_llmc(str(d / "l.bin"), seqs)
    paths["llmc"] = [d / "l.bin"]
    si.write_raw(str(d / "r.u16"), seqs)
    paths["raw"] = [d / "r.u16", "--format", "raw-u16", "--doc-sep", "0"]
    paths["corpus"] = [CORPUS]
    return paths


@pytest.mark.parametrize("kind", ["plain", "zst", "gz", "megatron", "llmc", "raw", "corpus"])
def test_every_format(prepack_bin, tmp_path, formats, kind):
    inputs = formats[kind]
    assert_same_at_every_thread_count(
        prepack_bin, tmp_path, inputs, ["--max-seq-len", "512", "--overlong", "split"])


def big_jsonl(path, seed, cut_object_at=None, bad_line=None, groups=False):
    """About 40 MB of JSON lines (three chunks). cut_object_at: a record
    written over two lines is placed so a chunk's end falls inside it;
    bad_line: that line holds a record with a negative id. Returns the
    lines written."""
    rng = random.Random(seed)
    lines, size, n = [], 0, 0
    while size < 40 << 20:
        ids = [rng.randrange(60000) for _ in range(rng.randint(0, 700))]
        rec = {"input_ids": ids}
        if groups:
            rec["group"] = n // 3
        if rng.randrange(5) == 0 and ids:
            rec["loss_mask"] = [rng.randrange(2) for _ in ids]
        text = json.dumps(rec)
        if bad_line is not None and len(lines) + 1 == bad_line:
            text = json.dumps({"input_ids": [1, 2, -3]})
        if cut_object_at is not None and size < cut_object_at <= size + len(text) + 1:
            # {"input_ids": [...]} split after its first bracket, so the
            # chunk boundary lands inside the object
            text = text.replace("[", "[\n", 1)
        lines.append(text)
        size += len(text) + 1
        n += 1
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return lines


def test_chunks_a_cut_document_and_groups(prepack_bin, tmp_path):
    path = tmp_path / "big.jsonl"
    big_jsonl(path, 1, cut_object_at=CHUNK - 50, groups=True)
    assert os.path.getsize(path) > 2 * CHUNK
    data = open(path, "rb").read()
    cut = data.rindex(b"\n", 0, CHUNK)  # where the first chunk ends
    assert data[cut - 1:cut] == b"[" and data.index(b"\n", cut + 1) > CHUNK
    assert_same_at_every_thread_count(prepack_bin, tmp_path, [path],
                                      ["--max-seq-len", "4096", "--overlong", "drop"])


@pytest.mark.parametrize("where", [5, 8000, 15000])
def test_errors_are_the_same_at_every_thread_count(prepack_bin, tmp_path, where):
    path = tmp_path / "bad.jsonl"
    lines = big_jsonl(path, 2, bad_line=where)
    assert len(lines) > where
    seen = set()
    for t in THREADS:
        p = run(prepack_bin, "stats", path, "--max-seq-len", "4096", "--threads", t)
        assert p.returncode == 1
        seen.add(p.stderr)
        assert f"{path}:{where}: input_ids[2] is -3" in p.stderr
    assert len(seen) == 1


def test_a_document_left_open_at_the_end(prepack_bin, tmp_path):
    path = tmp_path / "open.jsonl"
    lines = big_jsonl(path, 3)
    with open(path, "a") as f:
        f.write('{"input_ids": [1, 2,\n')
    for t in THREADS:
        p = run(prepack_bin, "stats", path, "--max-seq-len", "4096", "--threads", t)
        assert p.returncode == 1
        assert f"{path}:{len(lines) + 1}: JSON cut short" in p.stderr


# ---- binary inputs of many blocks: Megatron index blocks of 65,536 entries
# and token runs of 2^18 tokens are checked on the workers and added to the
# store in order (src/common/tasks.c) ----

BLOCK = 1 << 16  # megatron.c
RUN = 1 << 18  # tokens.c CHUNK_TOKENS


def megatron_files(prefix, lengths, dtype, doc_idx, ids=None):
    """X.bin/.idx from lengths (numpy) and a document index; ids: the
    tokens (random below 50,000 unless given)."""
    width = np.dtype(dtype).itemsize
    total = int(lengths.sum())
    if ids is None:
        ids = np.random.default_rng(5).integers(0, 50000, total)
    np.asarray(ids, dtype=dtype).tofile(prefix + ".bin")
    pointers = np.zeros(len(lengths), dtype=np.int64)
    pointers[1:] = np.cumsum(lengths[:-1]) * width
    code = {np.uint16: 8, np.int32: 4, np.int64: 5}[dtype]
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + struct.pack("<Q", 1) + bytes([code]))
        f.write(struct.pack("<QQ", len(lengths), len(doc_idx)))
        f.write(np.asarray(lengths, dtype=np.int32).tobytes())
        f.write(pointers.tobytes())
        f.write(np.asarray(doc_idx, dtype=np.int64).tobytes())
    return ids


def many_lengths(n, seed):
    return np.random.default_rng(seed).integers(0, 14, n).astype(np.int64)


def doc_index(n, seed):
    """Documents of 1 to 9 sequences, with some empty ones (repeated
    entries), ending at n."""
    rng = np.random.default_rng(seed)
    starts = np.cumsum(rng.integers(0, 10, n // 3))
    starts = starts[starts < n]
    return np.concatenate([[0], starts, [n]])


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_megatron_of_many_blocks(prepack_bin, tmp_path, dtype):
    n = 3 * BLOCK + 1234
    lengths = many_lengths(n, 1)
    megatron_files(str(tmp_path / "m"), lengths, dtype, doc_index(n, 2))
    assert_same_at_every_thread_count(
        prepack_bin, tmp_path, [tmp_path / "m"],
        ["--max-seq-len", "64", "--overlong", "split"])


def first_error(prepack_bin, inputs):
    """The one stderr every thread count gives (exit 1)."""
    seen = set()
    for t in THREADS:
        p = run(prepack_bin, "stats", *inputs, "--max-seq-len", "64", "--threads", t)
        assert p.returncode == 1, p.stderr
        seen.add(p.stderr)
    assert len(seen) == 1, seen
    return seen.pop()


def test_megatron_errors_in_later_blocks_come_in_order(prepack_bin, tmp_path):
    n = 4 * BLOCK
    lengths = many_lengths(n, 3)
    lengths[[150000, 190000]] = 5  # sequences that hold a bad id below
    docs = doc_index(n, 4)
    starts = np.cumsum(np.concatenate([[0], lengths[:-1]]))
    prefix = str(tmp_path / "m")

    def ids_with_bad(*seqs):
        ids = np.random.default_rng(5).integers(0, 50000, int(lengths.sum()))
        for s in seqs:
            ids[starts[s] + 2] = -7
        return ids

    # an id in block 2, and a worse one later: the earlier is reported
    megatron_files(prefix, lengths, np.int32, docs, ids_with_bad(150000, 190000))
    err = first_error(prepack_bin, [prefix])
    assert "sequence 150000, token 2: id -7" in err
    # an entry pointing outside the .bin in block 1 beats the id in block 2
    megatron_files(prefix, lengths, np.int32, docs, ids_with_bad(150000))
    idx = bytearray(open(prefix + ".idx", "rb").read())
    struct.pack_into("<q", idx, 34 + 4 * n + 8 * 70000, 1 << 40)
    open(prefix + ".idx", "wb").write(idx)
    assert "sequence 70000 points at bytes" in first_error(prepack_bin, [prefix])
    # a document index entry that fails at the bad id's sequence is
    # checked first: entry k opens a document at 150000, entry k + 1 falls
    # back below it, and is read at sequence 150000
    d = docs.copy()
    k = int(np.searchsorted(d, 150000))
    d[k], d[k + 1] = 150000, 149999
    megatron_files(prefix, lengths, np.int32, d, ids_with_bad(150000))
    err = first_error(prepack_bin, [prefix])
    assert f"document index entry {k + 1} is 149999" in err


def llmc_file(path, tokens, llama3=False):
    header = np.zeros(256, dtype=np.int32)
    header[:3] = (20240801, 7, len(tokens)) if llama3 else (20240520, 1, len(tokens))
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint32 if llama3 else np.uint16).tobytes())


def tokens_with_docs(total, sep, seed, at=()):
    """Ids without `sep`, with sep at random places and at each of `at`."""
    rng = np.random.default_rng(seed)
    t = rng.integers(1, 50000, total)
    t[t == sep] = sep + 1
    t[rng.integers(0, total, total // 700)] = sep
    t[list(at)] = sep
    return t


# delimiters at run boundaries (the last token of a run, the first of the
# next), so a piece ends exactly where a worker's run does
EDGES = (RUN - 1, RUN, 2 * RUN, 3 * RUN + 1)


@pytest.mark.parametrize("kind", ["gpt2", "llama3", "raw"])
def test_token_files_of_many_runs(prepack_bin, tmp_path, kind):
    total = 5 * RUN + 777
    path = tmp_path / "t.bin"
    if kind == "raw":
        tokens_with_docs(total, 0, 6, EDGES).astype(np.uint16).tofile(path)
        inputs = [path, "--format", "raw-u16", "--doc-sep", "0"]
    else:
        sep = 128000 if kind == "llama3" else 50256
        t = tokens_with_docs(total, sep, 7, EDGES)
        if kind == "llama3":
            t[-3] = 150000  # the largest id only in the last run
        llmc_file(path, t, llama3=kind == "llama3")
        inputs = [path]
    assert_same_at_every_thread_count(
        prepack_bin, tmp_path, inputs, ["--max-seq-len", "1024", "--overlong", "split"])


# ---- zstd files of several frames: each frame decompressed on a worker
# (src/ingest/zstd_frames.c), handed out in order; frames that do not say
# their size, and bad ones, streamed on the reading thread ----


def many_frames(text, seed, unknown_size_from=None, skippable_at=()):
    """`text` compressed piece by piece, cut at random bytes (mid-line,
    mid-number), one frame a piece; frames from `unknown_size_from` on are
    written by a streaming compressor that does not record their size;
    a skippable frame and an empty one before each piece number in
    `skippable_at`.
    Returns the bytes and each frame's first byte."""
    import zstandard
    rng = random.Random(seed)
    sized = zstandard.ZstdCompressor(level=3, write_checksum=True)
    out, starts, at, k = bytearray(), [], 0, 0
    while at < len(text):
        n = rng.randint(1, 300_000)
        piece = text[at:at + n]
        if k in skippable_at:  # and an empty frame
            out += struct.pack("<II", 0x184D2A50, 5) + b"skip!"
            out += sized.compress(b"")
        starts.append(len(out))
        if unknown_size_from is not None and k >= unknown_size_from:
            c = zstandard.ZstdCompressor(level=3, write_content_size=False)
            out += _unsized(c, piece)
        else:
            out += sized.compress(piece)
        at += n
        k += 1
    return bytes(out), starts


def _unsized(c, piece):
    o = c.compressobj()
    return o.compress(piece) + o.flush()


@pytest.fixture(scope="module")
def jsonl_text(tmp_path_factory):
    path = tmp_path_factory.mktemp("frames") / "src.jsonl"
    big_jsonl(path, 4)  # about 40 MB: three 16 MiB chunks
    return open(path, "rb").read()


@pytest.mark.parametrize("case", ["sized", "unsized_tail", "skippable"])
def test_zstd_of_many_frames(prepack_bin, tmp_path, jsonl_text, case):
    opts = {"sized": {}, "unsized_tail": {"unknown_size_from": 120},
            "skippable": {"skippable_at": (0, 7, 50)}}[case]
    data, starts = many_frames(jsonl_text, 8, **opts)
    assert len(starts) > 100
    path = tmp_path / "many.jsonl.zst"
    path.write_bytes(data)
    assert_same_at_every_thread_count(prepack_bin, tmp_path, [path],
                                      ["--max-seq-len", "4096", "--overlong", "drop"])
    # and the same as the plain file
    plain = tmp_path / "plain.jsonl"
    plain.write_bytes(jsonl_text)
    a = run(prepack_bin, "pack", path, "-o", tmp_path / "z", "--quiet", "--threads", 2,
            "--max-seq-len", "4096", "--overlong", "drop")
    b = run(prepack_bin, "pack", plain, "-o", tmp_path / "p", "--quiet",
            "--max-seq-len", "4096", "--overlong", "drop")
    assert a.returncode == 0 and b.returncode == 0, a.stderr + b.stderr
    fa, fb = files(tmp_path / "z"), files(tmp_path / "p")
    fa.pop("manifest.json"), fb.pop("manifest.json")  # input names differ
    assert fa == fb


@pytest.mark.parametrize("damage", ["payload", "header", "cut", "garbage_tail"])
def test_bad_frames_give_one_message(prepack_bin, tmp_path, jsonl_text, damage):
    data, starts = many_frames(jsonl_text, 9)
    data = bytearray(data)
    k = len(starts) // 2
    if damage == "payload":  # inside frame k's compressed blocks
        data[starts[k] + (starts[k + 1] - starts[k]) // 2] ^= 0x5A
    elif damage == "header":  # frame k's magic
        data[starts[k]] ^= 0xFF
    elif damage == "cut":
        data = data[:starts[k] + 100]
    else:
        data += b"\x01\x02\x03"
    path = tmp_path / "bad.jsonl.zst"
    path.write_bytes(bytes(data))
    err = first_error_at(prepack_bin, path)
    if damage in ("payload", "header"):
        assert f"corrupt zstd frame (it starts at byte {starts[k]})" in err
    elif damage == "cut":
        assert "zstd stream cut short" in err
    else:
        assert f"corrupt zstd frame (it starts at byte {len(data) - 3})" in err


def first_error_at(prepack_bin, path):
    seen = set()
    for t in THREADS:
        p = run(prepack_bin, "stats", path, "--max-seq-len", "4096", "--threads", t)
        assert p.returncode == 1, p.stderr
        seen.add(p.stderr)
    assert len(seen) == 1, seen
    return seen.pop()


def big_window_frame(body):
    """body as a zstd frame whose header asks for a 256 MiB window (the
    streaming decoder's limit is 128 MiB): zstd itself decodes it when the
    frame lies whole in its input buffer (one pass, no window limit) and
    refuses it when the frame crosses the buffer's end."""
    import zstandard
    frame = bytearray(zstandard.ZstdCompressor(level=3).compress(body))
    fhd = frame[4]
    assert fhd & 0x20 and fhd >> 6 == 1  # single segment, 2-byte size
    frame[4] = fhd & ~0x20  # not single segment: a window byte follows
    frame[5:5] = bytes([(28 - 10) << 3])  # window 2^28
    return bytes(frame)


@pytest.mark.parametrize("crosses", [False, True])
def test_a_frame_whose_window_the_stream_refuses(prepack_bin, tmp_path, crosses):
    """Such a frame is accepted, or refused, alike at every thread count:
    the worker path leaves it to the stream, which rereads from the same
    1 MiB-aligned offsets as the one-thread path."""
    import zstandard
    line = b'{"input_ids": [1, 2, 3]}\n'
    ok = zstandard.ZstdCompressor(level=3).compress(line * 40)
    big = big_window_frame(line * 400)
    # frames, then a skippable one sized so that the big frame starts 20
    # bytes before the first 1 MiB boundary (or 200 bytes: whole inside)
    start = (1 << 20) - (20 if crosses else 200)
    k = (start - 8) // len(ok)
    pad = start - k * len(ok) - 8
    head = ok * k + struct.pack("<II", 0x184D2A50, pad) + bytes(pad)
    path = tmp_path / "window.jsonl.zst"
    path.write_bytes(head + big + ok)
    assert (len(head) + len(big) > 1 << 20) == crosses
    if crosses:
        err = first_error_at(prepack_bin, path)
        assert f"corrupt zstd frame (it starts at byte {len(head)})" in err
    else:
        assert_same_at_every_thread_count(prepack_bin, tmp_path, [path],
                                          ["--max-seq-len", "64"])


def restate_size(frame, size):
    """The frame with its header rewritten: not single-segment, a 1 MiB
    window, and the content size `size` in 8 bytes (None: no size)."""
    fhd = frame[4]
    assert fhd & 3 == 0  # no dictionary id
    single = fhd >> 5 & 1
    fcs = (1 if single else 0, 2, 4, 8)[fhd >> 6]
    old = 5 + (0 if single else 1) + fcs
    head = bytes([0x28, 0xB5, 0x2F, 0xFD,
                  (fhd & 4) | (0 if size is None else 3 << 6), (20 - 10) << 3])
    if size is not None:
        head += struct.pack("<Q", size)
    return head + frame[old:]


@pytest.mark.parametrize("lie", ["larger", "smaller", "zero", "absent"])
@pytest.mark.parametrize("at", [0, 2])
def test_a_frame_lying_about_its_size(prepack_bin, tmp_path, lie, at):
    """A frame whose content size is stated larger, smaller or zero, first
    or after frames a one-thread decoder streamed in its own buffers: the
    same message and status at every thread count (zstd kept a larger
    buffer from the frames before and named another error); a frame that
    states no size is read alike."""
    import zstandard
    rng = random.Random(5)
    c = zstandard.ZstdCompressor(level=3, write_checksum=True)
    frames = []
    for k in range(3):
        ids = ([rng.randrange(50000) for _ in range(rng.randint(1, 40))]
               for _ in range(900))
        text = "".join(json.dumps({"input_ids": i}) + "\n" for i in ids).encode()
        frame = c.compress(text)
        if k == at:
            size = {"larger": len(text) + 1, "smaller": len(text) - 1,
                    "zero": 0, "absent": None}[lie]
            frame = restate_size(frame, size)
        frames.append(frame)
    path = tmp_path / "lie.jsonl.zst"
    path.write_bytes(b"".join(frames))
    if lie == "absent":
        assert_same_at_every_thread_count(prepack_bin, tmp_path, [path],
                                          ["--max-seq-len", "64"])
    else:
        err = first_error_at(prepack_bin, path)
        start = sum(len(f) for f in frames[:at])
        assert f"corrupt zstd frame (it starts at byte {start})" in err
