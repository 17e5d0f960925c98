"""prepack.export to TRL's packed format, read back with the consumers' own
libraries: datasets (save_to_disk, Parquet) and TRL's padding-free
collator, which must give the rows, boundaries, positions and loss
positions of the shard set."""
import subprocess
import sys

import numpy as np
import pytest

import prepack

datasets = pytest.importorskip("datasets")
trl_sft = pytest.importorskip("trl.trainer.sft_trainer")
torch = pytest.importorskip("torch")


def masked_set(prepack_bin, tmp_path):
    """A set with a loss mask (labels in half the records)."""
    import json
    rng = np.random.default_rng(0)
    src = tmp_path / "in.jsonl"
    with open(src, "w") as f:
        for i in range(300):
            ids = rng.integers(0, 5000, int(rng.integers(1, 80))).tolist()
            rec = {"input_ids": ids}
            if i % 2:
                rec["loss_mask"] = [int(x) for x in rng.integers(0, 2, len(ids))]
            f.write(json.dumps(rec) + "\n")
    out = tmp_path / "set"
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(out), "--max-seq-len",
                    "256", "--shard-rows", "40", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.mark.parametrize("to", ["hf", "hf-parquet"])
def test_trl_reads_the_export_as_the_set(prepack_bin, tmp_path, to):
    src = masked_set(prepack_bin, tmp_path)
    out = tmp_path / to
    n = prepack.export(src, to, out)
    shards = prepack.ShardSet(src, backend="python")
    assert n == len(shards)
    if to == "hf":
        ds = datasets.load_from_disk(str(out))
    else:
        ds = datasets.load_dataset("parquet", data_dir=str(out), split="train")
    assert len(ds) == n
    collator = trl_sft.DataCollatorForLanguageModeling(pad_token_id=0, padding_free=True)
    for lo in range(0, n, 7):
        idx = list(range(lo, min(n, lo + 7)))
        got = collator([ds[i] for i in idx])
        want = prepack.collate([shards[i] for i in idx], "hf", tensors="pt",
                               return_flash_attn_kwargs=True)
        assert torch.equal(got["input_ids"], want["input_ids"])
        assert torch.equal(got["position_ids"], want["position_ids"])
        assert torch.equal(got["labels"], want["labels"])
        assert torch.equal(got["cu_seq_lens_q"].long(), want["cu_seq_lens_q"].long())


