"""A text job in steps (prepack.steps.scan_text, python -m prepack
scan|plan|write|finalize --tokenizer): scan tasks tokenize their own part
of the JSON lines, and the set is byte for byte what pack_dataset writes
in one process, manifest included, for any number of scan and write
tasks; a bad record is named by file and line, a task out of range or a
scan made with other text options is refused."""
import json
import os
import random
import subprocess
import sys

import pytest

from conftest import ROOT
from test_steps import files

pytest.importorskip("transformers")
pytest.importorskip("pyarrow")
if os.environ.get("PREPACK_SANITIZED"):
    pytest.skip("no libprepack in Python in the sanitizer build",
                allow_module_level=True)

import prepack.steps as steps  # noqa: E402
from prepack.dataset import pack_dataset  # noqa: E402

TOKENIZER = os.path.join(ROOT, "fixtures", "text", "tokenizer")
CONVERSATIONS = os.path.join(ROOT, "fixtures", "text", "conversations.jsonl")
L = 2048
TEXT = dict(tokenizer=TOKENIZER, assistant_only_loss=True)


def _records():
    with open(CONVERSATIONS) as f:
        return [json.loads(line) for line in f]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """Conversations in three files of different sizes (two with groups,
    runs of 1 to 4 records, so groups cross the tasks' cuts), and plain
    text (a blank line in it, as the readers skip)."""
    d = tmp_path_factory.mktemp("text-inputs")
    recs, rnd = _records(), random.Random(28)
    paths = []
    for i, (a, b) in enumerate([(0, 110), (110, 125), (125, 200)]):
        path = d / f"conv-{i}.jsonl"
        group, left = 0, 0
        with open(path, "w") as f:
            for r in recs[a:b]:
                r = dict(r)
                if i != 1:
                    if left == 0:
                        group, left = group + 1, rnd.randint(1, 4)
                    left -= 1
                    r["group"] = f"g{group}"
                f.write(json.dumps(r) + "\n")
        paths.append(str(path))
    plain = d / "plain.jsonl"
    with open(plain, "w") as f:
        for k, r in enumerate(recs[:60]):
            f.write(json.dumps({"text": r["messages"][1]["content"]}) + "\n")
            if k == 30:
                f.write("\n")
    paths.append(str(plain))
    return paths


def run_steps(bin_, inputs, out, n, m, text=TEXT, scan=None):
    """The steps in this process (scan_text) and the command."""
    for t in range(n):
        (scan or steps.scan_text)(inputs, out, t, n, **text)
    key = steps.text_key(**text)
    common = [*inputs, "-o", str(out), "--max-seq-len", str(L),
              "--text-key", key]
    for step, extra in (("plan", ["--scan-tasks", n]),) + tuple(
            ("write", ["--task-index", t, "--task-count", m])
            for t in range(m)) + (("finalize", ["--write-tasks", m]),):
        p = subprocess.run([bin_, step, *common, *map(str, extra)],
                           capture_output=True, text=True)
        assert p.returncode == 0, p.stderr


@pytest.fixture(scope="module")
def reference(inputs, tmp_path_factory):
    out = tmp_path_factory.mktemp("text-ref") / "set"
    pack_dataset(inputs, out, L, **TEXT)
    return files(out)


@pytest.mark.parametrize("n,m", [(1, 1), (2, 2), (3, 1), (5, 2)])
def test_steps_give_pack_datasets_bytes(prepack_bin, inputs, reference,
                                        tmp_path, n, m):
    out = tmp_path / "set"
    run_steps(prepack_bin, inputs, out, n, m)
    got = files(out)
    assert got.keys() == reference.keys()
    assert "manifest.json" in got
    for name in reference:
        assert got[name] == reference[name], name


def test_python_m_prepack_runs_every_step(prepack_bin, inputs, reference,
                                          tmp_path):
    """The steps as a Slurm array runs them: python -m prepack STEP with
    the text options; the scan task's index from SLURM_ARRAY_TASK_ID."""
    out = tmp_path / "set"
    common = [*inputs, "-o", str(out), "--max-seq-len", str(L),
              "--tokenizer", TOKENIZER, "--assistant-only-loss", "--quiet"]
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"),
               PREPACK_BIN=prepack_bin)

    def py(*args, **kw):
        p = subprocess.run([sys.executable, "-m", "prepack", *map(str, args)],
                           capture_output=True, text=True,
                           env=dict(env, **kw))
        assert p.returncode == 0, p.stderr
        return p

    for t in range(3):
        py("scan", *common, "--task-count", 3, SLURM_ARRAY_TASK_ID=str(t))
    again = py("scan", *common, "--task-count", 3, "--task-index", 1, "--json")
    assert json.loads(again.stdout)["already_done"]  # a rerun does nothing
    py("plan", *common, "--scan-tasks", 3)
    py("write", *common, "--task-index", 0, "--task-count", 1)
    py("finalize", *common, "--write-tasks", 1)
    assert files(out) == reference


