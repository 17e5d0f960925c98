"""Plan-only sets (`pack --plan-only`, docs/FORMAT.md version 2): rows that
hold where their tokens are, read by every reader exactly like the full set
packed from the same inputs; inputs that changed are refused by name."""
import json
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest

import step_inputs as si
from prepack._manifest import Manifest
from prepack._pyreader import PyReader
from prepack._shards import CorruptShardError, ShardSet, ShardSetError

PYDIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__)))), "python")


def run(bin_, *args, check=True):
    p = subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise AssertionError(f"{args[0]} failed ({p.returncode}): {p.stderr}")
    return p


def backends():
    """The Python reader always; the C one where libprepack loads (not in
    sanitizer builds)."""
    return ["python", "c"] if os.environ.get("PREPACK_LIBRARY") else ["python"]


def write_nanogpt(path, seqs, eot=50256):
    """nanoGPT's layout: uint16 tokens, <|endoftext|> after each document."""
    tokens = []
    for s in seqs:
        tokens.extend(t % 50000 for t in s)
        tokens.append(eot)
    np.asarray(tokens, dtype=np.uint16).tofile(path)


# name -> (writer, extra options): every binary format, in the layouts
# real writers produce (Megatron's IndexedDatasetBuilder with its
# document index in each dtype it writes, llm.c's header and EOT before
# each document, nanoGPT's EOT after, a headerless file split before)
INPUTS = {
    "megatron-u16": (lambda d, s: si.write_megatron(str(d / "mu16"), s), "mu16", []),
    "megatron-i32": (lambda d, s: si.write_megatron(str(d / "mi32"), s, dtype=np.int32), "mi32", []),
    "megatron-i64": (lambda d, s: si.write_megatron(str(d / "mi64"), s, dtype=np.int64, docs_every=1), "mi64", []),
    "llmc": (lambda d, s: si.write_llmc(str(d / "l.bin"), s), "l.bin", []),
    "nanogpt": (lambda d, s: write_nanogpt(str(d / "n.u16"), s), "n.u16",
                ["--format", "raw-u16", "--doc-sep", "50256", "--sep-position", "after"]),
    "raw-before": (lambda d, s: si.write_raw(str(d / "r.u16"), s), "r.u16",
                   ["--format", "raw-u16", "--doc-sep", "0", "--sep-position", "before"]),
}

OPTION_SETS = [
    ["--max-seq-len", "1024"],
    ["--max-seq-len", "300", "--overlong", "split", "--algo", "bfd",
     "--max-seqs-per-row", "3", "--rows-per-frame", "5", "--shard-rows", "60"],
    ["--max-seq-len", "256", "--overlong", "truncate", "--algo", "nextfit",
     "--shuffle", "--seed", "7", "--token-dtype", "uint32"],
    ["--max-seq-len", "320", "--overlong", "drop", "--pad-multiple", "16"],
]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("inputs")
    for i, (name, (write, _, _)) in enumerate(INPUTS.items()):
        write(d, si.sequences(40 + i, 700))
    return d


def pack_both(bin_, paths, opts, out):
    full, plan_only = out / "full", out / "plan_only"
    run(bin_, "pack", *paths, "-o", full, "--quiet", *opts)
    run(bin_, "pack", *paths, "-o", plan_only, "--quiet", "--plan-only", *opts)
    return full, plan_only


def assert_same_rows(full, plan_only):
    want = ShardSet(full, backend="python")
    for backend in backends():
        got = ShardSet(plan_only, backend=backend)
        assert got.references and not want.references
        assert len(got) == len(want)
        for i in range(len(want)):
            a, b = want[i], got[i]
            assert a.keys() == b.keys(), i
            for key in a:
                assert a[key].dtype == b[key].dtype, (backend, i, key)
                assert np.array_equal(a[key], b[key]), (backend, i, key)


