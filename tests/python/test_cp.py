"""Context-parallel padding: pack --pad-multiple plans sequences as their
lengths rounded up, readers pad them (cu_seqlens real, cu_seqlens_padded
physical, padding never trained), and prepack.cp_split gives each CP rank
its load-balanced chunks."""
import json
import os
import subprocess

import numpy as np
import pytest

import prepack
from conftest import CORPUS


def pack(seqs, max_seq_len):
    """prepack.pack, which needs libprepack (sanitizer builds cannot load
    it into Python: those tests run in the plain build)."""
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs libprepack (PREPACK_LIBRARY)")
    return prepack.pack(seqs, max_seq_len=max_seq_len)


def test_cp_split_definition():
    row = {"input_ids": np.arange(1, 9, dtype=np.uint32),
           "cu_seqlens": np.array([0, 8], np.int32),
           "seq_ids": np.array([0], np.uint64)}
    batch = prepack.collate([row], "varlen", pad_multiple=4)
    r0 = prepack.cp_split(batch, 0, 2)
    r1 = prepack.cp_split(batch, 1, 2)
    assert r0["input_ids"].tolist() == [1, 2, 7, 8]
    assert r1["input_ids"].tolist() == [3, 4, 5, 6]
    assert r0["cu_seqlens"].tolist() == [0, 8]
    with pytest.raises(ValueError, match="multiple of 2 x cp_size"):
        prepack.cp_split(batch, 0, 3)
    with pytest.raises(ValueError, match="pad_multiple"):
        prepack.cp_split(prepack.collate([row], "varlen"), 0, 2)