def test_the_command_says_to_run_python(prepack_bin, inputs, tmp_path):
    p = subprocess.run([prepack_bin, "scan", inputs[0], "-o", tmp_path / "s",
                        "--max-seq-len", str(L), "--tokenizer", TOKENIZER,
                        "--task-index", "0", "--task-count", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 2
    assert "python3 -m prepack scan" in p.stderr


def test_task_index_out_of_range(inputs, tmp_path):
    with pytest.raises(steps.StepError, match="task index 3 is not below "
                                              "the task count 3"):
        steps.scan_text(inputs, tmp_path / "s", 3, 3, **TEXT)


def test_bad_record_in_task_2s_part_is_named(tmp_path):
    """A record the tokenizer cannot take, in the third task's part, named
    by its file and line (counted from the file's start) and nothing of
    the task left behind."""
    recs = _records()[:60]
    path = tmp_path / "bad.jsonl"
    lines = [json.dumps(r) for r in recs]
    lines[55] = json.dumps({"messages": [{"role": "user", "content": 7}]})
    path.write_text("\n".join(lines) + "\n")
    out = tmp_path / "s"
    for t in range(2):
        steps.scan_text([str(path)], out, t, 3, **TEXT)
    with pytest.raises(steps.StepError, match=rf"{path}:56\b"):
        steps.scan_text([str(path)], out, 2, 3, **TEXT)
    left = sorted(os.listdir(out / ".prepack-job"))
    assert not [n for n in left if n.startswith("scan-00002.")
                and not n.endswith(".lock")], left


def test_a_scan_with_other_text_options_is_refused(prepack_bin, inputs,
                                                   tmp_path):
    """Task 1 scanned without assistant_only_loss: the plan (given the
    job's key) refuses it, naming the task, rather than mix its masks
    in."""
    out = tmp_path / "s"
    steps.scan_text(inputs, out, 0, 2, **TEXT)
    steps.scan_text(inputs, out, 1, 2, tokenizer=TOKENIZER)
    p = subprocess.run([prepack_bin, "plan", *inputs, "-o", out,
                        "--max-seq-len", str(L), "--scan-tasks", "2",
                        "--text-key", steps.text_key(**TEXT)],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "scan task 1" in p.stderr, p.stderr


def test_the_key_covers_the_tokenizer_and_options(tmp_path):
    """Another tokenizer file's bytes, template or loss option is another
    key; the workers, which do not change the tokens, are not asked."""
    base = steps.text_key(**TEXT)
    copy = tmp_path / "tok"
    copy.mkdir()
    for name in os.listdir(TOKENIZER):
        (copy / name).write_bytes(open(os.path.join(TOKENIZER, name),
                                       "rb").read())
    assert steps.text_key(tokenizer=str(copy), assistant_only_loss=True) \
        == base
    (copy / "tokenizer.json").write_bytes(
        (copy / "tokenizer.json").read_bytes() + b" ")
    assert steps.text_key(tokenizer=str(copy), assistant_only_loss=True) \
        != base
    template = tmp_path / "t.jinja"
    template.write_text("{{ messages }}")
    for other in (dict(TEXT, chat_template=str(template)),
                  dict(TEXT, assistant_only_loss=False),
                  dict(TEXT, add_eos=False), dict(TEXT, text_field="body")):
        assert steps.text_key(**other) != base
    assert steps.text_key(group="thread", **TEXT) != base


def test_the_command_refuses_a_text_job_scan(prepack_bin, inputs, tmp_path):
    """prepack scan with --text-key would read the text as token ids."""
    p = subprocess.run([prepack_bin, "scan", inputs[0], "-o", tmp_path / "s",
                        "--max-seq-len", str(L), "--text-key", "k",
                        "--task-index", "0", "--task-count", "1"],
                       capture_output=True, text=True)
    assert p.returncode == 1
    assert "scanned by the Python package" in p.stderr


def test_what_the_text_steps_do_not_take(inputs, tmp_path):
    """Parquet (read whole by pack_dataset, not cut) and untrained="drop"
    (a record dropped at a cut would decide a join) are refused, naming
    what to do instead."""
    table = tmp_path / "t.parquet"
    table.write_bytes(b"PAR1")
    with pytest.raises(steps.StepError, match="t.parquet: the steps take "
                                              "text as JSON lines"):
        steps.scan_text([str(table)], tmp_path / "s", 0, 1, **TEXT)
    with pytest.raises(ValueError, match="untrained='drop' is not taken"):
        steps.scan_text(inputs, tmp_path / "s", 0, 1, untrained="drop",
                        **TEXT)
