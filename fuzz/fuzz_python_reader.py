"""Fuzzing the Python reader (prepack.ShardSet): a manifest and a shard's
bytes in, every row read, verify() run. Every failure must be a
ShardSetError (CorruptShardError is one); any other exception, a hang or
a row that breaks the format's invariants is a bug.

An input is: the manifest's length (4 bytes, little-endian), the manifest,
then the bytes of shard-00000.zst.

    # long runs, by hand (atheris: pip install atheris into a venv made with
    # --system-site-packages over Debian's python3):
    python fuzz/fuzz_python_reader.py -max_total_time=600 /tmp/pycorpus
    # without atheris: seeded random mutations of the corpus for N seconds
    python fuzz/fuzz_python_reader.py --mutate 600 [--seed S]
    # replay the corpus once (what the tests do)
    python fuzz/fuzz_python_reader.py --replay fuzz/corpus/python_reader
    # (re)write the seeds from the golden set
    python fuzz/fuzz_python_reader.py --make-seeds fuzz/corpus/python_reader
"""
import json
import os
import random
import shutil
import struct
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(ROOT, "python"))

from prepack import ShardSet, ShardSetError  # noqa: E402

GOLDEN = os.path.join(ROOT, "fixtures", "expected", "set")


class WrongRow(AssertionError):
    """A row the reader handed out that breaks the format's invariants."""


def check_row(row, max_seq_len):
    ids, cu, seq = row["input_ids"], row["cu_seqlens"], row["seq_ids"]
    k = len(cu) - 1
    if not (k >= 1 and cu[0] == 0 and cu[-1] == len(ids)
            and len(ids) <= max_seq_len and len(seq) == k
            and all(cu[i] < cu[i + 1] for i in range(k))):
        raise WrongRow(f"row breaks the invariants: {row}")
    if "loss_mask" in row and len(row["loss_mask"]) != len(ids):
        raise WrongRow("loss_mask length")
    if "seq_starts" in row and len(row["seq_starts"]) != k:
        raise WrongRow("seq_starts length")


def one_input(data, workdir):
    """Runs the reader over one input in workdir (emptied first)."""
    for name in os.listdir(workdir):
        os.unlink(os.path.join(workdir, name))
    if len(data) < 4:
        return
    n = struct.unpack_from("<I", data)[0]
    manifest, shard = data[4:4 + n], data[4 + n:]
    with open(os.path.join(workdir, "manifest.json"), "wb") as f:
        f.write(manifest)
    with open(os.path.join(workdir, "shard-00000.zst"), "wb") as f:
        f.write(shard)
    try:
        s = ShardSet(workdir)
        if len(s) > 1 << 20:  # opened: the checks bound rows by bytes
            raise WrongRow(f"{len(s)} rows from {len(shard)} shard bytes")
        for row in s:
            check_row(row, s.max_seq_len)
        s.verify()
    except ShardSetError:
        pass


def pack_input(manifest_bytes, shard_bytes):
    return struct.pack("<I", len(manifest_bytes)) + manifest_bytes + shard_bytes


def make_seeds(out):
    """Seeds from the golden set: its first shard alone, with and without
    stats, and one with every optional key left out."""
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(GOLDEN, "manifest.json")) as f:
        m = json.load(f)
    with open(os.path.join(GOLDEN, "shard-00000.zst"), "rb") as f:
        shard = f.read()
    first = m["shards"][0]
    m["shards"] = [first]
    m["rows"], m["tokens"] = first["rows"], first["tokens"]
    m["stats"] = None
    m["inputs"] = []
    seeds = {"one_shard": m}
    bare = {k: m[k] for k in ("format", "version", "max_seq_len", "token_dtype",
                              "rows_per_frame", "shards", "rows", "tokens")}
    seeds["bare"] = bare
    for name, manifest in seeds.items():
        with open(os.path.join(out, name), "wb") as f:
            f.write(pack_input(json.dumps(manifest, indent=1).encode(), shard))


def mutate(data, rng):
    """One random change: flip, insert or delete bytes, or rewrite a digit
    run of the manifest (the counts are what a hostile manifest edits)."""
    b = bytearray(data)
    choice = rng.random()
    if choice < 0.4 and b:
        for _ in range(rng.randint(1, 4)):
            b[rng.randrange(len(b))] = rng.randrange(256)
    elif choice < 0.55:
        at = rng.randrange(len(b) + 1)
        b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
    elif choice < 0.7 and len(b) > 8:
        at = rng.randrange(len(b))
        del b[at:at + rng.randint(1, 16)]
    else:  # a number in the manifest replaced
        n = struct.unpack_from("<I", b)[0] if len(b) >= 4 else 0
        text = bytes(b[4:4 + n])
        digits = [i for i, c in enumerate(text) if chr(c).isdigit()]
        if digits:
            i = rng.choice(digits)
            j = i
            while j < len(text) and chr(text[j]).isdigit():
                j += 1
            value = str(rng.choice([0, 1, -1, 2**31, 2**32, 2**62, 2**64,
                                    rng.randrange(100)])).encode()
            text = text[:i] + value + text[j:]
            b = bytearray(struct.pack("<I", len(text)) + text + b[4 + n:])
    return bytes(b)


def corpus_files(path):
    return sorted(os.path.join(path, f) for f in os.listdir(path))


def main(argv):
    workdir = tempfile.mkdtemp(prefix="prepack-pyfuzz-")
    try:
        if argv[:1] == ["--make-seeds"]:
            make_seeds(argv[1])
        elif argv[:1] == ["--replay"]:
            for path in corpus_files(argv[1]):
                with open(path, "rb") as f:
                    one_input(f.read(), workdir)
            print(f"replayed {len(corpus_files(argv[1]))} inputs")
        elif argv[:1] == ["--mutate"]:
            seconds = float(argv[1])
            seed = int(argv[argv.index("--seed") + 1]) if "--seed" in argv \
                else int(time.time())
            rng = random.Random(seed)
            pool = []
            for path in corpus_files(os.path.join(HERE, "corpus",
                                                  "python_reader")):
                with open(path, "rb") as f:
                    pool.append(f.read())
            end, runs = time.time() + seconds, 0
            while time.time() < end:
                data = rng.choice(pool)
                for _ in range(rng.randint(1, 3)):
                    data = mutate(data, rng)
                try:
                    one_input(data, workdir)
                except BaseException:
                    crash = f"crash-python-reader-{seed}-{runs}"
                    with open(crash, "wb") as f:
                        f.write(data)
                    print(f"seed {seed}: input {runs} failed; kept as {crash}")
                    raise
                runs += 1
            print(f"seed {seed}: {runs} inputs in {seconds:.0f} s, no failure")
        else:
            import atheris
            atheris.instrument_all()
            atheris.Setup([sys.argv[0]] + argv,
                          lambda data: one_input(data, workdir))
            atheris.Fuzz()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main(sys.argv[1:])