@pytest.mark.parametrize("form", ["varlen", "flex", "hf"])
@pytest.mark.parametrize("cp", [1, 2, 3])
def test_cp_split_reassembles(form, cp):
    rng = np.random.default_rng(cp)
    rows = pack([rng.integers(0, 1000, int(n)).astype(np.uint32)
                 for n in rng.integers(1, 50, 30)], 120)
    m = 2 * cp * 2
    batch = prepack.collate(rows, form, pad_multiple=m)
    ids = np.asarray(batch["input_ids"]).reshape(-1)
    parts = [prepack.cp_split(batch, r, cp) for r in range(cp)]
    pcu = np.asarray(batch["cu_seqlens_padded"])
    rebuilt = np.empty_like(ids)
    for j in range(len(pcu) - 1):  # chunk c of sequence j is on rank min(c, 2cp-1-c)
        lo, c = pcu[j], (pcu[j + 1] - pcu[j]) // (2 * cp)
        for chunk in range(2 * cp):
            rank = chunk if chunk < cp else 2 * cp - 1 - chunk
            part = np.asarray(parts[rank]["input_ids"]).reshape(-1)
            before = sum(2 * ((q[1] - q[0]) // (2 * cp)) for q in zip(pcu[:j], pcu[1:j + 1]))
            at = before + (0 if chunk < cp else c)
            rebuilt[lo + chunk * c:lo + (chunk + 1) * c] = part[at:at + c]
    assert (rebuilt == ids).all()
    assert sum(np.asarray(p["input_ids"]).size for p in parts) == ids.size


@pytest.mark.parametrize("form", ["varlen", "flex", "hf", "padded"])
def test_padding_is_never_trained(form):
    rng = np.random.default_rng(5)
    rows = pack([rng.integers(0, 1000, int(n)).astype(np.uint32)
                 for n in rng.integers(1, 30, 12)], 64)
    plain = prepack.collate(rows, form, loss_weights=True)
    padded = prepack.collate(rows, form, pad_multiple=8, pad_id=7, loss_weights=True)
    labels, plabels = np.asarray(plain["labels"]), np.asarray(padded["labels"])
    assert np.sort(labels[labels != -100]).tolist() == \
        np.sort(plabels[plabels != -100]).tolist()
    key = "num_items_in_batch" if form == "hf" else "num_loss_tokens"
    if key in plain:
        assert plain[key] == padded[key]
    assert plain["num_loss_sequences"] == padded["num_loss_sequences"]
    if form == "varlen":
        assert plain["cu_seqlens"].tolist() == padded["cu_seqlens"].tolist()
        assert (np.diff(padded["cu_seqlens_padded"]) % 8 == 0).all()
        real = np.diff(padded["cu_seqlens"])
        pcu = padded["cu_seqlens_padded"]
        for j, n in enumerate(real):  # the real tokens, then pad_id
            assert (padded["input_ids"][pcu[j]:pcu[j] + n] ==
                    plain["input_ids"][plain["cu_seqlens"][j]:
                                       plain["cu_seqlens"][j] + n]).all()
            assert (padded["input_ids"][pcu[j] + n:pcu[j + 1]] == 7).all()


def run(bin_, *args):
    return subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)


def test_pack_with_pad_multiple(prepack_bin, tmp_path):
    out = tmp_path / "cp"
    p = run(prepack_bin, "pack", CORPUS, "-o", out, "--max-seq-len", "512",
            "--overlong", "split", "--pad-multiple", "8", "--json", "--quiet")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    plain = json.loads(run(prepack_bin, "stats", CORPUS, "--max-seq-len", "512",
                           "--overlong", "split", "--json").stdout)
    assert report["tokens"] == plain["tokens"]  # real tokens, padded or not
    assert report["rows"] >= plain["rows"]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["pad_multiple"] == 8
    assert run(prepack_bin, "verify", out, "--input", CORPUS).returncode == 0
    shards = prepack.ShardSet(out)
    assert shards.pad_multiple == 8
    for i in range(len(shards)):
        lengths = np.diff(shards[i]["cu_seqlens"])
        assert ((lengths + 7) // 8 * 8).sum() <= 512
    from prepack.torch import PackedDataset
    batch = next(iter(PackedDataset(out, batch_rows=4, shuffle=False)))
    assert (np.diff(batch["cu_seqlens_padded"].numpy()) % 8 == 0).all()
    assert batch["input_ids"].shape[0] == int(batch["cu_seqlens_padded"][-1])
    bad = run(prepack_bin, "pack", CORPUS, "-o", tmp_path / "bad", "--max-seq-len",
              "500", "--pad-multiple", "8")
    assert bad.returncode == 2 and "not a multiple of --pad-multiple" in bad.stderr


def test_a_manifest_pad_multiple_that_does_not_divide_is_refused(prepack_bin, tmp_path):
    out = tmp_path / "cp"
    assert run(prepack_bin, "pack", CORPUS, "-o", out, "--max-seq-len", "512",
               "--overlong", "split", "--pad-multiple", "8", "--quiet").returncode == 0
    path = out / "manifest.json"
    path.write_text(path.read_text().replace('"pad_multiple": 8', '"pad_multiple": 7'))
    with pytest.raises(prepack.ShardSetError, match="pad_multiple"):
        prepack.ShardSet(out, backend="python")
    p = run(prepack_bin, "verify", out)
    assert p.returncode == 1 and "pad_multiple" in p.stdout + p.stderr, p.stdout


def test_steps_keep_pad_multiple(prepack_bin, tmp_path):
    opts = ["--max-seq-len", "512", "--overlong", "split", "--pad-multiple", "16"]
    ref = tmp_path / "ref"
    assert run(prepack_bin, "pack", CORPUS, "-o", ref, *opts, "--quiet").returncode == 0
    out = tmp_path / "out"
    for t in range(2):
        assert run(prepack_bin, "scan", CORPUS, "-o", out, *opts, "--task-index", t,
                   "--task-count", 2).returncode == 0
    assert run(prepack_bin, "plan", CORPUS, "-o", out, *opts, "--scan-tasks", 2).returncode == 0
    for t in range(3):
        assert run(prepack_bin, "write", CORPUS, "-o", out, *opts, "--task-index", t,
                   "--task-count", 3).returncode == 0
    assert run(prepack_bin, "finalize", CORPUS, "-o", out, *opts,
               "--write-tasks", 3).returncode == 0
    for name in os.listdir(ref):
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name


def _random_set(prepack_bin, tmp_path, seed, plan_pad):
    """Random sequences (ids over uint16 when seed is odd, random loss
    masks) packed at L = 64, planned for pad_multiple plan_pad (1: not,
    so padding may take a row past L)."""
    rng = np.random.default_rng(seed)
    src = tmp_path / f"in{seed}.jsonl"
    top = 70000 if seed % 2 else 1000
    with open(src, "w") as f:
        for n in rng.integers(1, 70, 300):
            ids = rng.integers(0, top, int(n)).tolist()
            mask = (rng.random(int(n)) < 0.8).astype(int).tolist()
            f.write(json.dumps({"input_ids": ids, "loss_mask": mask}) + "\n")
    out = tmp_path / f"set{seed}-{plan_pad}"
    p = run(prepack_bin, "pack", src, "-o", out, "--max-seq-len", "64",
            "--overlong", "split", "--pad-multiple", plan_pad,
            "--rows-per-frame", "8", "--quiet")
    assert p.returncode == 0, p.stderr
    return out


def _same(got, want, where):
    assert sorted(got) == sorted(want), where
    for k in want:
        if k == "mask_mod":
            continue
        x, y = got[k], want[k]
        if isinstance(y, int):
            assert type(x) is int and x == y, (where, k)
            continue
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape, (where, k)
        assert np.array_equal(x, y), (where, k)


@pytest.mark.parametrize("plan_pad", [1, 8])
def test_c_batch_pads_as_collate(prepack_bin, tmp_path, plan_pad):
    """The C batcher's pad_multiple (prepack_batch_options.pad_multiple,
    through collate_batch) equals collate(rows, pad_multiple=M), the
    reference, over rows read by either reader, for every form."""
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs libprepack (PREPACK_LIBRARY)")
    from prepack._creader import collate_batch
    forms = [("varlen", {}), ("flex", {}), ("hf", {}),
             ("hf", {"return_flash_attn_kwargs": True,
                     "return_seq_idx": True, "num_items_in_batch": True}),
             ("padded", {"max_seq_len": 64, "mask_4d": True}),
             ("varlen", {"loss_weights": True, "position_offset": 3}),
             ("megatron", {}),
             ("megatron", {"loss_weights": True, "position_offset": 2}),
             ("hf", {"separator_id": 7, "num_items_in_batch": True})]
    refused = 0
    for seed in (1, 2):
        out = _random_set(prepack_bin, tmp_path, seed, plan_pad)
        c = prepack.ShardSet(out, backend="c")
        py = prepack.ShardSet(out, backend="python")
        rng = np.random.default_rng(seed)
        for m in (2, 4, 8):
            for form, options in forms:
                for pick in ([], [0], rng.permutation(len(c))[:7].tolist()):
                    options = dict(options, pad_id=int(rng.integers(0, 9)))
                    where = (seed, m, form, options, pick)
                    for rows in ([py[i] for i in pick], [c[i] for i in pick]):
                        try:
                            want = prepack.collate(rows, form, pad_multiple=m,
                                                   **options)
                        except ValueError as e:  # a row padded past L
                            assert form == "padded" and plan_pad == 1, where
                            with pytest.raises(ValueError, match=str(e)):
                                collate_batch(c._c, pick, form,
                                              pad_multiple=m, **options)
                            refused += 1
                            continue
                        got = collate_batch(c._c, pick, form, pad_multiple=m,
                                            **options)
                        _same(got, want, where)
                    flat = c._c.batch(pick, pad_multiple=m)
                    assert (np.diff(flat["cu_seqlens_padded"]) % m == 0).all()
    assert refused > 0 or plan_pad > 1


def test_c_batch_padded_past_l_is_refused(prepack_bin, tmp_path):
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs libprepack (PREPACK_LIBRARY)")
    c = prepack.ShardSet(_random_set(prepack_bin, tmp_path, 3, 1),
                         backend="c")
    full = max(range(len(c)), key=lambda i: len(c[i]["seq_ids"]))
    with pytest.raises(prepack.ShardSetError, match="padded to multiples of 16"):
        c._c.batch([full], padded=True, pad_multiple=16)
    flat = c._c.batch([full], pad_multiple=16)  # flat batches grow past L
    assert int(flat["cu_seqlens_padded"][-1]) > 64
    assert flat["cu_seqlens"].tolist() == c[full]["cu_seqlens"].tolist()


@pytest.mark.parametrize("m", [2**31, 2**32 + 4])
def test_pad_multiple_past_int32_is_refused(prepack_bin, tmp_path, m):
    """One sequence padded to M > 2^31 - 1 tokens cannot be told by int32
    cu_seqlens: collate refuses M before padding anything (it allocated M
    tokens a sequence and wrapped the offsets), and so does the C batch,
    whose uint32 option wrapped 2^32 + 4 to 4 and padded to that."""
    out = _random_set(prepack_bin, tmp_path, 4, 1)
    py = prepack.ShardSet(out, backend="python")
    for form in ("varlen", "padded"):
        with pytest.raises(ValueError, match="more than 2147483647"):
            prepack.collate([py[0]], form, pad_multiple=m, max_seq_len=64)
        with pytest.raises(ValueError, match="more than 2147483647"):
            py.batch([0], form, pad_multiple=m, max_seq_len=64)
    if not os.environ.get("PREPACK_LIBRARY"):
        return
    c = prepack.ShardSet(out, backend="c")
    for padded in (False, True):
        with pytest.raises(ValueError, match="more than 2147483647"):
            c._c.batch([0], padded=padded, pad_multiple=m)
    with pytest.raises(ValueError, match="more than 2147483647"):
        c.batch([0], "varlen", pad_multiple=m)


@pytest.mark.parametrize("bad", [-5, -1, 5.5, 2.0, "8", [2]])
def test_pad_multiple_must_be_a_whole_number(bad):
    """-5 and 5.5 were taken as 1 and 5 (int() and max()): a negative or
    fractional multiple, or one of another type, is a ValueError that
    names pad_multiple."""
    row = {"input_ids": np.arange(1, 9, dtype=np.uint32),
           "cu_seqlens": np.array([0, 8], np.int32),
           "seq_ids": np.array([0], np.uint64)}
    with pytest.raises(ValueError, match="pad_multiple"):
        prepack.collate([row], "varlen", pad_multiple=bad)


@pytest.mark.parametrize("none", [None, 0, 1, np.int64(1)])
def test_pad_multiple_none(none):
    row = {"input_ids": np.arange(1, 9, dtype=np.uint32),
           "cu_seqlens": np.array([0, 8], np.int32),
           "seq_ids": np.array([0], np.uint64)}
    assert "cu_seqlens_padded" not in prepack.collate([row], "varlen",
                                                      pad_multiple=none)
