"""Groups that stay together: a JSONL "group" field keeps consecutive
records with one value in one row, in order, each its own sequence;
overlong groups follow error or drop whole; split and truncate are
refused; bad group values name the line."""
import json
import subprocess

import numpy as np
import pytest

import prepack


def run(bin_, *args):
    return subprocess.run([bin_, *map(str, args)], capture_output=True, text=True)


def write(path, records):
    path.write_text("\n".join(json.dumps(r) for r in records) + "\n")


def grouped_records(seed=0, n=400):
    rng = np.random.default_rng(seed)
    records, groups, g = [], [], 0
    while len(records) < n:
        size = int(rng.integers(1, 5))
        label = int(rng.integers(0, 3))  # ints, strings, or no group
        for _ in range(size):
            rec = {"input_ids": rng.integers(0, 5000, int(rng.integers(1, 60))).tolist()}
            if label == 0:
                rec["group"] = g
            elif label == 1:
                rec["group"] = f"conv-{g}"
            records.append(rec)
            groups.append(g if label < 2 else None)
            if label == 2:
                g += 1
                groups[-1] = ("alone", len(records))
        g += 1
    return records, groups


@pytest.mark.parametrize("algo", ["ffd", "bfd", "nextfit"])
def test_groups_share_a_row_in_order(prepack_bin, tmp_path, algo):
    records, groups = grouped_records()
    src = tmp_path / "g.jsonl"
    write(src, records)
    out = tmp_path / "out"
    p = run(prepack_bin, "pack", src, "-o", out, "--max-seq-len", "256", "--algo",
            algo, "--quiet")
    assert p.returncode == 0, p.stderr
    assert run(prepack_bin, "verify", out, "--input", src).returncode == 0
    shards = prepack.ShardSet(out, backend="python")
    where = {}
    for r in range(len(shards)):
        for k, s in enumerate(shards[r]["seq_ids"].tolist()):
            assert s not in where
            where[s] = (r, k)
    assert sorted(where) == list(range(len(records)))
    for s in range(1, len(records)):
        if groups[s] is not None and groups[s] == groups[s - 1]:
            assert where[s][0] == where[s - 1][0], s   # same row
            assert where[s][1] == where[s - 1][1] + 1  # right after


def test_overlong_groups(prepack_bin, tmp_path):
    src = tmp_path / "g.jsonl"
    write(src, [{"input_ids": [1] * 6, "group": "a"}, {"input_ids": [2] * 6, "group": "a"},
                {"input_ids": [3] * 4}])
    p = run(prepack_bin, "pack", src, "-o", tmp_path / "o1", "--max-seq-len", "10")
    assert p.returncode == 1
    assert "the group of sequences 0..1 has 12 tokens, more than max_seq_len 10" in p.stderr
    p = run(prepack_bin, "pack", src, "-o", tmp_path / "o2", "--max-seq-len", "10",
            "--overlong", "split")
    assert p.returncode == 1 and "never split or truncated" in p.stderr
    p = run(prepack_bin, "stats", src, "--max-seq-len", "10", "--overlong", "drop",
            "--json")
    assert p.returncode == 0, p.stderr
    report = json.loads(p.stdout)
    assert report["overlong"]["dropped_sequences"] == 2
    assert report["overlong"]["dropped_tokens"] == 12
    assert report["rows"] == 1 and report["tokens"] == 4


def test_bad_group_values_name_the_line(prepack_bin, tmp_path):
    src = tmp_path / "g.jsonl"
    src.write_text('{"input_ids": [1], "group": 1}\n{"input_ids": [2], "group": [1]}\n')
    p = run(prepack_bin, "stats", src, "--max-seq-len", "8")
    assert p.returncode == 1 and ":2:" in p.stderr and "an integer or a string" in p.stderr
    src.write_text('{"input_ids": [1], "group": 1, "group": 1}\n')
    p = run(prepack_bin, "stats", src, "--max-seq-len", "8")
    assert p.returncode == 1 and "appears twice" in p.stderr