def assert_same_manifest(full, plan_only):
    a = json.loads((full / "manifest.json").read_text())
    b = json.loads((plan_only / "manifest.json").read_text())
    # a full set is version 4 (id codes), a plan-only one 2
    assert (a["version"], b["version"]) == (4, 2)
    assert b["storage"] == "references" and "storage" not in a
    for m in (a, b):
        for key in ("version", "storage", "sources", "prepack_version"):
            m.pop(key, None)
        for s in m["shards"]:
            del s["bytes"], s["xxh64"]
    assert a == b


@pytest.mark.parametrize("name", list(INPUTS))
@pytest.mark.parametrize("opts", OPTION_SETS, ids=["ffd", "split-bfd", "truncate-shuffle-u32", "drop-cp"])
def test_rows_equal_the_full_set(prepack_bin, inputs, tmp_path, name, opts):
    _, file, fmt = INPUTS[name]
    full, plan_only = pack_both(prepack_bin, [inputs / file], fmt + opts, tmp_path)
    assert_same_manifest(full, plan_only)
    assert_same_rows(full, plan_only)
    run(prepack_bin, "verify", plan_only, "--input", inputs / file, *fmt)


def test_every_format_in_one_set(prepack_bin, inputs, tmp_path):
    """Several inputs of several widths in one set: source numbers and
    offsets per input, ids read signed and narrowed to the set's dtype."""
    names = ["megatron-u16", "llmc", "megatron-i32", "megatron-i64"]
    paths = [inputs / INPUTS[n][1] for n in names]
    opts = ["--max-seq-len", "400", "--overlong", "split", "--shuffle"]
    full, plan_only = pack_both(prepack_bin, paths, opts, tmp_path)
    assert_same_manifest(full, plan_only)
    assert_same_rows(full, plan_only)
    m = json.loads((plan_only / "manifest.json").read_text())
    assert [s["width"] for s in m["sources"]] == [2, 2, 4, 8]
    assert [s["signed"] for s in m["sources"]] == [False, False, True, True]
    assert [("index" in s) for s in m["sources"]] == [True, False, True, True]
    assert all(os.path.isabs(s["path"]) for s in m["sources"])
    p = run(prepack_bin, "verify", plan_only, *sum((["--input", x] for x in paths), []))
    assert "all checks pass" in p.stderr
    shown = run(prepack_bin, "inspect", plan_only).stdout
    assert "plan only: tokens read from 4 input files" in shown
    assert str(paths[1]) in shown


def test_batches_and_datasets_equal(prepack_bin, inputs, tmp_path):
    """What trainers take (every collate form, PackedDataset's batches, an
    export) is the same from both sets."""
    import prepack
    paths = [inputs / "mu16", inputs / "l.bin"]
    full, plan_only = pack_both(prepack_bin, paths, ["--max-seq-len", "256", "--overlong", "split"], tmp_path)
    a, b = ShardSet(full), ShardSet(plan_only)
    rows_a, rows_b = [a[i] for i in range(12)], [b[i] for i in range(12)]
    for form in ("varlen", "flex", "padded", "hf"):
        x = prepack.collate(rows_a, form, max_seq_len=256)
        y = prepack.collate(rows_b, form, max_seq_len=256)
        assert x.keys() == y.keys()
        for key in x:
            if callable(x[key]):  # flex's mask_mod, made from doc_ids
                continue
            assert np.array_equal(np.asarray(x[key]), np.asarray(y[key])), (form, key)
    if os.environ.get("PREPACK_LIBRARY"):
        from prepack.torch import PackedDataset
        da = PackedDataset(str(full), batch_rows=4, form="varlen", seed=3)
        db = PackedDataset(str(plan_only), batch_rows=4, form="varlen", seed=3)
        for x, y in zip(da, db):
            for key in x:
                if hasattr(x[key], "numpy"):
                    assert np.array_equal(x[key].numpy(), y[key].numpy()), key
                else:
                    assert x[key] == y[key], key
    prepack.export(str(full), "hf-parquet", str(tmp_path / "ea"))
    prepack.export(str(plan_only), "hf-parquet", str(tmp_path / "eb"))
    import pyarrow.parquet as pq
    ta = pq.read_table(next((tmp_path / "ea").glob("*.parquet")))
    tb = pq.read_table(next((tmp_path / "eb").glob("*.parquet")))
    assert ta.equals(tb)


