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
