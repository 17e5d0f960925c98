"""The Python reader on hostile shard sets: whatever the bytes, opening,
verifying and reading every row either works or raises ShardSetError
(CorruptShardError for damaged data), never another exception, and never
allocates what a file merely claims. Mutations are seeded, so a failure
names a case that can be replayed."""
import json
import os
import random
import shutil
import tempfile

import pytest

from prepack import ShardSet, ShardSetError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
GOLDEN = os.path.join(ROOT, "fixtures", "expected", "set")


def read_everything(path):
    """Opens, verifies and reads every row; returns normally or raises
    ShardSetError."""
    s = ShardSet(path)
    s.verify()
    for i in range(len(s)):
        s[i]


def expect_clean_failure_or_success(path, what):
    try:
        read_everything(path)
    except ShardSetError:
        pass
    except Exception as e:  # the reader's contract is broken
        pytest.fail(f"{what}: {type(e).__name__}: {e}")


def fresh_copy(tmp_path):
    d = tmp_path / "set"
    if d.exists():
        shutil.rmtree(d)
    shutil.copytree(GOLDEN, d)
    return d


def test_random_byte_damage(tmp_path):
    rng = random.Random(9)
    for case in range(300):
        d = fresh_copy(tmp_path)
        name = rng.choice(sorted(os.listdir(d)))
        path = d / name
        data = bytearray(path.read_bytes())
        kind = rng.choice(("flip", "cut", "zero-run", "insert"))
        at = rng.randrange(len(data))
        if kind == "flip":
            data[at] ^= 1 << rng.randrange(8)
        elif kind == "cut":
            del data[at:]
        elif kind == "zero-run":
            data[at:at + 16] = bytes(len(data[at:at + 16]))
        else:
            data[at:at] = bytes([rng.randrange(256)])
        path.write_bytes(bytes(data))
        expect_clean_failure_or_success(d, f"case {case}: {kind} {name}@{at}")


HOSTILE_VALUES = [None, -1, 0, 1, 2**31, 2**40, 2**64, 1.5, "x", "", [], {}]


def test_manifest_values(tmp_path):
    golden = json.loads(open(os.path.join(GOLDEN, "manifest.json")).read())
    top = ["format", "version", "max_seq_len", "token_dtype",
           "rows_per_frame", "shards"]
    entry = ["file", "rows", "tokens", "bytes", "xxh64"]
    for key in top + ["shards." + k for k in entry] + ["shards[0]"]:
        for value in HOSTILE_VALUES:
            m = json.loads(json.dumps(golden))
            if key == "shards[0]":
                m["shards"][0] = value
            elif key.startswith("shards."):
                m["shards"][0][key[7:]] = value
            else:
                m[key] = value
            d = fresh_copy(tmp_path)
            (d / "manifest.json").write_text(json.dumps(m))
            expect_clean_failure_or_success(d, f"{key} = {value!r}")


def test_seek_table_claims_cannot_force_allocations(tmp_path):
    """A seek table entry claiming a 4 GiB frame is refused before any
    decompression is attempted (the C reader's bound: rows_per_frame rows
    of max_seq_len tokens)."""
    d = fresh_copy(tmp_path)
    path = d / "shard-00000.zst"
    data = bytearray(path.read_bytes())
    n = int.from_bytes(data[-9:-5], "little")
    table = len(data) - (12 * n + 17)
    data[table + 8 + 4:table + 8 + 8] = (0xFFFFFFF0).to_bytes(4, "little")
    path.write_bytes(bytes(data))
    with pytest.raises(ShardSetError, match="frame 0 claims"):
        ShardSet(d)[0]


def test_python_reader_fuzz_corpus_replays_clean():
    """fuzz/fuzz_python_reader.py's corpus (seeds and what long runs kept):
    every input ends in rows that keep the invariants or a ShardSetError."""
    import importlib.util
    from conftest import ROOT
    spec = importlib.util.spec_from_file_location(
        "fuzz_python_reader", os.path.join(ROOT, "fuzz", "fuzz_python_reader.py"))
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    corpus = os.path.join(ROOT, "fuzz", "corpus", "python_reader")
    files = sorted(os.listdir(corpus))
    assert len(files) >= 3
    with tempfile.TemporaryDirectory() as work:
        for name in files:
            with open(os.path.join(corpus, name), "rb") as f:
                harness.one_input(f.read(), work)


@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_shard_that_is_not_a_file_is_refused(tmp_path, kind):
    """A FIFO named like a shard would make a blocking open wait for a
    writer forever: both readers refuse it by name at once (a hang
    fails through the alarm)."""
    import signal
    d = fresh_copy(tmp_path)
    shard = d / "shard-00000.zst"
    shard.unlink()
    if kind == "fifo":
        os.mkfifo(shard)
    else:
        shard.mkdir()
    backends = ["python"]
    if not os.environ.get("PREPACK_SANITIZED"):
        backends.append("c")

    def hung(*_):
        raise TimeoutError("the reader waited on a FIFO")

    old = signal.signal(signal.SIGALRM, hung)
    try:
        for backend in backends:
            signal.alarm(20)
            with pytest.raises(ShardSetError, match="not a regular file"):
                ShardSet(str(d), backend=backend)
            signal.alarm(0)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
