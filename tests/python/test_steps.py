"""prepack scan / plan / write / finalize: the shard set is byte for byte
what one `prepack pack` writes, for any number of scan and write tasks, on
inputs of every format; failed, killed and rerun tasks as a scheduler sees
them."""
import json
import os
import shutil
import signal
import subprocess
import time

import numpy as np
import pytest

import step_inputs as si
from conftest import CORPUS


def run(bin_, *args, check=True):
    p = subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}")
    return p


def files(d):
    return {n: open(os.path.join(d, n), "rb").read() for n in sorted(os.listdir(d))}


def pack(bin_, inputs, out, opts):
    run(bin_, "pack", *inputs, "-o", out, "--quiet", *opts)


def steps(bin_, inputs, out, opts, n, m):
    common = [*inputs, "-o", out, *opts]
    for t in range(n):
        run(bin_, "scan", *common, "--task-index", t, "--task-count", n)
    run(bin_, "plan", *common, "--scan-tasks", n)
    for t in reversed(range(m)):  # any order
        run(bin_, "write", *common, "--task-index", t, "--task-count", m)
    run(bin_, "finalize", *common, "--write-tasks", m)


def assert_identical(bin_, tmp_path, inputs, opts, tasks):
    ref = tmp_path / "ref"
    pack(bin_, inputs, ref, opts)
    want = files(ref)
    assert "manifest.json" in want
    for n, m in tasks:
        out = tmp_path / f"steps-{n}-{m}"
        steps(bin_, inputs, out, opts, n, m)
        got = files(out)
        assert got.keys() == want.keys(), (n, m)
        for name in want:
            assert got[name] == want[name], (n, m, name)


@pytest.fixture(scope="module")
def mixed(tmp_path_factory):
    """Inputs of every format read by auto-detection, in one job."""
    d = tmp_path_factory.mktemp("mixed")
    paths = []
    for i, kind in enumerate(["jsonl", "megatron16", "zst", "llmc", "megatron32",
                              "gz", "jsonl-big"]):
        seqs = si.sequences(100 + i, 150 if kind != "jsonl-big" else 700)
        if kind == "jsonl":
            p = d / "a.jsonl"
            si.write_jsonl(p, seqs, seed=i)
        elif kind == "jsonl-big":
            p = d / "big.jsonl"
            si.write_jsonl(p, seqs, seed=i)
        elif kind == "zst":
            p = d / "c.jsonl.zst"
            si.write_jsonl(p, seqs, seed=i, compress="zst")
        elif kind == "gz":
            p = d / "f.jsonl.gz"
            si.write_jsonl(p, seqs, seed=i, compress="gz")
        elif kind == "llmc":
            p = d / "d.bin"
            si.write_llmc(p, seqs)
        else:
            prefix = str(d / ("b" if kind == "megatron16" else "e"))
            si.write_megatron(prefix, seqs,
                              np.uint16 if kind == "megatron16" else np.int32)
            p = prefix + ".bin"
        paths.append(str(p))
    return paths


TASKS = [(1, 1), (2, 3), (3, 2), (7, 5)]


def test_bundled_corpus(prepack_bin, tmp_path):
    opts = ["--max-seq-len", "2048", "--overlong", "split", "--shard-rows", "300"]
    assert_identical(prepack_bin, tmp_path, [CORPUS], opts, [(1, 1), (3, 4)])


def test_bundled_corpus_plain_split(prepack_bin, tmp_path):
    """A plain JSONL file is cut at line starts among the scan tasks."""
    import zstandard
    plain = tmp_path / "docs.jsonl"
    with open(CORPUS, "rb") as f:
        plain.write_bytes(zstandard.ZstdDecompressor().stream_reader(f).read())
    opts = ["--max-seq-len", "2048", "--overlong", "split", "--shard-rows", "300",
            "--rows-per-frame", "16"]
    assert_identical(prepack_bin, tmp_path, [str(plain)], opts, [(2, 2), (5, 3), (16, 7)])


@pytest.mark.parametrize("opts", [
    ["--max-seq-len", "512", "--overlong", "split", "--shard-rows", "40"],
    ["--max-seq-len", "400", "--overlong", "truncate", "--algo", "bfd",
     "--shuffle", "--seed", "7", "--shard-rows", "33", "--rows-per-frame", "5"],
    ["--max-seq-len", "1000", "--overlong", "drop", "--algo", "nextfit",
     "--max-seqs-per-row", "3", "--token-dtype", "uint32", "--level", "5"],
])
def test_every_format(prepack_bin, tmp_path, mixed, opts):
    assert_identical(prepack_bin, tmp_path, mixed, opts, TASKS)


