"""--threads: JSONL parsed on worker threads while the reading thread adds
what they parsed to the store in input order. Every input format gives
byte-identical sets, the same report and the same error (message, line,
exit status) at 1, 2, 3 and 7 threads, including inputs of several 16 MiB
chunks with a document cut by a chunk's end and groups across it."""
import json
import os
import random
import subprocess

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
