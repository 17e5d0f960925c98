"""Progress on stderr for pack_dataset, stats_dataset and python -m prepack
(prepack's _progress.py), as the command shows it: only on a terminal
(or when asked), at most five lines a second, then one summary line with
the documents, tokens and MB of text read; nothing on stdout, --json
unchanged, nothing at all when stderr is not a terminal."""
import io
import json
import os
import pty
import subprocess
import sys

import pytest

from conftest import ROOT

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

import prepack  # noqa: E402
from prepack import _progress  # noqa: E402
from prepack._progress import CLEAR, Progress, text_bytes  # noqa: E402

TEXT = os.path.join(ROOT, "fixtures", "text")
CONVERSATIONS = os.path.join(TEXT, "conversations.jsonl")
TOKENIZER = os.path.join(TEXT, "tokenizer")
ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))


class Terminal(io.StringIO):
    """stderr as a terminal."""

    def isatty(self):
        return True


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


def lib_or_skip():
    if not os.environ.get("PREPACK_LIBRARY") and \
            not prepack._native._bundled():
        pytest.skip("no libprepack (sanitizer builds cannot load it)")


def lines(text):
    """The lines drawn in place: what follows each CLEAR."""
    return [p for p in text.split(CLEAR) if p]


def conversations(path, n):
    """The first n bundled conversations written to path, and the UTF-8
    bytes of their messages' strings, counted here alone."""
    with open(CONVERSATIONS, encoding="utf-8") as f:
        lines = f.readlines()[:n]
    path.write_text("".join(lines), encoding="utf-8")
    return sum(len(m["role"].encode()) + len(m["content"].encode())
               for line in lines for m in json.loads(line)["messages"])


def test_lines_at_most_five_a_second_with_their_rates():
    clock, out = Clock(), Terminal()
    p = Progress(None, out, clock)
    p.stage_begins("read")
    for _ in range(16):  # a batch every 1/16 s: a line every 4th
        clock.t += 1 / 16
        p.text_read(pa.record_batch({"text": ["h\u00e9llo", "ab"]}),
                    ("text",))
        p.read(2, 30)
    drawn = lines(out.getvalue())
    assert len(drawn) == 4
    # 1 s: 32 documents, 16 x 8 bytes of text, 480 tokens
    assert drawn[-1] == ("read    32 documents (32/s)  128B (128B/s)  "
                         "480 tokens (480/s)")
    clock.t += 0.5
    for r in range(1, 3001):
        if r % 1000 == 0:
            clock.t += 1
        p.write(r, 3000)
    assert lines(out.getvalue())[4:] == [
        "write     0.0%  1 rows / 3.0 k rows  0 rows/s",
        "write    33.3%  1.0 k rows / 3.0 k rows  1.0 k rows/s  ETA 2 s",
        "write    66.7%  2.0 k rows / 3.0 k rows  1.0 k rows/s  ETA 1 s",
        "write   100.0%  3.0 k rows / 3.0 k rows  1.0 k rows/s"]
    p.done("prepack pack: 7 rows written to out")
    assert out.getvalue().endswith(
        CLEAR + "prepack pack: 7 rows written to out (4.50 s); read 32 "
        "documents, 480 tokens, 0.00 MB of text in 1.00 s: 32 documents/s, "
        "480 tokens/s, 0.00 MB/s\n")


@pytest.mark.parametrize("show,stream,shown", [
    (None, io.StringIO(), False), (None, Terminal(), True),
    (False, Terminal(), False), (True, io.StringIO(), True)])
def test_shown_on_a_terminal_or_when_asked(show, stream, shown):
    clock = Clock()
    p = Progress(show, stream, clock)
    clock.t += 1
    p.read(3, 10)
    p.done("done")
    assert bool(stream.getvalue()) == shown
    with pytest.raises(ValueError, match="progress: None"):
        Progress(1)


def test_an_error_clears_the_line():
    clock, out = Clock(), Terminal()
    with pytest.raises(KeyError):
        with Progress(None, out, clock) as p:
            clock.t += 1
            p.read(1, 1)
            assert not out.getvalue().endswith(CLEAR)
            raise KeyError
    assert out.getvalue().endswith(CLEAR)


def test_text_bytes_of_arrow_and_of_rows():
    """UTF-8 bytes (not characters) of the fields named, at any depth:
    Arrow's string lengths and Python's strings agree."""
    rows = [{"messages": [{"role": "user", "content": "ça va?"},
                          {"role": "assistant", "content": "oui ✓"}],
             "text": None, "other": "not counted"},
            {"messages": None, "text": "naïve"}]
    want = sum(len(s.encode()) for s in ("user", "ça va?", "assistant",
                                         "oui ✓", "naïve"))
    fields = ("text", "messages")
    batch = pa.RecordBatch.from_pylist(rows)
    assert text_bytes(batch, fields) == want
    assert text_bytes(batch.slice(1), fields) == len("naïve".encode())

    class Rows:  # as dataset.py's JSON lines batches
        schema = type("schema", (), {"names": ["messages", "text",
                                               "other"]})

        def to_pylist(self):
            return rows
    assert text_bytes(Rows(), fields) == want