def test_raw_tokens(prepack_bin, tmp_path):
    inputs = []
    for i in range(3):
        p = tmp_path / f"r{i}.u16"
        si.write_raw(p, si.sequences(200 + i, 120))
        inputs.append(str(p))
    opts = ["--format", "raw-u16", "--doc-sep", "0", "--max-seq-len", "300",
            "--overlong", "split", "--shard-rows", "20"]
    assert_identical(prepack_bin, tmp_path, inputs, opts, [(2, 2), (4, 3)])


def test_one_large_megatron_input_split_by_sequences(prepack_bin, tmp_path):
    prefix = str(tmp_path / "m")
    si.write_megatron(prefix, si.sequences(300, 2000), np.int32, docs_every=7)
    opts = ["--max-seq-len", "600", "--overlong", "split", "--shard-rows", "64"]
    assert_identical(prepack_bin, tmp_path, [prefix + ".bin"], opts, [(3, 2), (8, 8)])
    out = tmp_path / "scan-only"
    for t in range(4):  # every task reads a part
        p = run(prepack_bin, "scan", prefix + ".bin", "-o", out, *opts,
                "--task-index", t, "--task-count", 4, "--json")
        assert 0 < json.loads(p.stdout)["sequences"] < 2000


@pytest.mark.parametrize("kind", ["llmc", "raw-before", "raw-after"])
def test_one_large_token_file_split_at_document_starts(prepack_bin, tmp_path, kind):
    seqs = si.sequences(400, 1500)
    path = tmp_path / "t.bin"
    opts = ["--max-seq-len", "500", "--overlong", "split", "--shard-rows", "50"]
    if kind == "llmc":
        si.write_llmc(path, seqs)
    else:
        si.write_raw(path, seqs)
        opts += ["--format", "raw-u16", "--doc-sep", "0",
                 "--sep-position", kind.split("-")[1]]
    assert_identical(prepack_bin, tmp_path, [str(path)], opts, [(2, 1), (5, 3), (13, 4)])
    out = tmp_path / "scan-only"
    for t in range(3):
        p = run(prepack_bin, "scan", path, "-o", out, *opts, "--task-index", t,
                "--task-count", 3, "--json")
        assert json.loads(p.stdout)["sequences"] > 0


def test_edge_shapes(prepack_bin, tmp_path):
    """Every sequence dropped (a set of no shards); more tasks than lines."""
    a = tmp_path / "a.jsonl"
    a.write_text('{"input_ids": [1, 2, 3]}\n{"input_ids": [4, 5]}\n'
                 '{"input_ids": [6]}\n')
    (tmp_path / "drop").mkdir()
    assert_identical(prepack_bin, tmp_path / "drop", [str(a)],
                     ["--max-seq-len", "1", "--overlong", "drop"], [(2, 3)])
    assert_identical(prepack_bin, tmp_path, [str(a)], ["--max-seq-len", "4"],
                     [(16, 5), (3, 1)])


def test_an_empty_input_fails_as_pack_fails(prepack_bin, tmp_path):
    a = tmp_path / "a.jsonl"
    si.write_jsonl(a, si.sequences(8, 50), masks=False)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n" * 5000)
    inputs = [str(a), str(empty)]
    packed = run(prepack_bin, "pack", *inputs, "-o", tmp_path / "ref", *OPTS, check=False)
    assert packed.returncode == 1 and "empty input" in packed.stderr
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 4)
    p = run(prepack_bin, "plan", *inputs, "-o", out, *OPTS, "--scan-tasks", 4, check=False)
    assert p.returncode == 1 and p.stderr == packed.stderr, (p.stderr, packed.stderr)


# ---- failures, reruns, kills ---------------------------------------------------

OPTS = ["--max-seq-len", "512", "--overlong", "split", "--shard-rows", "25"]


def scan_all(bin_, inputs, out, n, opts=OPTS):
    for t in range(n):
        run(bin_, "scan", *inputs, "-o", out, *opts, "--task-index", t, "--task-count", n)


def test_plan_names_the_missing_or_damaged_scan_task(prepack_bin, tmp_path, mixed):
    out = tmp_path / "o"
    for t in (0, 2):
        run(prepack_bin, "scan", *mixed, "-o", out, *OPTS, "--task-index", t,
            "--task-count", 3)
    p = run(prepack_bin, "plan", *mixed, "-o", out, *OPTS, "--scan-tasks", 3, check=False)
    assert p.returncode == 1
    assert "scan task 1 of 3 has no result" in p.stderr
    run(prepack_bin, "scan", *mixed, "-o", out, *OPTS, "--task-index", 1, "--task-count", 3)
    meta = out / ".prepack-job" / "scan-00002.meta"
    data = bytearray(meta.read_bytes())
    data[20] ^= 1
    meta.write_bytes(bytes(data))
    p = run(prepack_bin, "plan", *mixed, "-o", out, *OPTS, "--scan-tasks", 3, check=False)
    assert p.returncode == 1 and "rerun scan task 2 of 3" in p.stderr, p.stderr
    (out / ".prepack-job" / "scan-00001.lengths").write_bytes(b"short")
    run(prepack_bin, "scan", *mixed, "-o", out, *OPTS, "--task-index", 2, "--task-count", 3)
    p = run(prepack_bin, "plan", *mixed, "-o", out, *OPTS, "--scan-tasks", 3, check=False)
    assert p.returncode == 1 and "scan task 1 of 3" in p.stderr, p.stderr