def flip(path, at):
    data = bytearray(path.read_bytes())
    data[at] ^= 1
    path.write_bytes(bytes(data))


def assert_refused(prepack_bin, plan_only, file, message):
    for backend in backends():
        with pytest.raises(ShardSetError, match=message) as e:
            ShardSet(plan_only, backend=backend)[0]
        assert str(file) in str(e.value)
    p = run(prepack_bin, "verify", plan_only, check=False)
    assert p.returncode == 1 and str(file) in p.stderr + p.stdout
    p = run(prepack_bin, "inspect", plan_only, check=False)
    assert p.returncode == 1 and str(file) in p.stderr


@pytest.mark.parametrize("change", ["token", "append", "truncate", "index", "moved"])
def test_changed_inputs_are_refused(prepack_bin, tmp_path, change):
    d = tmp_path / "in"
    d.mkdir()
    si.write_megatron(str(d / "m"), si.sequences(5, 4000))
    si.write_llmc(str(d / "l.bin"), si.sequences(6, 3000))
    paths = [d / "m", d / "l.bin"]
    _, plan_only = pack_both(prepack_bin, paths, ["--max-seq-len", "512", "--overlong", "split"], tmp_path)
    binf, idx, llmc = d / "m.bin", d / "m.idx", d / "l.bin"
    assert binf.stat().st_size > 64 * 4096  # sampled, not hashed whole
    if change == "token":  # a token inside the last sampled block
        flip(llmc, llmc.stat().st_size - 100)
        assert_refused(prepack_bin, plan_only, llmc, "changed since the set was packed")
    elif change == "append":
        with open(binf, "ab") as f:
            f.write(b"\0\0")
        assert_refused(prepack_bin, plan_only, binf, "changed since the set was packed")
    elif change == "truncate":
        os.truncate(llmc, llmc.stat().st_size - 2)
        assert_refused(prepack_bin, plan_only, llmc, "changed since the set was packed")
    elif change == "index":  # a document's length: the size stays
        flip(idx, 34 + 8)
        assert_refused(prepack_bin, plan_only, idx, "changed since the set was packed")
    else:
        shutil.move(binf, d / "elsewhere.bin")
        assert_refused(prepack_bin, plan_only, binf, "cannot open the input")


def test_text_inputs_and_steps_refuse_plan_only(prepack_bin, inputs, tmp_path):
    jl = tmp_path / "a.jsonl"
    si.write_jsonl(str(jl), si.sequences(9, 20))
    for args in ([jl], [inputs / "mu16", jl]):
        p = run(prepack_bin, "pack", *args, "-o", tmp_path / "o", "--max-seq-len", "64",
                "--plan-only", check=False)
        assert p.returncode == 1
        assert f"{jl}: --plan-only references token files" in p.stderr
        assert not (tmp_path / "o").exists()
    p = run(prepack_bin, "scan", inputs / "mu16", "-o", tmp_path / "s", "--max-seq-len", "64",
            "--plan-only", "--task-index", "0", "--task-count", "1", check=False)
    assert p.returncode == 2 and "--plan-only" in p.stderr
    p = run(prepack_bin, "stats", inputs / "mu16", "--max-seq-len", "64", "--plan-only",
            check=False)
    assert p.returncode == 2 and "not an option of stats" in p.stderr


HOSTILE = [None, -1, 0, 3, 2**64, 1.5, "x", "", "relative/path", [], {}]