def test_groups_never_span_inputs(prepack_bin, tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    write(a, [{"input_ids": [1] * 5, "group": 1}])
    write(b, [{"input_ids": [2] * 5, "group": 1}])
    out = tmp_path / "o"
    assert run(prepack_bin, "pack", a, b, "-o", out, "--max-seq-len", "5",
               "--quiet").returncode == 0
    assert len(prepack.ShardSet(out, backend="python")) == 2


@pytest.mark.parametrize("tasks", [(2, 2), (5, 3), (13, 4)])
def test_steps_equal_pack_with_groups_cut_between_tasks(prepack_bin, tmp_path, tasks):
    """Pack in steps with groups: a scan task's cut falls inside groups
    (long ones here), and the plan joins them again: pack's bytes."""
    rng = np.random.default_rng(7)
    records = []
    for g in range(60):
        for _ in range(int(rng.integers(1, 12))):
            records.append({"input_ids": rng.integers(0, 999, int(rng.integers(1, 20))).tolist(),
                            "group": g if g % 3 else f"s{g}"})
        if g % 5 == 0:
            records.append({"input_ids": [1, 2, 3]})
    src = tmp_path / "g.jsonl"
    write(src, records)
    opts = ["--max-seq-len", "400", "--shard-rows", "3"]
    ref = tmp_path / "ref"
    assert run(prepack_bin, "pack", src, "-o", ref, *opts, "--quiet").returncode == 0
    out = tmp_path / "out"
    n, m = tasks
    for t in range(n):
        p = run(prepack_bin, "scan", src, "-o", out, *opts, "--task-index", t,
                "--task-count", n)
        assert p.returncode == 0, p.stderr
    assert run(prepack_bin, "plan", src, "-o", out, *opts, "--scan-tasks", n).returncode == 0
    for t in range(m):
        assert run(prepack_bin, "write", src, "-o", out, *opts, "--task-index", t,
                   "--task-count", m).returncode == 0
    assert run(prepack_bin, "finalize", src, "-o", out, *opts,
               "--write-tasks", m).returncode == 0
    import os
    assert sorted(os.listdir(ref)) == sorted(os.listdir(out))
    for name in os.listdir(ref):
        assert (ref / name).read_bytes() == (out / name).read_bytes(), name


def test_steps_overlong_group_fails_at_plan(prepack_bin, tmp_path):
    src = tmp_path / "g.jsonl"
    write(src, [{"input_ids": [1] * 30, "group": 1} for _ in range(4)])
    out = tmp_path / "o"
    for t in range(2):
        assert run(prepack_bin, "scan", src, "-o", out, "--max-seq-len", "64",
                   "--task-index", t, "--task-count", 2).returncode == 0
    p = run(prepack_bin, "plan", src, "-o", out, "--max-seq-len", "64", "--scan-tasks", 2)
    assert p.returncode == 1 and "the group of sequences 0..3 has 120 tokens" in p.stderr


def test_arrow_group_column_matches_jsonl(prepack_bin, tmp_path):
    """A `group` column in an Arrow table packs as JSONL's field does:
    the same shard set bytes."""
    import os
    pa = pytest.importorskip("pyarrow")
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs libprepack (PREPACK_LIBRARY)")
    records, _ = grouped_records(seed=3, n=300)
    src = tmp_path / "g.jsonl"
    write(src, records)
    ref = tmp_path / "ref"
    assert run(prepack_bin, "pack", src, "-o", ref, "--max-seq-len", "200",
               "--quiet").returncode == 0
    table = pa.table({"input_ids": [r["input_ids"] for r in records],
                      "group": [str(r.get("group")) if "group" in r else None
                                for r in records]})
    out = tmp_path / "arrow"
    prepack.pack_dataset(table, out, 200, read_rows=37)
    a = prepack.ShardSet(ref, backend="python")
    b = prepack.ShardSet(out, backend="python")
    assert len(a) == len(b)
    for i in range(len(a)):
        assert a[i]["seq_ids"].tolist() == b[i]["seq_ids"].tolist()
        assert a[i]["input_ids"].tolist() == b[i]["input_ids"].tolist()


def test_dataset_plans_groups_as_pack_and_names_the_input(tmp_path):
    """pack_dataset plans through prepack_plan_store, as `prepack pack`:
    with the group column's groups, an overlong group or sequence named
    with its input."""
    import os
    pa = pytest.importorskip("pyarrow")
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("needs libprepack (PREPACK_LIBRARY)")
    grouped = pa.table({"input_ids": [[1] * 6, [2] * 6, [3] * 3],
                        "group": ["a", "a", None]})
    with pytest.raises(ValueError, match=r"^table: the group of sequences "
                       r"0\.\.1 has 12 tokens, more than max_seq_len 10 "
                       r"\(sequence ids over all inputs; this input starts "
                       r"at 0; groups are placed whole"):
        prepack.pack_dataset(grouped, tmp_path / "g", 10)
    plain = pa.table({"input_ids": [[1] * 6, [2] * 16, [3] * 3]})
    with pytest.raises(ValueError, match=r"^table: sequence 1 has 16 tokens, "
                       r"more than max_seq_len 10$"):
        prepack.pack_dataset(plain, tmp_path / "p", 10)
    prepack.pack_dataset(grouped, tmp_path / "ok", 12)  # the group fits
    rows = prepack.ShardSet(tmp_path / "ok", backend="python")
    assert [rows[i]["seq_ids"].tolist() for i in range(len(rows))] == [[0, 1],
                                                                        [2]]