def test_reruns_do_nothing_and_other_options_are_refused(prepack_bin, tmp_path, mixed):
    out = tmp_path / "o"
    scan_all(prepack_bin, mixed, out, 2)
    p = run(prepack_bin, "scan", *mixed, "-o", out, *OPTS, "--task-index", 1,
            "--task-count", 2, "--json")
    assert json.loads(p.stdout)["already_done"] is True
    run(prepack_bin, "plan", *mixed, "-o", out, *OPTS, "--scan-tasks", 2)
    p = run(prepack_bin, "plan", *mixed, "-o", out, *OPTS, "--scan-tasks", 2, "--json")
    assert json.loads(p.stdout)["already_done"] is True
    other = ["--max-seq-len", "256", *OPTS[2:]]
    p = run(prepack_bin, "write", *mixed, "-o", out, *other, "--task-index", 0,
            "--task-count", 1, check=False)
    assert p.returncode == 1 and "other inputs or options" in p.stderr, p.stderr
    p = run(prepack_bin, "plan", *mixed[:-1], "-o", out, *OPTS, "--scan-tasks", 2,
            check=False)
    assert p.returncode == 1 and "another job" in p.stderr, p.stderr
    run(prepack_bin, "write", *mixed, "-o", out, *OPTS, "--task-index", 0, "--task-count", 2)
    p = run(prepack_bin, "write", *mixed, "-o", out, *OPTS, "--task-index", 0,
            "--task-count", 2, "--json")
    assert json.loads(p.stdout)["already_done"] is True
    p = run(prepack_bin, "finalize", *mixed, "-o", out, *OPTS, "--write-tasks", 2,
            check=False)
    assert p.returncode == 1 and "write task 1 of 2 has no result" in p.stderr, p.stderr
    assert not (out / "manifest.json").exists()
    run(prepack_bin, "write", *mixed, "-o", out, *OPTS, "--task-index", 1, "--task-count", 2)
    shards = sorted(n for n in os.listdir(out) if n.startswith("shard-"))
    victim = out / shards[-1]
    good = victim.read_bytes()
    victim.write_bytes(good[:-1] + bytes([good[-1] ^ 1]))
    p = run(prepack_bin, "finalize", *mixed, "-o", out, *OPTS, "--write-tasks", 2,
            check=False)
    assert p.returncode == 1 and "rerun that task" in p.stderr and "write task 1 of 2" in p.stderr
    assert not (out / "manifest.json").exists()
    # the damaged task's rerun sees its shard is not what it wrote
    p = run(prepack_bin, "write", *mixed, "-o", out, *OPTS, "--task-index", 1,
            "--task-count", 2, "--json")
    assert json.loads(p.stdout)["already_done"] is False
    run(prepack_bin, "finalize", *mixed, "-o", out, *OPTS, "--write-tasks", 2)
    assert not (out / ".prepack-job").exists()
    p = run(prepack_bin, "finalize", *mixed, "-o", out, *OPTS, "--write-tasks", 2, "--json")
    assert json.loads(p.stdout)["already_done"] is True
    ref = tmp_path / "ref"
    pack(prepack_bin, mixed, ref, OPTS)
    assert files(ref) == files(out)


def test_a_changed_input_is_refused_by_the_writers(prepack_bin, tmp_path):
    prefix = str(tmp_path / "m")
    si.write_megatron(prefix, si.sequences(9, 300))
    out = tmp_path / "o"
    scan_all(prepack_bin, [prefix + ".bin"], out, 2)
    run(prepack_bin, "plan", prefix + ".bin", "-o", out, *OPTS, "--scan-tasks", 2)
    os.utime(prefix + ".bin", ns=(1, 1))
    p = run(prepack_bin, "write", prefix + ".bin", "-o", out, *OPTS, "--task-index", 0,
            "--task-count", 1, check=False)
    assert p.returncode == 1 and "changed" in p.stderr, p.stderr


