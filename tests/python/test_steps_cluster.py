"""prepack.steps.pack on a local Ray (ray.init(num_cpus=2)): the
steps as Ray tasks give pack's bytes, and a scan task whose worker is
killed is retried by Ray."""
import os

import numpy as np
import pytest

import doc_blocks
import step_inputs as si
from conftest import CORPUS, ROOT
from test_steps import files, pack as cli_pack

ray = pytest.importorskip("ray")
if os.environ.get("PREPACK_SANITIZED"):
    pytest.skip("Ray runs once, in the plain build", allow_module_level=True)

import prepack.steps as steps  # noqa: E402


@pytest.fixture(scope="module")
def local_ray(tmp_path_factory, prepack_bin):
    marker = tmp_path_factory.mktemp("kill") / "killed-once"
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {
                 "PYTHONPATH": os.path.join(ROOT, "python"),
                 "PREPACK_BIN": prepack_bin,
                 "PREPACK_STEPS_KILL": f"scan:1:{marker}"}})
    yield marker
    ray.shutdown()


def test_ray_pack_is_byte_identical_with_a_killed_scan_task(local_ray, prepack_bin,
                                                             tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    si.write_jsonl(d / "a.jsonl", si.sequences(1, 400), seed=1)
    si.write_megatron(str(d / "m"), si.sequences(2, 300), np.int32)
    si.write_llmc(d / "c.bin", si.sequences(3, 200))
    inputs = [CORPUS, str(d / "a.jsonl"), str(d / "m.bin"), str(d / "c.bin")]
    opts = dict(overlong="split", shard_rows=100, rows_per_frame=16)
    result = steps.pack(inputs, tmp_path / "out", 1024, tasks=3, write_tasks=2,
                       max_retries=2, **opts)
    assert local_ray.exists(), "the scan task was not killed"
    ref = tmp_path / "ref"
    cli_pack(prepack_bin, inputs, ref, ["--max-seq-len", "1024", "--overlong", "split",
                                         "--shard-rows", "100", "--rows-per-frame", "16"])
    assert files(ref) == files(tmp_path / "out")
    assert result["rows"] > 0 and result["shards"] == len(os.listdir(ref)) - 1
    assert len(result["steps"]["scan"]) == 3 and len(result["steps"]["write"]) == 2


def test_bad_input_is_an_error_not_a_retry(local_ray, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_ids": [1, 2]}\n{"input_ids": [3, "x"]}\n')
    with pytest.raises(steps.StepError, match=r"bad.jsonl:2: input_ids\[1\]"):
        steps.pack([bad], tmp_path / "out", 64, tasks=2)


def test_unknown_option_is_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="max_len"):
        steps.pack([CORPUS], tmp_path / "out", 64, tasks=1, max_len=3)


def test_ray_text_pack_is_pack_datasets(local_ray, tmp_path):
    """Text: the scan tasks tokenize their part in the Ray workers; the set
    is pack_dataset's in one process, byte for byte."""
    pytest.importorskip("transformers")
    from prepack.dataset import pack_dataset
    tok = os.path.join(ROOT, "fixtures", "text", "tokenizer")
    conv = os.path.join(ROOT, "fixtures", "text", "conversations.jsonl")
    text = dict(tokenizer=tok, assistant_only_loss=True)
    result = steps.pack([conv], tmp_path / "out", 2048, tasks=2, write_tasks=1,
                        **text)
    pack_dataset([conv], tmp_path / "ref", 2048, **text)
    assert files(tmp_path / "ref") == files(tmp_path / "out")
    assert sum(s["sequences"] for s in result["steps"]["scan"]) == 200


def test_the_docs_ray_example_runs_as_written(local_ray, tmp_path,
                                              monkeypatch):
    """docs/SCALE.md's Ray example, exactly as printed, from a directory
    holding the bundled corpus where the clone's root has it (on the Ray
    this module started: pack uses an initialized Ray)."""
    (example,) = doc_blocks.runnable("docs/SCALE.md", "python")
    assert "ray.init" not in example.code  # pack starts Ray itself
    (tmp_path / "fixtures" / "corpus").mkdir(parents=True)
    os.link(CORPUS, tmp_path / "fixtures" / "corpus" / os.path.basename(CORPUS))
    monkeypatch.chdir(tmp_path)
    scope = {}
    exec(compile(example.code, str(example), "exec"), scope)
    assert scope["result"]["rows"] > 1000
    assert (tmp_path / "shards-ray" / "manifest.json").exists()


class _Ray:
    """The part of Ray pack calls first, recording ray.init's address."""

    def __init__(self):
        self.inits = []

    def is_initialized(self):
        return bool(self.inits)

    def init(self, address=None):
        self.inits.append(address)
        raise _Started


class _Started(Exception):
    pass


@pytest.mark.parametrize("address", [None, "auto", "10.0.0.1:6379"])
def test_pack_starts_ray_when_none_is_running(address, tmp_path, monkeypatch,
                                              prepack_bin):
    """With no Ray initialized pack calls ray.init(address=address): None
    starts a local one (or joins RAY_ADDRESS), as Ray's examples do; the
    docs' old ray.init(address="auto") raised ConnectionError without a
    cluster."""
    fake = _Ray()
    monkeypatch.setitem(__import__("sys").modules, "ray", fake)
    kw = {} if address is None else {"address": address}
    with pytest.raises(_Started):
        steps.pack([CORPUS], tmp_path / "out", 64, tasks=1,
                   prepack_bin=prepack_bin, **kw)
    assert fake.inits == [address]