def test_pack_dataset_on_a_terminal(monkeypatch, tmp_path):
    """Text in: documents, tokens and the MB of text read in the summary,
    the read and write lines before it (every update shown: EVERY 0)."""
    lib_or_skip()
    monkeypatch.setattr(_progress, "EVERY", 0)
    size = conversations(tmp_path / "chat.jsonl", 60)
    out = Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    stats = prepack.pack_dataset(tmp_path / "chat.jsonl", tmp_path / "set",
                                 512, tokenizer=TOKENIZER, read_rows=20)
    drawn = lines(out.getvalue())
    reads = [d for d in drawn if d.startswith("read ")]
    assert [d.split(" (")[0] for d in reads] == [
        f"read    {n} documents" for n in (20, 40, 60)]
    assert any(d.startswith("write   100.0%") for d in drawn)
    summary = drawn[-1]
    megabytes = size / 1e6
    assert summary.startswith(
        f"prepack pack: {stats['rows']:,} rows written to {tmp_path / 'set'} (")
    assert f"; read 60 documents, {stats['input_tokens']:,} tokens, " \
        f"{megabytes:.2f} MB of text in " in summary
    assert summary.endswith(" MB/s\n")


def test_token_inputs_and_stats(monkeypatch, tmp_path):
    """Token inputs (Parquet): sequences and tokens, no MB of text;
    stats_dataset ends with the command's stats line."""
    lib_or_skip()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2, 3]] * 40}), path)
    out = Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    from prepack.dataset import stats_dataset
    stats_dataset(path, 8)
    assert lines(out.getvalue())[-1].startswith("prepack stats: 120 tokens "
                                                "planned (")
    assert "; read 40 sequences, 120 tokens in " in out.getvalue()
    assert "MB" not in out.getvalue()


def test_nothing_when_stderr_is_not_a_terminal(capsys, tmp_path):
    lib_or_skip()
    conversations(tmp_path / "chat.jsonl", 20)
    prepack.pack_dataset(tmp_path / "chat.jsonl", tmp_path / "set", 512,
                         tokenizer=TOKENIZER)
    prepack.pack_dataset(tmp_path / "chat.jsonl", tmp_path / "again", 512,
                         tokenizer=TOKENIZER, progress=False)
    assert capsys.readouterr() == ("", "")


def in_a_terminal(*args):
    """python -m prepack with stderr a pseudo-terminal: (exit status,
    stdout, what the terminal got)."""
    controller, terminal = pty.openpty()
    p = subprocess.Popen([sys.executable, "-m", "prepack", *map(str, args)],
                         stdout=subprocess.PIPE, stderr=terminal, env=ENV)
    os.close(terminal)
    got = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal's last writer is gone
            break
        if not chunk:
            break
        got += chunk
    os.close(controller)
    stdout = p.stdout.read()
    p.stdout.close()
    return p.wait(timeout=120), stdout.decode(), got.decode()


def test_the_command_in_a_terminal_keeps_json_on_stdout(tmp_path):
    """python -m prepack with stderr a terminal: the summary there, the
    same --json on stdout as without a terminal; --quiet: nothing. (Token
    inputs: the text runs' lines are the same code, tested above.)"""
    lib_or_skip()
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"input_ids": [[1, 2, 3]] * 40}), path)
    args = ["pack", path, "--max-seq-len", "8", "--json", "--overwrite",
            "-o", tmp_path / "set"]
    rc, stdout, terminal = in_a_terminal(*args)
    assert rc == 0, terminal
    assert terminal.startswith(CLEAR) and terminal.endswith("\r\n")
    assert f"prepack pack: 20 rows written to {tmp_path / 'set'} (" in \
        terminal and "; read 40 sequences, 120 tokens in " in terminal
    plain = subprocess.run([sys.executable, "-m", "prepack", *map(str, args)],
                           capture_output=True, text=True, env=ENV)
    assert plain.returncode == 0 and plain.stderr == ""
    assert json.loads(stdout) == json.loads(plain.stdout)
    rc, stdout, terminal = in_a_terminal(*args, "--quiet")
    assert rc == 0 and terminal == ""
    assert json.loads(stdout) == json.loads(plain.stdout)


def test_a_bad_record_clears_the_line(monkeypatch, tmp_path):
    lib_or_skip()
    conversations(tmp_path / "chat.jsonl", 40)
    with open(tmp_path / "chat.jsonl", "a") as f:
        f.write('{"messages": [{"role": "bot", "content": "hi"}]}\n')
    monkeypatch.setattr(_progress, "EVERY", 0)
    out = Terminal()
    monkeypatch.setattr(sys, "stderr", out)
    with pytest.raises(ValueError, match=r"chat.jsonl:41: messages\[0\]"):
        prepack.pack_dataset(tmp_path / "chat.jsonl", tmp_path / "set", 512,
                             tokenizer=TOKENIZER, read_rows=20)
    assert lines(out.getvalue())[-1].startswith("read    40 documents")
    assert out.getvalue().endswith(CLEAR)