def test_bad_input_fails_the_scan_naming_file_and_line(prepack_bin, tmp_path):
    good = si.sequences(5, 400)
    p = tmp_path / "x.jsonl"
    si.write_jsonl(p, good, masks=False)
    lines = p.read_text().splitlines()
    lines[350] = '{"input_ids": [1, -2]}'
    p.write_text("\n".join(lines) + "\n")
    out = tmp_path / "o"
    errs = []
    for t in range(3):
        r = run(prepack_bin, "scan", p, "-o", out, *OPTS, "--task-index", t,
                "--task-count", 3, check=False)
        errs.append((r.returncode, r.stderr))
    packed = run(prepack_bin, "pack", p, "-o", tmp_path / "ref", *OPTS, check=False)
    assert packed.returncode == 1
    failed = [e for e in errs if e[0] != 0]
    assert len(failed) == 1 and failed[0][1] == packed.stderr, (errs, packed.stderr)
    assert not any(n.startswith("scan-00002") for n in os.listdir(out / ".prepack-job")) \
        or failed[0] is not errs[2]


@pytest.mark.parametrize("args,message", [
    (["--shard-bytes", "1M"], "options of pack in one process"),
    (["--overwrite"], "options of pack in one process"),
])
def test_pack_only_options_are_refused(prepack_bin, tmp_path, args, message):
    p = run(prepack_bin, "scan", CORPUS, "-o", tmp_path / "o", "--max-seq-len", "64",
            *args, "--task-index", 0, "--task-count", 1, check=False)
    assert p.returncode == 2 and message in p.stderr, p.stderr


def test_a_directory_holding_other_files_is_refused(prepack_bin, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    p = run(prepack_bin, "scan", CORPUS, "-o", out, *OPTS, "--task-index", 0,
            "--task-count", 1, check=False)
    assert p.returncode == 1 and "is not empty" in p.stderr, p.stderr
    assert os.listdir(out) == ["notes.txt"]


def test_stdin_is_refused(prepack_bin, tmp_path):
    p = run(prepack_bin, "scan", "-", "-o", tmp_path / "o", *OPTS, "--task-index", 0,
            "--task-count", 1, check=False)
    assert p.returncode == 1 and "stdin" in p.stderr


def test_killed_tasks_leave_nothing_taken_for_done(prepack_bin, tmp_path):
    """SIGKILL at random moments of every step; the reruns complete the job
    and the set is pack's. Nothing lands outside the output directory."""
    import random
    big = tmp_path / "in" / "big.jsonl"
    big.parent.mkdir()
    si.write_jsonl(big, si.sequences(77, 6000, max_len=600), seed=3)
    inputs = [str(big)]
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    env = dict(os.environ, TMPDIR=str(tmpdir))
    out = tmp_path / "o"
    common = [*inputs, "-o", str(out), *OPTS]
    cmds = [["scan", *common, "--task-index", str(t), "--task-count", "2"] for t in range(2)]
    cmds += [["plan", *common, "--scan-tasks", "2"]]
    cmds += [["write", *common, "--task-index", str(t), "--task-count", "3"] for t in range(3)]
    cmds += [["finalize", *common, "--write-tasks", "3"]]
    rng = random.Random(1)
    kills = 0
    for cmd in cmds:
        for _ in range(3):  # a kill, then a kill later on, then whatever
            proc = subprocess.Popen([prepack_bin, *cmd], env=env,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.0, 0.15))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
            proc.wait()
        r = subprocess.run([prepack_bin, *cmd], env=env, capture_output=True, text=True)
        assert r.returncode == 0, (cmd, r.stderr)
    ref = tmp_path / "ref"
    pack(prepack_bin, inputs, ref, OPTS)
    assert files(ref) == files(out)
    assert os.listdir(tmpdir) == []
    assert os.listdir(big.parent) == ["big.jsonl"]
    assert kills > 0


# ---- an untrusted job directory (issue 26) -------------------------------------
# Any byte of DIR/.prepack-job may be crafted, and a crafted record may carry
# a correct XXH64: the steps must refuse it (naming the file and the task to
# rerun), never follow a link planted there, never read a file a record
# names, never delete outside what the job made.

import fcntl  # noqa: E402
import hashlib  # noqa: E402
import struct  # noqa: E402

import xxhash  # noqa: E402

JOB = ".prepack-job"


def rehash(path, edit):
    """edit(bytearray) on a job file's bytes before its trailing XXH64, then
    the hash recomputed: it is a checksum, not a key."""
    data = bytearray(open(path, "rb").read()[:-8])
    edit(data)
    with open(path, "wb") as f:
        f.write(bytes(data) + struct.pack("<Q", xxhash.xxh64_intdigest(bytes(data))))


def put(off, fmt, value):
    def edit(data):
        struct.pack_into(fmt, data, off if off >= 0 else len(data) + off, value)
    return edit


def tree_digest(root):
    """Every name, link target and file byte under root, links not followed."""
    h = hashlib.sha256()
    for d, dirs, names in sorted(os.walk(root)):
        for n in sorted(dirs + names):
            p = os.path.join(d, n)
            h.update(os.path.relpath(p, root).encode() + b"\0")
            if os.path.islink(p):
                h.update(b"link:" + os.readlink(p).encode())
            elif os.path.isfile(p):
                h.update(open(p, "rb").read())
    return h.hexdigest()