def test_hostile_sources_fail_cleanly(prepack_bin, inputs, tmp_path):
    """Every value of "sources" and "storage" edited to nonsense: both
    readers refuse with a ShardSetError (or read the same rows)."""
    _, plan_only = pack_both(prepack_bin, [inputs / "mi32"], ["--max-seq-len", "256", "--overlong", "split"], tmp_path)
    original = json.loads((plan_only / "manifest.json").read_text())
    want = [ShardSet(plan_only, backend="python")[i] for i in range(3)]
    keys = ["storage", "sources", "sources[0]", "version"] + [
        "sources." + k for k in original["sources"][0]]
    for key in keys:
        for value in HOSTILE:
            m = json.loads(json.dumps(original))
            if key == "sources[0]":
                m["sources"][0] = value
            elif key.startswith("sources."):
                m["sources"][0][key[8:]] = value
            else:
                m[key] = value
            (plan_only / "manifest.json").write_text(json.dumps(m))
            for backend in backends():
                try:
                    s = ShardSet(plan_only, backend=backend)
                    got = [s[i] for i in range(3)]
                except ShardSetError:
                    continue
                for a, b in zip(want, got):  # an edit that changes nothing
                    assert all(np.array_equal(a[k], b[k]) for k in a), (key, value)
    (plan_only / "manifest.json").write_text(json.dumps(original))


def test_damaged_references_fail_cleanly(prepack_bin, inputs, tmp_path):
    """A reference pointing outside its file, or at a source the manifest
    does not list, is named as such; rewritten through the writer's own
    format, so only the reference is wrong."""
    _, plan_only = pack_both(prepack_bin, [inputs / "mu16"],
                        ["--max-seq-len", "256", "--overlong", "split", "--rows-per-frame", "1000000"], tmp_path)
    frame = first_frame(plan_only)
    for field, value, message in (("ref_offset", 2**40, "outside"),
                                  ("ref_source", 7, "outside the manifest's sources")):
        bad = [dict(r) for r in frame]
        dtype = "<u8" if field == "ref_offset" else "<u4"
        vals = np.frombuffer(bad[0][field], dtype=dtype).copy()
        vals[0] = value
        bad[0][field] = vals.tobytes()
        write_one_frame_shard(plan_only, bad)
        for backend in backends():
            with pytest.raises(CorruptShardError, match=message):
                ShardSet(plan_only, backend=backend)[0]


def write_one_frame_shard(d, rows):
    """shard-00000.zst holding `rows` in one frame, and the manifest's
    bytes and xxh64 for it (docs/FORMAT.md's layout, written here)."""
    import struct

    import msgpack
    import xxhash
    import zstandard
    body = b"\xdd" + struct.pack(">I", len(rows)) + b"".join(
        msgpack.packb(r, use_bin_type=True) for r in rows)
    frame = zstandard.ZstdCompressor(write_checksum=True, write_content_size=True).compress(body)
    table = struct.pack("<II", 0x184D2A5E, 12 + 9) + struct.pack(
        "<III", len(frame), len(body), xxhash.xxh64_intdigest(body) & 0xFFFFFFFF) + struct.pack(
        "<IBI", 1, 0x80, 0x8F92EAB1)
    data = frame + table
    (d / "shard-00000.zst").write_bytes(data)
    m = json.loads((d / "manifest.json").read_text())
    m["shards"][0]["bytes"] = len(data)
    m["shards"][0]["xxh64"] = xxhash.xxh64_hexdigest(data)
    (d / "manifest.json").write_text(json.dumps(m))


def test_sources_that_are_not_regular_files(prepack_bin, inputs, tmp_path):
    """A manifest naming a FIFO (an open would wait for a writer forever)
    or a device: refused by name, promptly."""
    import signal
    _, plan_only = pack_both(prepack_bin, [inputs / "l.bin"], ["--max-seq-len", "1024"], tmp_path)
    original = json.loads((plan_only / "manifest.json").read_text())
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    signal.alarm(60)  # a hang fails the test instead of the run
    try:
        for path in (str(fifo), "/dev/zero", str(tmp_path)):
            m = json.loads(json.dumps(original))
            m["sources"][0]["path"] = path
            (plan_only / "manifest.json").write_text(json.dumps(m))
            for backend in backends():
                with pytest.raises(ShardSetError, match="not a regular file|cannot open"):
                    ShardSet(plan_only, backend=backend)
            p = run(prepack_bin, "inspect", plan_only, check=False)
            assert p.returncode == 1 and path in p.stderr
    finally:
        signal.alarm(0)


