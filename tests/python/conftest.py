"""Shared fixtures: the prepack command and a shard set of the bundled
corpus, packed once per test session."""
import json
import os
import subprocess
import sys

import pytest
import zstandard

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "python"))
CORPUS = os.path.join(ROOT, "fixtures", "corpus", "python-docs.jsonl.zst")


@pytest.fixture(scope="session")
def prepack_bin():
    path = os.environ.get("PREPACK_BIN", os.path.join(ROOT, "build", "prepack"))
    if not os.path.exists(path):
        pytest.fail(f"no prepack command at {path}: build first or set PREPACK_BIN")
    return path


@pytest.fixture(scope="session")
def corpus():
    """The bundled corpus's sequences, read independently of prepack."""
    with open(CORPUS, "rb") as f:
        text = zstandard.ZstdDecompressor().stream_reader(f).read()
    return [json.loads(line)["input_ids"] for line in text.splitlines() if line]


@pytest.fixture(scope="session")
def shard_set(prepack_bin, tmp_path_factory):
    """The corpus packed at 2048 with split, many frames and shards."""
    out = tmp_path_factory.mktemp("set") / "shards"
    subprocess.run([prepack_bin, "pack", CORPUS, "-o", str(out),
                    "--max-seq-len", "2048", "--overlong", "split",
                    "--rows-per-frame", "16", "--shard-rows", "500",
                    "--shuffle", "--seed", "5", "--quiet"],
                   check=True, stdout=subprocess.DEVNULL)
    return str(out)


@pytest.fixture
def library():
    """Skips a test that loads libprepack in Python where it cannot be
    loaded (the sanitizer build: an ASan library in a plain Python)."""
    if not os.environ.get("PREPACK_LIBRARY"):
        pytest.skip("PREPACK_LIBRARY not set (sanitizer builds cannot be loaded)")