def test_the_corpus_export(shard_set, tmp_path):
    out = tmp_path / "hf"
    n = prepack.export(shard_set, "hf", out)
    ds = datasets.load_from_disk(str(out))
    shards = prepack.ShardSet(shard_set, backend="python")
    assert n == len(ds) == len(shards)
    for i in (0, n // 2, n - 1):
        assert ds[i]["input_ids"] == shards[i]["input_ids"].tolist()
        assert ds[i]["seq_lengths"] == np.diff(shards[i]["cu_seqlens"]).tolist()
    assert "labels" not in ds.column_names  # no loss mask in the set


def test_export_refuses_a_non_empty_output_and_cli(prepack_bin, shard_set, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / "x").write_text("mine")
    with pytest.raises(FileExistsError):
        prepack.export(shard_set, "hf", out)
    with pytest.raises(ValueError, match="to must be"):
        prepack.export(shard_set, "nemo-npy-typo", tmp_path / "p")
    import os
    from conftest import ROOT
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    p = subprocess.run([sys.executable, "-m", "prepack", "export", str(shard_set),
                        "--to", "hf-parquet", "-o", str(tmp_path / "cli")],
                       capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert "packs written" in p.stdout
    # the C command hands the same arguments to the Python package
    env["PREPACK_PYTHON"] = sys.executable
    p = subprocess.run([prepack_bin, "export", str(shard_set), "--to", "nemo-parquet",
                        "-o", str(tmp_path / "c")], capture_output=True, text=True, env=env)
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "c" / "training_2048.idx.parquet").exists()
    p = subprocess.run([prepack_bin, "export", str(shard_set), "--to", "csv",
                        "-o", str(tmp_path / "d")], capture_output=True, text=True, env=env)
    assert p.returncode == 2 and "invalid choice" in p.stderr
    env["PREPACK_PYTHON"] = str(tmp_path / "no-python")
    p = subprocess.run([prepack_bin, "export", str(shard_set), "--to", "hf",
                        "-o", str(tmp_path / "e")], capture_output=True, text=True, env=env)
    assert p.returncode == 1 and "cannot run" in p.stderr


def nemo_reader(packs):
    """The training examples NeMo's / Megatron-Bridge's GPTSFTPackedDataset
    makes of packs, as their code reads them (megatron/bridge/data/packing/
    gpt_sft.py, datasets/packing_utils.py): seq_boundaries = seq_start_id +
    [len(input_ids)]; each sequence trains input_ids[b:e-1] -> [b+1:e]
    where loss_mask[b:e-1] is set (the mask is stored shifted), positions
    restarting at 0. Yields (inputs, targets or -100) per sequence."""
    for pack in packs:
        ids = list(pack["input_ids"])
        mask = list(pack["loss_mask"])
        bounds = list(pack["seq_start_id"]) + [len(ids)]
        assert len(mask) == len(ids)
        for b, e in zip(bounds, bounds[1:]):
            assert not mask[e - 1]  # nothing after a sequence's last token
            yield ids[b:e - 1], [ids[j + 1] if mask[j] else -100 for j in range(b, e - 1)]


@pytest.mark.parametrize("to", ["nemo-npy", "nemo-parquet"])
def test_nemo_reads_the_export_as_the_set(prepack_bin, tmp_path, to):
    import json
    src = masked_set(prepack_bin, tmp_path)
    out = tmp_path / to
    n = prepack.export(src, to, out)
    shards = prepack.ShardSet(src, backend="python")
    L = shards.max_seq_len
    if to == "nemo-npy":
        packs = np.load(out / f"training_{L}.npy", allow_pickle=True)
    else:
        import pyarrow.parquet as pq
        table = pq.read_table(out / f"training_{L}.idx.parquet")
        assert str(table.schema.field("input_ids").type) == "list<element: int32>"
        assert str(table.schema.field("loss_mask").type) == "list<element: int8>"
        packs = table.to_pylist()
    assert len(packs) == n == len(shards)
    want = []
    for i in range(n):
        batch = prepack.collate([shards[i]], "varlen")
        cu, labels, ids = batch["cu_seqlens"], batch["labels"], batch["input_ids"]
        for b, e in zip(cu[:-1], cu[1:]):
            want.append((ids[b:e - 1].tolist(), labels[b:e - 1].tolist()))
    assert list(nemo_reader(packs)) == want
    meta = json.loads((out / f"{L}_metadata.jsonl").read_text())[0]
    assert meta["pack_size"] == L and meta["max_samples_per_bin"] >= 1


# ---- the command's child Python and OUT (issue 26, rule 7) ----------------

def _cli_env(**more):
    import os
    from conftest import ROOT
    env = dict(os.environ, PREPACK_PYTHON=sys.executable,
               PYTHONPATH=os.path.join(ROOT, "python"))
    env.update(more)
    return env


def _export_cli(prepack_bin, shard_set, out, env, cwd=None, to="nemo-npy"):
    return subprocess.run([prepack_bin, "export", str(shard_set), "--to", to,
                           "-o", str(out)], capture_output=True, text=True,
                          env=env, cwd=cwd)


@pytest.mark.parametrize("planted", ["prepack.py", "prepack/__init__.py",
                                     "numpy.py", "sitecustomize.py",
                                     "pyarrow.py"])
def test_export_runs_no_code_from_the_working_directory(prepack_bin, shard_set,
                                                        tmp_path, planted):
    """A module in the working directory (or named by a PYTHONPATH entry
    that is empty or relative, so the working directory) is not run."""
    work = tmp_path / "work"
    (work / planted).parent.mkdir(parents=True, exist_ok=True)
    (work / planted).write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n"
        "raise SystemExit(0)\n")
    env = _cli_env()
    env["PYTHONPATH"] = ":." + ":" + env["PYTHONPATH"] + ":"
    p = _export_cli(prepack_bin, shard_set, tmp_path / "out", env, cwd=work,
                    to="nemo-parquet")
    assert p.returncode == 0, p.stderr
    assert not (tmp_path / "ran").exists()
    assert (tmp_path / "out" / "training_2048.idx.parquet").is_file()