def small_inputs(tmp_path, n=2, seqs=120, masks=True):
    paths = []
    for i in range(n):
        p = tmp_path / f"in{i}.jsonl"
        si.write_jsonl(p, si.sequences(500 + i, seqs), seed=i, masks=masks)
        paths.append(str(p))
    return paths


def step(bin_, name, inputs, out, *args, opts=OPTS, check=True):
    return run(bin_, name, *inputs, "-o", out, *opts, *args, check=check)


def refused(p, *words):
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert "AddressSanitizer" not in p.stderr and "runtime error" not in p.stderr
    for w in words:
        assert w in p.stderr, (w, p.stderr)


def test_a_linked_job_directory_is_refused_and_nothing_outside_is_removed(
        prepack_bin, tmp_path):
    """Rule 2: finalize once unlinked every file of the directory that a
    symlinked .prepack-job pointed to."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 2)
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 2)
    step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1)
    decoy = tmp_path / "decoy"
    shutil.copytree(out / JOB, decoy)  # everything finalize wants to see
    (decoy / "precious.txt").write_text("not the job's")
    before = tree_digest(decoy)
    os.rename(out / JOB, tmp_path / "moved")
    os.symlink(decoy, out / JOB)
    p = step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1, check=False)
    refused(p, "symbolic link")
    assert tree_digest(decoy) == before
    assert not (out / "manifest.json").exists()
    for name in ("scan", "plan", "write"):
        args = {"scan": ["--task-index", 0, "--task-count", 2],
                "plan": ["--scan-tasks", 2],
                "write": ["--task-index", 0, "--task-count", 1]}[name]
        refused(step(prepack_bin, name, inputs, out, *args, check=False),
                "symbolic link")
    assert tree_digest(decoy) == before
    os.unlink(out / JOB)
    os.rename(tmp_path / "moved", out / JOB)
    step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1)
    pack(prepack_bin, inputs, tmp_path / "ref", OPTS)
    assert files(tmp_path / "ref") == files(out)


def test_links_planted_in_the_job_are_never_followed(prepack_bin, tmp_path):
    """The decoy: links to a directory beside DIR planted as .prepack-job, as
    temporaries the tasks create, as scan-00000.tokens and plan.meta, and in
    DIR; no byte of it is read into the set or changed."""
    inputs = small_inputs(tmp_path)
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    for i in range(12):  # distinctive tokens and bytes
        (decoy / f"f{i}").write_bytes(bytes([0xEE]) * 300000)
    si.write_jsonl(decoy / "ids.jsonl", [[60001 + k for k in range(50)]] * 20, masks=False)
    before = tree_digest(decoy)
    out = tmp_path / "o"
    out.mkdir()
    os.symlink(decoy, out / JOB)
    refused(step(prepack_bin, "scan", inputs, out, "--task-index", 0, "--task-count", 2,
                 check=False), "symbolic link")
    os.unlink(out / JOB)
    step(prepack_bin, "scan", inputs, out, "--task-index", 0, "--task-count", 2)
    job = out / JOB
    plant = iter(range(12))

    def link(where):
        os.symlink(decoy / f"f{next(plant)}", where)

    link(job / "scan-00001.lengths.tmp")
    link(job / "scan-00001.meta.tmp")
    link(job / "scan-00001.tokens")
    step(prepack_bin, "scan", inputs, out, "--task-index", 1, "--task-count", 2)
    link(job / "plan.rows.tmp")
    link(job / "plan.meta")
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 2)
    link(out / "shard-00000.zst.tmp")
    link(out / "manifest.json.tmp")
    link(job / "write-00000-of-00001.meta.tmp")
    os.rename(job / "scan-00000.tokens", tmp_path / "tokens")
    os.symlink(decoy / "f11", job / "scan-00000.tokens")
    refused(step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1,
                 check=False), "scan-00000.tokens", "rerun scan task 0")
    os.unlink(job / "scan-00000.tokens")
    os.rename(tmp_path / "tokens", job / "scan-00000.tokens")
    step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1)
    step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1)
    run(prepack_bin, "verify", out)
    assert tree_digest(decoy) == before
    pack(prepack_bin, inputs, tmp_path / "ref", OPTS)
    got = files(out)
    assert files(tmp_path / "ref") == got
    assert not any(b"\xee" * 16 in v for v in got.values())


def test_a_record_never_names_a_file_to_read(prepack_bin, tmp_path):
    """Rule 3: a scan record's source path pointed at a file with the size
    and mtime stat shows made write copy that file into a set that
    verified. Records name inputs by their index on the command line."""
    prefix = str(tmp_path / "m")
    si.write_megatron(prefix, si.sequences(11, 200))
    secret = tmp_path / "secret.bin"
    size = os.path.getsize(prefix + ".bin")
    secret.write_bytes(bytes([0xEE]) * size)
    st = os.stat(prefix + ".bin")
    os.utime(secret, ns=(st.st_atime_ns, st.st_mtime_ns))
    inputs = [prefix + ".bin"]
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 2)
    raws = []
    for t in range(2):
        meta = out / JOB / f"scan-{t:05d}.meta"
        raws.append(open(meta, "rb").read())
        want = (prefix + ".bin").encode()

        def swap(data, want=want):  # what an attacker would rewrite
            i = bytes(data).find(struct.pack("<I", len(want)) + want)
            if i >= 0:
                new = str(secret).encode()
                data[i:i + 4 + len(want)] = struct.pack("<I", len(new)) + new
        rehash(meta, swap)
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 2)
    step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1)
    step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1)
    pack(prepack_bin, inputs, tmp_path / "ref", OPTS)
    assert files(tmp_path / "ref") == files(out)
    for raw in raws:
        for path in (inputs[0], prefix + ".idx", "m.bin"):
            assert path.encode() not in raw  # no paths in a scan record


@pytest.mark.parametrize("ext,at", [("tokens", 0.5), ("mask", 0.5), ("locs", 5 / 1e9),
                                    ("lengths", 0.5)])
def test_a_flipped_byte_in_a_scan_file_is_refused(prepack_bin, tmp_path, ext, at):
    """Rule 4: one flipped byte in .tokens, .mask or .locs gave a set that
    write, finalize and verify (--input too) accepted."""
    inputs = small_inputs(tmp_path, n=1, seqs=200)
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 1)
    if ext != "lengths":
        step(prepack_bin, "plan", inputs, out, "--scan-tasks", 1)
    victim = out / JOB / f"scan-00000.{ext}"
    data = bytearray(victim.read_bytes())
    assert len(data) > 64
    i = max(5, int((len(data) - 8) * at)) if at < 1e-6 else int((len(data) - 8) * at)
    data[i] ^= 1
    victim.write_bytes(bytes(data))
    if ext == "lengths":
        p = step(prepack_bin, "plan", inputs, out, "--scan-tasks", 1, check=False)
        refused(p, "scan-00000.lengths", "rerun scan task 0")
        return
    p = step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1,
             check=False)
    refused(p, f"scan-00000.{ext}", "rerun scan task 0")
    assert not any(n.startswith("shard-") for n in os.listdir(out))


def test_messages_name_the_damaged_record(prepack_bin, tmp_path):
    """A message formatted into the buffer it read from printed
    'prepack: : rerun ...'."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 2)
    meta = out / JOB / "scan-00001.meta"
    good = meta.read_bytes()
    meta.write_bytes(good[:30] + bytes([good[30] ^ 4]) + good[31:])
    p = step(prepack_bin, "plan", inputs, out, "--scan-tasks", 2, check=False)
    refused(p, "scan-00001.meta", "rerun scan task 1 of 2")
    assert "prepack: :" not in p.stderr
    meta.write_bytes(good)
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 2)
    plan = out / JOB / "plan.meta"
    good = plan.read_bytes()
    plan.write_bytes(good[:30] + bytes([good[30] ^ 4]) + good[31:])
    p = step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1,
             check=False)
    refused(p, "plan.meta", "rerun prepack plan")
    assert "prepack: :" not in p.stderr


