"""prepack.pack_dataset and python -m prepack: Hugging Face datasets,
Arrow tables, Parquet and Arrow IPC files into shard sets. The same
sequences give byte-identical shards whichever way they come in (JSONL
through the C command, Arrow through Python); bad data is refused naming
the file, row group and row; TRL's own expectations for its pack_dataset
reproduce through every packing entry point."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import prepack  # noqa: E402
from conftest import CORPUS, ROOT  # noqa: E402
from prepack.dataset import DatasetError  # noqa: E402


def lib_or_skip():
    if not os.environ.get("PREPACK_LIBRARY") and not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


def same_set(a, b):
    """Shards byte for byte; manifests equal but for the inputs' path and
    format (the same sequences, read from another kind of file)."""
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for name in os.listdir(a):
        if name != "manifest.json":
            with open(os.path.join(a, name), "rb") as x, \
                    open(os.path.join(b, name), "rb") as y:
                assert x.read() == y.read(), name
    ma, mb = (json.load(open(os.path.join(d, "manifest.json"))) for d in (a, b))
    for m in (ma, mb):
        for i in m["inputs"]:
            del i["path"], i["format"]
    assert ma == mb


@pytest.fixture(scope="module")
def corpus_sources(tmp_path_factory, corpus):
    """The bundled corpus as Parquet (row groups of 500), Arrow IPC, a
    pyarrow Table and a datasets.Dataset, with a loss mask column."""
    d = tmp_path_factory.mktemp("arrow")
    rng = np.random.default_rng(3)
    masks = [(rng.random(len(s)) < 0.8).astype(np.uint8).tolist() for s in corpus]
    with open(d / "corpus.jsonl", "w") as f:
        for s, m in zip(corpus, masks):
            f.write(json.dumps({"input_ids": s, "loss_mask": m}) + "\n")
    table = pa.table({"input_ids": pa.array(corpus, pa.list_(pa.int32())),
                      "loss_mask": pa.array(masks, pa.list_(pa.uint8())),
                      "title": [str(i) for i in range(len(corpus))]})
    pq.write_table(table, d / "corpus.parquet", row_group_size=500)
    with pa.OSFile(str(d / "corpus.arrow"), "wb") as sink:
        with pa.ipc.new_file(sink, table.schema) as w:
            for b in table.to_batches(700):
                w.write_batch(b)
    return d, table


OPTIONS = ["--max-seq-len", "2048", "--overlong", "split", "--algo", "bfd",
           "--rows-per-frame", "16", "--shard-rows", "300", "--shuffle",
           "--seed", "4"]
KWARGS = dict(max_seq_len=2048, overlong="split", algo="bfd",
              rows_per_frame=16, shard_rows=300, shuffle=True, seed=4)


def test_arrow_and_jsonl_give_the_same_set(corpus_sources, prepack_bin, tmp_path):
    lib_or_skip()
    d, table = corpus_sources
    cli = tmp_path / "cli"
    subprocess.run([prepack_bin, "pack", str(d / "corpus.jsonl"), "-o", str(cli),
                    "--quiet"] + OPTIONS, check=True, stdout=subprocess.DEVNULL)
    from datasets import Dataset
    sources = {"parquet": [str(d / "corpus.parquet")],
               "ipc": str(d / "corpus.arrow"), "table": table,
               "dataset": Dataset(table)}
    for name, source in sources.items():
        out = tmp_path / name
        stats = prepack.pack_dataset(source, out, **KWARGS)
        same_set(cli, out)
        assert stats["rows"] == len(prepack.ShardSet(out))
    # and through python -m prepack
    out = tmp_path / "module"
    run = subprocess.run([sys.executable, "-m", "prepack", "pack",
                          str(d / "corpus.parquet"), "-o", str(out)] + OPTIONS,
                         capture_output=True, text=True,
                         env=dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python")))
    assert run.returncode == 0, run.stderr
    same_set(cli, out)
    subprocess.run([prepack_bin, "verify", str(out), "--input",
                    str(d / "corpus.jsonl")], check=True, capture_output=True)


def test_labels_column_is_the_loss_mask(tmp_path):
    lib_or_skip()
    seqs = [[5, 6, 7], [8, 9]]
    by_mask = prepack.pack_dataset(pa.table({"input_ids": seqs,
                                             "loss_mask": [[0, 1, 1], [1, 0]]}),
                                   tmp_path / "mask", max_seq_len=8)
    by_labels = prepack.pack_dataset(pa.table({"input_ids": seqs,
                                               "labels": [[-100, 6, 7], [8, -100]]}),
                                     tmp_path / "labels", max_seq_len=8)
    assert by_mask == by_labels
    same_set(tmp_path / "mask", tmp_path / "labels")


BAD = [
    ({"input_ids": [[1, 2], [3, -4]]}, "row 1: input_ids[1] is -4: token ids must be non-negative"),
    ({"input_ids": [[1], [2**33]]}, "row 1: input_ids[0] is 8589934592: token ids must be at most 4294967295"),
    ({"input_ids": [[1], None]}, "row 1: input_ids is null"),
    ({"input_ids": [[1], [2, None]]}, "row 1: input_ids[1] is null"),
    ({"input_ids": ["a"]}, "column 'input_ids' is string, not a list of integers"),
    ({"input_ids": [[1.5]]}, "not a list of integers"),
    ({"text": ["a"]}, "no column 'input_ids'"),
    ({"input_ids": [[1, 2]], "loss_mask": [[1]]}, "row 0: loss_mask holds 1 values, the row 2 tokens"),
    ({"input_ids": [[1, 2]], "loss_mask": [[1, 2]]}, "row 0: loss_mask[1] is 2: must be 0 or 1"),
    ({"input_ids": [[1, 2]], "labels": [[1, 3]]}, "row 0: labels[1] is 3: labels hold the token itself or -100"),
]


@pytest.mark.parametrize("columns,message", BAD, ids=[str(i) for i in range(len(BAD))])
def test_bad_data_is_refused_naming_where(columns, message, tmp_path):
    lib_or_skip()
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table(columns), path)
    with pytest.raises(DatasetError, match=None) as e:
        prepack.pack_dataset([str(path)], tmp_path / "out", max_seq_len=8)
    assert message in str(e.value)
    assert str(path) in str(e.value)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_row_group_and_row_are_the_files(tmp_path):
    lib_or_skip()
    path = tmp_path / "groups.parquet"
    pq.write_table(pa.table({"input_ids": [[1], [2], [3], [4], [5, -1]]}), path,
                   row_group_size=2)
    with pytest.raises(DatasetError,
                       match="groups.parquet: row group 2, row 4: input_ids"):
        prepack.pack_dataset(str(path), tmp_path / "out", max_seq_len=8)


def test_module_exit_codes(tmp_path):
    lib_or_skip()
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    path = tmp_path / "bad.parquet"
    pq.write_table(pa.table({"input_ids": [[1], [-3]]}), path)

    def run(*args):
        return subprocess.run([sys.executable, "-m", "prepack", *args],
                              capture_output=True, text=True, env=env)
    r = run("pack", str(path), "-o", str(tmp_path / "o"), "--max-seq-len", "8")
    assert r.returncode == 1 and "row group 0, row 1: input_ids[0] is -3" in r.stderr
    r = run("pack", str(path), "--max-seq-len", "8")
    assert r.returncode == 2 and "-o/--output" in r.stderr
    r = run("stats", str(tmp_path / "none.parquet"), "--max-seq-len", "8")
    assert r.returncode == 1 and "cannot open" in r.stderr
    good = tmp_path / "good.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2, 3], [4]]}), good)
    r = run("stats", str(good), "--max-seq-len", "4", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["rows"] == 1


# ---- TRL's expectations (trl/tests/test_data_utils.py, TestPackDatasetBfd:
# strategy "bfd" truncates, "bfd_split" (earlier "bfd-requeue") splits) ------

TRL_CASES = [
    ([[1, 2, 3], [4, 5, 6, 7], [8]], 4, "truncate",
     [[4, 5, 6, 7], [1, 2, 3, 8]], [[4], [3, 1]]),
    ([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11], [12]], 4, "split",
     [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7, 5, 12]], [[4], [4], [2, 1, 1]]),
    ([[1, 2, 3, 4, 5], [6], [7, 8, 9, 10], [11, 12, 13]], 5, "split",
     [[1, 2, 3, 4, 5], [7, 8, 9, 10, 6], [11, 12, 13]], [[5], [4, 1], [3]]),
    ([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11], [12]], 4, "truncate",
     [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7, 12]], [[4], [4], [2, 1]]),
    ([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11]], 4, "truncate",  # its docstring
     [[1, 2, 3, 4], [8, 9, 10, 11], [6, 7]], [[4], [3, 1], [2]]),
    ([[1, 2, 3, 4, 5], [6, 7], [8, 9, 10], [11]], 4, "split",
     [[1, 2, 3, 4], [8, 9, 10, 5], [6, 7, 11]], [[4], [3, 1], [2, 1]]),
]


def rows_of(shard_dir):
    s = prepack.ShardSet(shard_dir)
    return ([s[i]["input_ids"].tolist() for i in range(len(s))],
            [np.diff(s[i]["cu_seqlens"]).tolist() for i in range(len(s))])


@pytest.mark.parametrize("seqs,L,overlong,ids,lengths", TRL_CASES,
                         ids=[str(i) for i in range(len(TRL_CASES))])
def test_trl_expectations_through_every_entry_point(seqs, L, overlong, ids,
                                                    lengths, prepack_bin,
                                                    tmp_path):
    lib_or_skip()
    rows = prepack.pack(seqs, max_seq_len=L, algo="bfd", overlong=overlong)
    assert [r["input_ids"].tolist() for r in rows] == ids
    assert [np.diff(r["cu_seqlens"]).tolist() for r in rows] == lengths
    prepack.pack_dataset(pa.table({"input_ids": seqs}), tmp_path / "py",
                         max_seq_len=L, algo="bfd", overlong=overlong)
    assert rows_of(tmp_path / "py") == (ids, lengths)
    src = tmp_path / "in.jsonl"
    src.write_text("".join(json.dumps({"input_ids": s}) + "\n" for s in seqs))
    subprocess.run([prepack_bin, "pack", str(src), "-o", str(tmp_path / "cli"),
                    "--max-seq-len", str(L), "--algo", "bfd", "--overlong",
                    overlong, "--quiet"], check=True, stdout=subprocess.DEVNULL)
    assert rows_of(tmp_path / "cli") == (ids, lengths)
    # and the installed TRL agrees with its own tests
    trl = pytest.importorskip("trl")
    from datasets import Dataset
    strategy = "bfd" if overlong == "truncate" else "bfd_split"
    got = trl.pack_dataset(Dataset.from_dict({"input_ids": seqs}), L,
                           strategy=strategy).to_dict()
    assert (got["input_ids"], got["seq_lengths"]) == (ids, lengths)


def test_datasets_in_their_own_row_order(tmp_path):
    """select, shuffle and filter keep an index over the Arrow table: the
    rows packed are the dataset's, in its order, as if given as a table;
    an IterableDataset too; a DatasetDict asks for one split."""
    lib_or_skip()
    from datasets import Dataset, DatasetDict
    seqs = [[i] * (1 + i % 7) for i in range(1, 60)]
    ds = Dataset.from_dict({"input_ids": seqs})
    views = {"select": ds.select([5, 3, 40, 0]), "shuffle": ds.shuffle(seed=2),
             "filter": ds.filter(lambda r: len(r["input_ids"]) > 3),
             "iterable": ds.to_iterable_dataset()}
    for name, view in views.items():
        rows = list(view)
        want = pa.table({"input_ids": [r["input_ids"] for r in rows]})
        prepack.pack_dataset(want, tmp_path / f"{name}-table", max_seq_len=16)
        prepack.pack_dataset(view, tmp_path / name, max_seq_len=16)
        same_set(tmp_path / f"{name}-table", tmp_path / name)
    with pytest.raises(DatasetError, match="pass one split"):
        prepack.pack_dataset(DatasetDict({"train": ds}), tmp_path / "d",
                             max_seq_len=16)


@pytest.mark.parametrize("option,value", [
    ("max_seq_len", 2**32 + 16), ("pad_multiple", 2**32 + 8),
    ("max_seqs_per_row", 2**32 + 1), ("pad_multiple", -8),
    ("batch_size", -1), ("max_seq_len", 16.5)])
def test_integer_options_out_of_their_field_are_refused(option, value,
                                                        tmp_path):
    """An integer option past its C field is a ValueError naming it: ctypes
    kept the low bits, so max_seq_len 2**32 + 16 planned rows of 16 tokens
    and pad_multiple 2**32 + 8 padded to 8, without a word."""
    table = pa.table({"input_ids": [[1] * 5, [2] * 7]})
    options = dict(max_seq_len=16)
    options[option] = value
    from prepack.dataset import stats_dataset
    with pytest.raises(ValueError, match=f"^{option} must be an integer"):
        stats_dataset(table, **options)
    with pytest.raises(ValueError, match=f"^{option} must be an integer"):
        prepack.pack_dataset(table, tmp_path / "set", **options)
    assert not (tmp_path / "set").exists()