@pytest.mark.parametrize("userbase", [".", "absolute"])
def test_export_runs_no_code_from_a_user_base_it_was_given(
        prepack_bin, shard_set, tmp_path, userbase):
    """Outside a venv the child puts the user's site-packages back, but
    the one under the home directory: PYTHONUSERBASE (which -I leaves to
    site's functions) could name the working directory."""
    import os
    base = os.path.join(sys.base_prefix, "bin", "python3")
    if not os.access(base, os.X_OK):
        pytest.skip("no Python outside the venv")
    work = tmp_path / "work"
    ver = f"python{sys.version_info[0]}.{sys.version_info[1]}"
    site_dir = work / "lib" / ver / "site-packages"
    site_dir.mkdir(parents=True)
    (site_dir / "prepack.py").write_text(
        f"open({str(tmp_path / 'ran')!r}, 'w').write('ran')\n")
    env = _cli_env(PREPACK_PYTHON=base,
                   PYTHONUSERBASE="." if userbase == "." else str(work))
    env.pop("PYTHONPATH")
    _export_cli(prepack_bin, shard_set, tmp_path / "out", env, cwd=work)
    assert not (tmp_path / "ran").exists()


def test_export_checks_the_child_wrote_out(prepack_bin, shard_set, tmp_path):
    """A Python that exits 0 and writes nothing (or not the whole export)
    is not a success: the command names the Python it ran."""
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\n# the last argument is OUT\n"
                    "for a; do out=$a; done\nmkdir -p \"$out\"\nexit 0\n")
    fake.chmod(0o755)
    for python in ("/bin/true", str(fake)):
        out = tmp_path / ("out-" + python.replace("/", "_"))
        p = _export_cli(prepack_bin, shard_set, out,
                        _cli_env(PREPACK_PYTHON=python))
        assert p.returncode == 1, (python, p.stdout, p.stderr)
        assert python in p.stderr
        assert "packs written" not in p.stdout


def test_export_refuses_a_symlinked_output_before_the_work(prepack_bin,
                                                          shard_set, tmp_path):
    import os
    target = tmp_path / "elsewhere"
    target.mkdir()
    link = tmp_path / "out"
    link.symlink_to(target)
    with pytest.raises(FileExistsError, match="symbolic link"):
        prepack.export(shard_set, "nemo-npy", link)
    p = _export_cli(prepack_bin, shard_set, link, _cli_env())
    assert p.returncode == 1 and "symbolic link" in p.stderr, p.stderr
    assert "Errno" not in p.stderr
    # nothing written through the link, no staging directory left beside
    assert os.listdir(target) == []
    assert sorted(os.listdir(tmp_path)) == ["elsewhere", "out"]
    (tmp_path / "file").write_text("x")
    with pytest.raises(FileExistsError, match="not a directory"):
        prepack.export(shard_set, "nemo-npy", tmp_path / "file")


def test_export_names_a_missing_package_in_one_line(prepack_bin, shard_set,
                                                    tmp_path):
    """pyarrow missing: one line naming it and the extra to install, no
    traceback, exit 1 from the command."""
    import os
    blocker = tmp_path / "blocker" / "pyarrow"
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'pyarrow'\", "
        "name='pyarrow')\n")
    env = _cli_env()
    env["PYTHONPATH"] = str(blocker.parent) + os.pathsep + env["PYTHONPATH"]
    p = _export_cli(prepack_bin, shard_set, tmp_path / "out", env,
                    to="hf-parquet")
    assert p.returncode == 1
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1, p.stderr
    assert "'pyarrow'" in lines[0]
    assert lines[0].endswith("pip install 'prepack-tokens[arrow]'")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("spelling", ["packed/", "./packed/..//packed",
                                      "packed//"])
def test_export_output_spellings(prepack_bin, shard_set, tmp_path, spelling):
    """OUT with a trailing slash or dot-dot: the staging directory is
    beside OUT, never inside it."""
    import os
    p = _export_cli(prepack_bin, shard_set, spelling, _cli_env(), cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(tmp_path)) == ["packed"]
    assert sorted(os.listdir(tmp_path / "packed")) == [
        ".prepack-export", "2048_metadata.jsonl", "training_2048.npy"]
    os.chdir(tmp_path)
    try:
        n = prepack.export(shard_set, "nemo-npy", "again/")
        prepack.export(shard_set, "nemo-npy", "new/parents/out")
    finally:
        os.chdir("/")
    assert n > 0 and (tmp_path / "again" / "training_2048.npy").is_file()
    assert sorted(os.listdir(tmp_path / "new" / "parents")) == ["out"]