def test_a_second_run_of_a_task_is_refused_while_one_holds_it(prepack_bin, tmp_path):
    """Two runs of one scan task both failed with 'No such file or
    directory' (each removed the other's files): one lock per task."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    step(prepack_bin, "scan", inputs, out, "--task-index", 1, "--task-count", 2)
    cases = [("scan-00000.lock", "scan", ["--task-index", 0, "--task-count", 2],
              "scan task 0"),
             ("plan.lock", "plan", ["--scan-tasks", 2], "the plan"),
             ("write-00000-of-00001.lock", "write", ["--task-index", 0, "--task-count", 1],
              "write task 0 of 1"),
             ("finalize.lock", "finalize", ["--write-tasks", 1], "finalize")]
    for lock, name, args, who in cases:
        with open(out / JOB / lock, "w") as held:
            fcntl.flock(held, fcntl.LOCK_EX)
            p = step(prepack_bin, name, inputs, out, *args, check=False)
            refused(p, f"another run holds {who}")
        step(prepack_bin, name, inputs, out, *args)
    pack(prepack_bin, inputs, tmp_path / "ref", OPTS)
    assert files(tmp_path / "ref") == files(out)


@pytest.mark.parametrize("fmt", ["jsonl+zst", "raw"])
def test_inputs_starting_on_a_task_boundary_are_read_once(prepack_bin, tmp_path, fmt):
    """An input whose first byte lies exactly on a task boundary was owned by
    two tasks (48 sequences became 88). Six inputs of one size (plain JSONL
    padded with blank lines beside compressed JSONL, read whole; or raw
    token files padded with separators): with 2, 3, 6 and 12 tasks the
    boundaries fall on input starts, with 5 and 7 inside inputs."""
    import zstandard
    blobs = []
    for i in range(6):
        seqs = si.sequences(900 + i, 8 + i)
        p = tmp_path / (f"b{i}.u16" if fmt == "raw" else
                        f"b{i}.jsonl.zst" if i % 2 else f"b{i}.jsonl")
        if fmt == "raw":
            si.write_raw(p, seqs)
        else:
            si.write_jsonl(p, seqs, seed=i, masks=False)
        blobs.append([p, p.read_bytes()])
    if fmt != "raw":  # the compressed ones all of the first one's size
        z = zstandard.ZstdCompressor(level=1).compress(blobs[1][1])
        for b in blobs[1::2]:
            b[1] = z
        size = len(z)
        for b in blobs[0::2]:
            b[1] = b[1][:size - size // 4]
            b[1] = b[1][:b[1].rfind(b"\n") + 1]
    size = len(z) if fmt != "raw" else max(len(b[1]) for b in blobs)
    for p, data in blobs:  # pad to one size: blank lines, or separators
        pad = size - len(data)
        p.write_bytes(data + (b"\0" * pad if fmt == "raw" else b"\n" * pad))
    inputs = [str(b[0]) for b in blobs]
    opts = ["--max-seq-len", "256", "--overlong", "split", "--shard-rows", "4"]
    if fmt == "raw":
        opts += ["--format", "raw-u16", "--doc-sep", "0"]
    assert len({os.path.getsize(p) for p in inputs}) == 1
    assert_identical(prepack_bin, tmp_path, inputs, opts,
                     [(2, 2), (3, 1), (6, 4), (12, 3), (5, 2), (7, 7)])


def test_finalize_refuses_shards_written_under_another_plan(prepack_bin, tmp_path):
    """A re-planned job (other seed: same shard count) must not finalize over
    the shards its write tasks made under the old plan."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    a = OPTS + ["--shuffle", "--seed", "1"]
    b = OPTS + ["--shuffle", "--seed", "2"]
    scan_all(prepack_bin, inputs, out, 1, opts=a)
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 1, opts=a)
    step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1, opts=a)
    step(prepack_bin, "plan", inputs, out, "--scan-tasks", 1, opts=b)
    p = step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1, opts=b, check=False)
    refused(p, "write-00000-of-00001.meta", "another plan", "rerun write task 0")
    assert not (out / "manifest.json").exists()
    step(prepack_bin, "write", inputs, out, "--task-index", 0, "--task-count", 1, opts=b)
    step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1, opts=b)
    pack(prepack_bin, inputs, tmp_path / "ref", b)
    assert files(tmp_path / "ref") == files(out)