# ---- hostile plan-only sets (issue 26) ---------------------------------------


def read_all(plan_only, backend):
    s = ShardSet(plan_only, backend=backend)
    return [s[i] for i in range(len(s))]


def assert_refused_everywhere(prepack_bin, plan_only, message):
    """Both readers refuse the set (at open or on a row) with the same
    class of error, and so do `verify` and ShardSet.verify()."""
    for backend in backends():
        with pytest.raises(ShardSetError, match=message):
            read_all(plan_only, backend)
        with pytest.raises(ShardSetError, match=message):
            ShardSet(plan_only, backend=backend).verify()
    p = run(prepack_bin, "verify", plan_only, check=False)
    assert p.returncode == 1, p.stdout + p.stderr
    assert re.search(message, p.stdout + p.stderr), p.stdout + p.stderr


def first_frame(plan_only):
    """Shard 0's frame 0 as msgpack decodes it (the Python reader's)."""
    return PyReader(Manifest(plan_only)).frame(0, 0)


def edit_manifest(plan_only, fn):
    m = json.loads((plan_only / "manifest.json").read_text())
    fn(m)
    (plan_only / "manifest.json").write_text(json.dumps(m))


def edit_first_reference(plan_only, field, change):
    """Row 0's first reference rewritten by change(value), through the
    writer's own format, so only the reference is wrong."""
    frame = first_frame(plan_only)
    rows = [dict(r) for r in frame]
    dtype = "<u8" if field == "ref_offset" else "<u4"
    vals = np.frombuffer(rows[0][field], dtype=dtype).copy()
    vals[0] = change(int(vals[0]))
    rows[0][field] = vals.tobytes()
    write_one_frame_shard(plan_only, rows)


@pytest.fixture(scope="module")
def wide_inputs(tmp_path_factory):
    """An int32 Megatron input with ids past 65535 (its set is uint32), and
    an llm.c one."""
    d = tmp_path_factory.mktemp("wide")
    si.write_megatron(str(d / "w"), si.sequences(3, 300, vocab=100000),
                      dtype=np.int32)
    si.write_llmc(str(d / "l.bin"), si.sequences(4, 300))
    si.write_megatron(str(d / "u8"), si.sequences(5, 300, vocab=256),
                      dtype=np.uint8)
    return d


def pack_plan_only(prepack_bin, paths, out, *opts):
    run(prepack_bin, "pack", *paths, "-o", out, "--quiet", "--plan-only",
        "--max-seq-len", "256", "--overlong", "split",
        "--rows-per-frame", "1000000", *opts)
    return out


def test_token_dtype_narrowed_is_refused(prepack_bin, wide_inputs, tmp_path):
    """uint32 edited to uint16 over ids past 65535: the ids no longer fit,
    so no reader may narrow them silently (a full set refuses the same
    edit by its sizes)."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / "w"], tmp_path / "r")
    assert json.loads((plan_only / "manifest.json").read_text())[
        "token_dtype"] == "uint32"
    edit_manifest(plan_only, lambda m: m.update(token_dtype="uint16"))
    assert_refused_everywhere(prepack_bin, plan_only, "does not fit token_dtype")


@pytest.mark.parametrize("source,width", [("w", 2), ("w", 8), ("l.bin", 4),
                                          ("l.bin", 1)])
def test_width_must_match_the_file(prepack_bin, wide_inputs, tmp_path,
                                   source, width):
    """A source's width is bound to what the file is: a Megatron index's
    dtype code (the index is hashed whole), an llm.c header (inside the
    first sampled block)."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / source], tmp_path / "r")
    edit_manifest(plan_only, lambda m: m["sources"][0].update(width=width))
    assert_refused_everywhere(prepack_bin, plan_only, "width")