# Offsets of the fields crafted below (src/steps/records.c's visitors).
SCAN_NPARTS, SCAN_NSOURCES, SCAN_SEQUENCES, SCAN_LOCS_SIZE, SCAN_PART0 = 88, 92, 24, 56, 96
PLAN_SCAN_TASKS, PLAN_MAX_SEQ_LEN, PLAN_SHARDS, PLAN_NINPUTS = 16, 20, 68, 84
PLAN_SCAN_FIRST = 88
WRITE_COUNT, WRITE_SHARD0 = 36, 44


def rename_shard0(data):
    n = struct.unpack_from("<I", data, WRITE_SHARD0)[0]
    new = b"../" + bytes(data[WRITE_SHARD0 + 4:WRITE_SHARD0 + 4 + n - 3])
    data[WRITE_SHARD0:WRITE_SHARD0 + 4 + n] = struct.pack("<I", len(new)) + new


def swap_shard_offsets(data):
    shards = struct.unpack_from("<Q", data, PLAN_SHARDS)[0]
    at = len(data) - 8 * shards - 8 * (shards + 1)  # shard_offset[0]
    struct.pack_into("<Q", data, at + 8, 2 ** 63)


CRAFTED = [
    ("scan-00000.meta", "plan", put(SCAN_NPARTS, "<I", 0xFFFFFFFF)),
    ("scan-00000.meta", "plan", put(SCAN_NSOURCES, "<I", 0xFFFFFFFF)),
    ("scan-00000.meta", "plan", put(SCAN_SEQUENCES, "<Q", 2 ** 62)),
    ("scan-00000.meta", "plan", put(SCAN_LOCS_SIZE, "<Q", 0)),
    ("scan-00000.meta", "plan", put(SCAN_PART0, "<I", 5)),
    ("scan-00000.meta", "plan", put(-8, "<Q", 2 ** 61)),  # njoins
    ("scan-00000.meta", "write", put(SCAN_SEQUENCES, "<Q", 1)),
    ("plan.meta", "write", put(PLAN_SHARDS, "<Q", 2 ** 64 - 1)),
    ("plan.meta", "write", put(PLAN_SCAN_TASKS, "<I", 0xFFFFFFFF)),
    ("plan.meta", "write", put(PLAN_NINPUTS, "<I", 0xFFFFFFFF)),
    ("plan.meta", "write", put(PLAN_MAX_SEQ_LEN, "<I", 0xFFFFFFFF)),
    ("plan.meta", "write", put(PLAN_SCAN_FIRST + 8, "<Q", 2 ** 63)),
    ("plan.meta", "write", swap_shard_offsets),
    ("plan.meta", "finalize", put(PLAN_SHARDS, "<Q", 2 ** 64 - 1)),
    ("write-00000-of-00001.meta", "finalize", put(WRITE_COUNT, "<Q", 2 ** 60)),
    ("write-00000-of-00001.meta", "finalize", rename_shard0),
]