@pytest.mark.parametrize("source", ["w", "l.bin"])
def test_ref_offset_off_by_one_byte(prepack_bin, wide_inputs, tmp_path,
                                    source):
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / source], tmp_path / "r")
    edit_first_reference(plan_only, "ref_offset", lambda v: v + 1)
    assert_refused_everywhere(prepack_bin, plan_only, "not a multiple of")


@pytest.mark.parametrize("source,delta", [("u8", 1), ("w", 4), ("w", -4)])
def test_ref_offset_off_its_index_entry(prepack_bin, wide_inputs, tmp_path,
                                        source, delta):
    """An offset on a token boundary that is not where the Megatron
    index puts the sequence (one byte off in a uint8 file, one token off
    in an int32 one): refused, not read as another sequence's tokens."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / source], tmp_path / "r")
    edit_first_reference(plan_only, "ref_offset", lambda v: max(v + delta, 0))
    assert_refused_everywhere(prepack_bin, plan_only,
                              "not where its index entry puts it|not one of "
                              "this input's|past its index entry")


def test_megatron_source_without_its_input(prepack_bin, wide_inputs,
                                           tmp_path):
    """The inputs tie sequence ids to index entries: a Megatron source
    whose manifest drops them cannot have its offsets checked, and is
    refused."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / "w"], tmp_path / "r")
    edit_manifest(plan_only, lambda m: m.pop("inputs"))
    assert_refused_everywhere(prepack_bin, plan_only, "needs its input listed")


def test_reference_to_source_count_and_last(prepack_bin, wide_inputs,
                                            tmp_path):
    """The boundary: ref_source = nsources is refused, nsources - 1 reads
    (or is refused as outside that file), never a crash."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / "l.bin",
                                   wide_inputs / "w"], tmp_path / "r")
    good = (plan_only / "manifest.json").read_text()
    shard = (plan_only / "shard-00000.zst").read_bytes()
    for value, message in ((2, "outside the manifest's sources"),
                           (1, None)):
        (plan_only / "manifest.json").write_text(good)
        (plan_only / "shard-00000.zst").write_bytes(shard)
        edit_first_reference(plan_only, "ref_source", lambda v: value)
        code = ("import sys\n"
                "from prepack._shards import ShardSet, ShardSetError\n"
                "try:\n"
                f"    s = ShardSet({str(plan_only)!r}, backend=sys.argv[1])\n"
                "    [s[i] for i in range(len(s))]\n"
                "except ShardSetError as e:\n"
                "    print('refused:', e)\n")
        for backend in backends():
            p = subprocess.run([sys.executable, "-c", code, backend],
                               capture_output=True, text=True,
                               env=dict(os.environ, PYTHONPATH=PYDIR))
            assert p.returncode == 0, (value, backend, p.stderr)
            if message:
                assert message in p.stdout, (backend, p.stdout)
        p = run(prepack_bin, "verify", plan_only, check=False)
        assert p.returncode in (0, 1) and (not message or message in p.stdout)


def test_input_truncated_while_the_set_is_open(prepack_bin, wide_inputs,
                                               tmp_path):
    """A referenced file cut short after the open: reading a row is an
    error naming the file, never SIGBUS (run in a child so a crash is a
    failure, not the end of pytest)."""
    d = tmp_path / "in"
    shutil.copytree(wide_inputs, d)
    plan_only = pack_plan_only(prepack_bin, [d / "l.bin"], tmp_path / "r")
    code = ("import os, sys\n"
            "from prepack._shards import ShardSet, ShardSetError\n"
            f"s = ShardSet({str(plan_only)!r}, backend=sys.argv[1])\n"
            f"os.truncate({str(d / 'l.bin')!r}, 4096)\n"
            "try:\n"
            "    [s[i] for i in range(len(s))]\n"
            "except ShardSetError as e:\n"
            "    print('refused:', e)\n")
    for backend in backends():
        si.write_llmc(str(d / "l.bin"), si.sequences(4, 300))
        p = subprocess.run([sys.executable, "-c", code, backend],
                           capture_output=True, text=True,
                           env=dict(os.environ, PYTHONPATH=PYDIR))
        assert p.returncode == 0, (backend, p.returncode, p.stderr)
        assert "refused:" in p.stdout and str(d / "l.bin") in p.stdout, \
            (backend, p.stdout)


class CountingXXH:
    """prepack._sources' xxhash, counting the hashes made, and calling
    `after` once the first digest is taken (after a reader's check)."""

    def __init__(self, real, after=None):
        self.real, self.after, self.made = real, after, 0

    def __getattr__(self, name):
        return getattr(self.real, name)

    def xxh64(self, *args):
        self.made += 1
        h, outer = self.real.xxh64(*args), self

        class Wrapped:
            def update(self, data):
                h.update(data)

            def hexdigest(self):
                if outer.after:
                    outer.after()
                    outer.after = None
                return h.hexdigest()

            def intdigest(self):
                return h.intdigest()
        return Wrapped()


def test_source_swapped_after_its_check(prepack_bin, wide_inputs, tmp_path,
                                        monkeypatch):
    """The path is a symlink swapped to another file of the same size once
    the identity check has hashed it: the reader must read the file it
    checked (one open, checked and read through its descriptor)."""
    import prepack._sources as sources
    d = tmp_path / "in"
    d.mkdir()
    real = d / "real.bin"
    shutil.copy(wide_inputs / "l.bin", real)
    link = d / "l.bin"
    os.symlink(real, link)
    plan_only = pack_plan_only(prepack_bin, [link], tmp_path / "r")
    edit_manifest(plan_only, lambda m: m["sources"][0].update(path=str(link)))
    want = read_all(plan_only, "python")
    other = d / "other.bin"
    data = bytearray(real.read_bytes())
    data[1024:] = bytes(len(data) - 1024)  # every token 0, header kept
    other.write_bytes(bytes(data))

    def swap():
        os.symlink(other, d / "tmp-link")
        os.replace(d / "tmp-link", link)

    monkeypatch.setattr(sources, "xxhash", CountingXXH(sources.xxhash, swap))
    got = read_all(plan_only, "python")
    for a, b in zip(want, got):
        assert np.array_equal(a["input_ids"], b["input_ids"])


def test_one_file_listed_many_times(prepack_bin, wide_inputs, tmp_path,
                                    monkeypatch):
    """The same input given three times: one file, hashed once. A manifest
    listing it 20,000 times (more sources than inputs) is refused before
    any is opened."""
    import prepack._sources as sources
    path = wide_inputs / "l.bin"
    plan_only = pack_plan_only(prepack_bin, [path, path, path], tmp_path / "r")
    assert len(json.loads((plan_only / "manifest.json").read_text())[
        "sources"]) == 3
    counter = CountingXXH(sources.xxhash)
    monkeypatch.setattr(sources, "xxhash", counter)
    read_all(plan_only, "python")
    assert counter.made == 1
    monkeypatch.undo()
    edit_manifest(plan_only, lambda m: m.update(sources=m["sources"] * 7000))
    for backend in backends():
        with pytest.raises(ShardSetError, match="sources"):
            ShardSet(plan_only, backend=backend)
    p = run(prepack_bin, "verify", plan_only, check=False)
    assert p.returncode == 1 and "sources" in p.stdout + p.stderr


def test_verify_input_with_a_group_dropped_whole(prepack_bin, tmp_path):
    """--overlong drop drops a group over L whole although each member
    fits: verify --input accounts for it instead of reporting its members
    missing."""
    src = tmp_path / "g.jsonl"
    lines = [{"input_ids": list(range(1, 31)), "group": 1},
             {"input_ids": list(range(1, 31)), "group": 1},
             {"input_ids": list(range(1, 11))},
             {"input_ids": list(range(1, 6)), "group": 2},
             {"input_ids": list(range(1, 6)), "group": 2}]
    src.write_text("".join(json.dumps(x) + "\n" for x in lines))
    out = tmp_path / "s"
    run(prepack_bin, "pack", src, "-o", out, "--max-seq-len", "40",
        "--overlong", "drop", "--quiet")
    p = run(prepack_bin, "verify", out, "--input", src, check=False)
    assert p.returncode == 0, p.stdout + p.stderr
    # a member of a group that fits, missing, is still reported
    m = json.loads((out / "manifest.json").read_text())
    assert m["stats"]["items"] == 3


def test_manifest_that_is_not_a_regular_file(prepack_bin, wide_inputs,
                                             tmp_path):
    """manifest.json opened once and checked through its descriptor: a
    FIFO in its place (an open by path would wait for a writer forever)
    is refused promptly by both readers and verify."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / "l.bin"], tmp_path / "r")
    (plan_only / "manifest.json").unlink()
    os.mkfifo(plan_only / "manifest.json")
    for backend in backends():
        p = subprocess.run(
            [sys.executable, "-c",
             "import sys\nfrom prepack._shards import ShardSet, ShardSetError\n"
             "try:\n    ShardSet(sys.argv[1], backend=sys.argv[2])\n"
             "except ShardSetError as e:\n    print('refused:', e)\n",
             str(plan_only), backend], capture_output=True, text=True, timeout=20,
            env=dict(os.environ, PYTHONPATH=PYDIR))
        assert "refused:" in p.stdout and "not a regular file" in p.stdout, \
            (backend, p.stdout, p.stderr)
    p = subprocess.run([prepack_bin, "verify", plan_only], capture_output=True,
                       text=True, timeout=20)
    assert p.returncode == 1 and "not a regular file" in p.stdout + p.stderr


def test_both_readers_agree_on_the_fuzz_corpus(prepack_bin, tmp_path):
    """fuzz/corpus/plan_only (hostile manifests beside a real plan-only
    shard and the files it references): each reader accepts or refuses
    each one alike, with ShardSetError and nothing else."""
    replay = os.path.join(os.path.dirname(prepack_bin), "fuzz",
                          "replay_plan_only")
    if not os.path.exists(replay):
        pytest.skip("no replay_plan_only in this build")
    corpus = os.path.join(os.path.dirname(PYDIR), "fuzz", "corpus",
                          "plan_only")
    # the replay builds the fixed set its inputs name once it has an
    # input to run (an empty directory builds nothing: this test then
    # depended on the fuzz_replay_plan_only ctest having run first)
    one = tmp_path / "one"
    one.mkdir()
    first = sorted(os.listdir(corpus))[0]
    shutil.copy(os.path.join(corpus, first), one / first)
    subprocess.run([replay, str(one)], check=True, capture_output=True)
    shard = "/tmp/prepack-fuzz-plan-only-v1/set/shard-00000.zst"
    for name in sorted(os.listdir(corpus)):
        d = tmp_path / name
        d.mkdir()
        shutil.copy(shard, d)
        shutil.copy(os.path.join(corpus, name), d / "manifest.json")
        said = []
        for backend in backends():
            try:
                s = ShardSet(d, backend=backend)
                [s[i] for i in range(len(s))]
                s.verify()
                said.append("read")
            except ShardSetError:
                said.append("refused")
        assert len(set(said)) == 1, (name, said)
        shutil.rmtree(d)


@pytest.mark.parametrize("value", [2**64, -2**63 - 1, "1e400"])
def test_numbers_past_64_bits_are_refused_alike(prepack_bin, wide_inputs,
                                                tmp_path, value):
    """A number no 64-bit field holds, even in a key only people read:
    the C reader's parser refuses the document, so Python's does too."""
    plan_only = pack_plan_only(prepack_bin, [wide_inputs / "l.bin"], tmp_path / "r")
    text = (plan_only / "manifest.json").read_text()
    (plan_only / "manifest.json").write_text(
        text.replace('"seed": 0', f'"seed": {value}', 1))
    for backend in backends():
        with pytest.raises(ShardSetError, match="invalid JSON"):
            ShardSet(plan_only, backend=backend)