@pytest.mark.parametrize("name,consumer,edit", CRAFTED,
                         ids=[f"{c[0]}-{c[1]}-{i}" for i, c in enumerate(CRAFTED)])
def test_crafted_records_with_a_correct_hash_are_refused(prepack_bin, tmp_path,
                                                        name, consumer, edit):
    """Rule 6: every count or offset decoded is bounded by the bytes that
    hold it and checked against the other fields before use (a plan.meta
    with shards = 2^64 - 1 once looped for ever)."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 2)
    steps_before = {"plan": [], "write": ["plan"], "finalize": ["plan", "write"]}
    for s in steps_before[consumer]:
        args = ["--scan-tasks", 2] if s == "plan" else ["--task-index", 0, "--task-count", 1]
        step(prepack_bin, s, inputs, out, *args)
    rehash(out / JOB / name, edit)
    args = {"plan": ["--scan-tasks", 2], "write": ["--task-index", 0, "--task-count", 1],
            "finalize": ["--write-tasks", 1]}[consumer]
    p = subprocess.run([prepack_bin, consumer, *inputs, "-o", str(out), *OPTS,
                        *map(str, args)], capture_output=True, text=True, timeout=60)
    refused(p, name)
    assert not (out / "manifest.json").exists()


@pytest.mark.parametrize("join", ["again", "zero", "past"])
def test_crafted_joins_are_refused(prepack_bin, tmp_path, join):
    """A task's joins (sequences that join the one before: groups), crafted
    with a correct hash: the same id twice made the plan write past its
    group starts; 0 or past the task's sequences left a sequence in no
    group."""
    lines = []
    for g in range(60):
        for k in range(1 + g % 3):
            lines.append(json.dumps({"input_ids": [g + 1] * (5 + k), "group": g}))
    src = tmp_path / "g.jsonl"
    src.write_text("\n".join(lines) + "\n")
    inputs = [str(src)]
    opts = ["--max-seq-len", "64"]
    out = tmp_path / "o"
    scan_all(prepack_bin, inputs, out, 1, opts=opts)
    meta = out / JOB / "scan-00000.meta"
    raw = meta.read_bytes()[:-8]
    sequences = struct.unpack_from("<Q", raw, SCAN_SEQUENCES)[0]
    joins = [k for k in range(1, len(lines)) if
             json.loads(lines[k])["group"] == json.loads(lines[k - 1])["group"]]
    njoins = len(joins)
    at = len(raw) - 8 * njoins - 8
    assert struct.unpack_from("<Q", raw, at)[0] == njoins
    assert list(struct.unpack_from(f"<{njoins}Q", raw, at + 8)) == joins
    value = {"again": joins[0], "zero": 0, "past": sequences}[join]
    rehash(meta, put(at + 16, "<Q", value))  # joins[1]
    p = step(prepack_bin, "plan", inputs, out, "--scan-tasks", 1, opts=opts, check=False)
    refused(p, "scan-00000.meta", "rerun scan task 0")


def test_a_finalize_killed_while_removing_the_job_is_done(prepack_bin, tmp_path):
    """Finalize renames the job directory before it empties it: killed in
    between, it leaves a finished set and the renamed directory, which the
    next step removes (its own files only, never through a link)."""
    inputs = small_inputs(tmp_path)
    out = tmp_path / "o"
    steps(prepack_bin, inputs, out, OPTS, 1, 1)
    want = files(out)
    gone = out / (JOB + "-removed")
    gone.mkdir()
    for name in ("plan.meta", "scan-00000.tokens", "write-00000-of-00001.lock"):
        (gone / name).write_bytes(b"x")
    p = step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1, "--json")
    assert json.loads(p.stdout)["already_done"] is True
    assert files(out) == want
    decoy = tmp_path / "decoy"
    decoy.mkdir()
    (decoy / "plan.meta").write_bytes(b"not the job's")
    os.symlink(decoy, gone)
    step(prepack_bin, "finalize", inputs, out, "--write-tasks", 1)
    assert (decoy / "plan.meta").read_bytes() == b"not the job's"
