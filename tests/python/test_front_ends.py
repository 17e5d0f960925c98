"""The command line's two front ends held to one set of options: `prepack
pack|stats` (src/cli) and `python -m prepack pack|stats`
(python/prepack/__main__.py, for Parquet and Arrow datasets). Every option
of one is an option of the other, with the same documented default, but
for the options listed below, each with the reason it cannot apply; and
given no options, both pack the same sequences into the same set."""
import json
import os
import re
import subprocess
import sys

import pytest

from conftest import ROOT

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

ENV = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))

_READS_TOKEN_FILES = ("the command reads JSONL, Megatron, llm.c and raw "
                      "token files; python -m prepack reads Parquet and "
                      "Arrow datasets through pyarrow")

# option -> why it is the command's alone
COMMAND_ONLY = {
    "pack": {
        "--format": _READS_TOKEN_FILES + ", told apart by name",
        "--doc-sep": "the document delimiter of llm.c and raw files",
        "--sep-position": "the document delimiter of llm.c and raw files",
        "--allow-trailing-bytes": "Megatron .bin files only",
        "--plan-only": "rows that point into token files (Megatron, llm.c, "
                       "raw); a dataset's tokens exist only once parsed, "
                       "as the command refuses JSONL with it",
    },
    "stats": {
        "--lengths": "a lengths file needs no dataset reader: 'prepack "
                     "stats --lengths'",
        "--format": _READS_TOKEN_FILES + ", told apart by name",
        "--doc-sep": "the document delimiter of llm.c and raw files",
        "--sep-position": "the document delimiter of llm.c and raw files",
        "--allow-trailing-bytes": "Megatron .bin files only",
        "--threads": "stats reads inputs on N threads in C; python -m "
                     "prepack reads datasets in Python and writes nothing "
                     "to compress",
    },
}
# option -> why it is python -m prepack's alone
_TEXT = ("tokenizing runs in Python (prepack.text, Hugging Face "
         "tokenizers); 'prepack pack --tokenizer' prints the python -m "
         "prepack command to run")
MODULE_ONLY = {cmd: {o: _TEXT for o in (
    "--tokenizer", "--chat-template", "--assistant-only-loss",
    "--all-tokens-loss", "--no-eos", "--text-field", "--untrained",
    "--workers", "--save-tokens")}
    for cmd in ("pack", "stats")}


def options(help_text):
    """{--name: its help, whitespace collapsed} from a --help text: an
    entry starts '  -'; its help follows two spaces, and indented lines
    go on with it. Names listed alone on a line share the help that
    follows ('--format, --field, ...')."""
    out, names, grouping = {}, [], False
    for line in help_text.splitlines():
        entry = re.match(r"  (-\S.*?)(?:\s{2,}(\S.*))?$", line)
        if entry:
            found = re.findall(r"--[a-z][a-z0-9-]*", entry.group(1))
            names = names + found if grouping else found
            grouping = entry.group(2) is None
            for n in names:
                out[n] = entry.group(2) or ""
        elif names and re.match(r"\s{8,}\S", line):
            for n in names:
                out[n] = (out[n] + " " + line.strip()).strip()
            grouping = False
        else:
            names, grouping = [], False
    return out


def default(text):
    """What an option's help says its default is, or None."""
    found = re.search(r"default: ([^)]*)\)", text)
    return found.group(1) if found else None


def command_options(prepack_bin, cmd):
    def helped(c):
        p = subprocess.run([prepack_bin, c, "--help"], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 0, p.stderr
        return options(p.stdout)
    got = helped(cmd)
    stats = helped("stats") if cmd == "pack" else got
    # pack's input options are documented once, under stats
    return {k: stats[k] if "as for 'prepack stats'" in v else v
            for k, v in got.items()}


def module_options(cmd):
    p = subprocess.run([sys.executable, "-m", "prepack", cmd, "--help"],
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert p.returncode == 0, p.stderr
    return options(p.stdout)


@pytest.mark.parametrize("cmd", ["pack", "stats"])
def test_every_option_in_both_front_ends(prepack_bin, cmd):
    c, py = command_options(prepack_bin, cmd), module_options(cmd)
    assert "--max-seq-len" in c and "--max-seq-len" in py  # parsed at all
    only_c, only_py = COMMAND_ONLY[cmd], MODULE_ONLY[cmd]
    assert sorted(set(c) - set(py) - set(only_c)) == [], \
        "options of 'prepack %s' missing from python -m prepack" % cmd
    assert sorted(set(py) - set(c) - set(only_py)) == [], \
        "options of python -m prepack %s missing from 'prepack'" % cmd
    # the lists of exceptions stay true
    assert sorted(k for k in only_c if k not in c or k in py) == []
    assert sorted(k for k in only_py if k not in py or k in c) == []


@pytest.mark.parametrize("cmd", ["pack", "stats"])
def test_shared_options_document_one_default(prepack_bin, cmd):
    c, py = command_options(prepack_bin, cmd), module_options(cmd)
    differ = {k: (default(c[k]), default(py[k])) for k in set(c) & set(py)
              if default(c[k]) != default(py[k])}
    assert differ == {}, "(command's, module's) default"


def test_threads_default_to_the_cores():
    from prepack.__main__ import _parser
    a = _parser().parse_args(["pack", "in.parquet", "-o", "out",
                              "--max-seq-len", "8"])
    assert a.threads == max(1, min(256, len(os.sched_getaffinity(0))))


def test_no_options_pack_the_same_set(prepack_bin, tmp_path):
    """The defaults behave alike: the same sequences, as JSONL through the
    command and as Parquet through the module, give the same shards and
    the same manifest but for the inputs' names and formats."""
    seqs = [list(range(1, n + 1)) for n in (5, 17, 3, 30, 12, 9, 1, 26)]
    jsonl, parquet = tmp_path / "in.jsonl", tmp_path / "in.parquet"
    jsonl.write_text("".join(json.dumps({"input_ids": s}) + "\n"
                             for s in seqs))
    pq.write_table(pa.table({"input_ids": seqs}), parquet)
    a, b = tmp_path / "a", tmp_path / "b"
    subprocess.run([prepack_bin, "pack", str(jsonl), "-o", str(a),
                    "--max-seq-len", "32", "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, timeout=60)
    p = subprocess.run([sys.executable, "-m", "prepack", "pack", str(parquet),
                        "-o", str(b), "--max-seq-len", "32"],
                       capture_output=True, text=True, env=ENV, timeout=60)
    if p.returncode == 1 and "libprepack" in p.stderr:
        pytest.skip("no libprepack (sanitizer builds cannot load it)")
    assert p.returncode == 0, p.stderr
    assert sorted(os.listdir(a)) == sorted(os.listdir(b))
    for name in os.listdir(a):
        if name != "manifest.json":
            assert (a / name).read_bytes() == (b / name).read_bytes(), name
    ma, mb = (json.loads((d / "manifest.json").read_text()) for d in (a, b))
    for m in (ma, mb):
        for i in m["inputs"]:
            del i["path"], i["format"]
    assert ma == mb


def test_svg_and_pad_multiple_as_the_command(prepack_bin, tmp_path):
    """stats --pad-multiple 4 --svg: the same picture from both front ends;
    an SVG path that is a link refused by both (exit 1), an L that M does
    not divide a usage error of both (exit 2)."""
    seqs = [list(range(1, n + 1)) for n in (5, 17, 3, 30, 12, 9, 1, 26)]
    jsonl, parquet = tmp_path / "in.jsonl", tmp_path / "in.parquet"
    jsonl.write_text("".join(json.dumps({"input_ids": s}) + "\n"
                             for s in seqs))
    pq.write_table(pa.table({"input_ids": seqs}), parquet)
    (tmp_path / "victim").write_text("kept")
    os.symlink(tmp_path / "victim", tmp_path / "linked.svg")

    def both(L, c_svg, py_svg):
        opts = ["--max-seq-len", str(L), "--pad-multiple", "4", "--svg"]
        c = subprocess.run([prepack_bin, "stats", str(jsonl), "--quiet",
                            *opts, str(tmp_path / c_svg)],
                           capture_output=True, text=True, timeout=60)
        py = subprocess.run([sys.executable, "-m", "prepack", "stats",
                             str(parquet), *opts, str(tmp_path / py_svg)],
                            capture_output=True, text=True, env=ENV,
                            timeout=60)
        if py.returncode == 1 and "libprepack" in py.stderr:
            pytest.skip("no libprepack (sanitizer builds cannot load it)")
        return c.returncode, py.returncode
    assert both(32, "command.svg", "module.svg") == (0, 0)
    picture = (tmp_path / "command.svg").read_bytes()
    assert picture.rstrip().endswith(b"</svg>")
    assert (tmp_path / "module.svg").read_bytes() == picture
    assert both(32, "linked.svg", "linked.svg") == (1, 1)
    assert (tmp_path / "victim").read_text() == "kept"
    assert both(30, "x.svg", "y.svg") == (2, 2)


@pytest.mark.parametrize("cmd", ["pack", "stats"])
def test_quiet_is_progress_false(monkeypatch, cmd):
    """--quiet, as the command's: pack_dataset's and stats_dataset's
    progress=False; without it progress=None (shown on a terminal)."""
    import prepack.__main__
    import prepack.dataset
    got = []
    monkeypatch.setattr(prepack.dataset, f"{cmd}_dataset",
                        lambda *a, **k: got.append(k["progress"]) or
                        {"sequences": 0, "input_tokens": 0, "rows": 0,
                         "lower_bound": 0, "efficiency": 1.0})
    args = [cmd, "in.parquet", "--max-seq-len", "8"] + (
        ["-o", "out"] if cmd == "pack" else [])
    assert prepack.__main__.main(args) == 0
    assert prepack.__main__.main(args + ["--quiet"]) == 0
    assert got == [None, False]


def test_export_options_in_both_front_ends(prepack_bin):
    """`prepack export` and `python -m prepack export` (which the command
    runs): the same options, --pad-id included."""
    p = subprocess.run([prepack_bin, "export", "--help"], capture_output=True,
                       text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    c, py = options(p.stdout), module_options("export")
    assert "--pad-id" in c and "--to" in c
    assert sorted(c) == sorted(py)


# ---- python -m prepack's own surface (issue 29) -------------------------

def test_version_is_the_commands(prepack_bin):
    """python -m prepack --version prints `prepack --version`'s line."""
    c = subprocess.run([prepack_bin, "--version"], capture_output=True,
                       text=True, timeout=30)
    py = subprocess.run([sys.executable, "-m", "prepack", "--version"],
                        capture_output=True, text=True, timeout=60, env=ENV)
    if "libprepack not loaded" in py.stdout:
        pytest.skip("no libprepack (sanitizer builds cannot load it)")
    assert c.returncode == py.returncode == 0, py.stderr
    assert py.stdout == c.stdout and c.stdout.startswith("prepack ")


@pytest.mark.parametrize("cmd", [[], ["pack"], ["stats"]])
def test_help_descriptions_are_whole_sentences(cmd):
    """Each --help's description is whole: it ends a sentence, and names
    what the module reads."""
    p = subprocess.run([sys.executable, "-m", "prepack", *cmd, "--help"],
                       capture_output=True, text=True, timeout=60, env=ENV)
    assert p.returncode == 0, p.stderr
    text = p.stdout.split("\n\n")[1]  # after the usage
    assert text.rstrip().endswith("."), text
    assert "Parquet" in text and "token" in text, text


def _jsonl(path, seqs):
    path.write_text("".join(json.dumps({"input_ids": s}) + "\n"
                            for s in seqs))
    return path


@pytest.mark.usefixtures("library")
def test_token_files_are_read_as_the_command_reads_them(prepack_bin,
                                                        tmp_path):
    """python -m prepack stats|pack of JSON lines of token ids (no
    --tokenizer): the command's output, exit status and shard set, as
    `prepack stats|pack` on the same arguments, errors included."""
    seqs = [list(range(1, n + 1)) for n in (5, 17, 3, 30, 12, 9, 1, 26)]
    good = _jsonl(tmp_path / "corpus.jsonl", seqs)
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"input_ids": [1, 2]}\n{"text": "words"}\n')
    env = dict(ENV, PREPACK_BIN=prepack_bin)

    def both(*args):
        c = subprocess.run([prepack_bin, *args], capture_output=True,
                           text=True, timeout=60)
        py = subprocess.run([sys.executable, "-m", "prepack", *args],
                            capture_output=True, text=True, timeout=60,
                            env=env)
        return c, py
    c, py = both("stats", str(good), "--max-seq-len", "32", "--json")
    assert c.returncode == py.returncode == 0, py.stderr
    figures = [json.loads(p.stdout) for p in (c, py)]
    for f in figures:
        del f["timings"]  # seconds, measured
    assert figures[0] == figures[1]
    assert figures[1]["inputs"][0]["sequences"] == len(seqs)
    for args in (["stats", str(good), "--max-seq-len", "32",
                  "--pad-multiple", "4", "--quiet"],
                 ["stats", str(bad), "--max-seq-len", "32"],
                 ["stats", str(good), "--max-seq-len", "8"]):
        c, py = both(*args)

        def untimed(text):
            return [ln for ln in text.splitlines()
                    if not ln.lstrip().startswith("time ")]
        assert (py.returncode, untimed(py.stdout), py.stderr) == \
            (c.returncode, untimed(c.stdout), c.stderr), args
    assert both("stats", str(bad), "--max-seq-len", "32")[1].returncode == 1
    # a dataset beside them stays pack_dataset's: it refuses token files
    mixed = both("stats", str(good), str(tmp_path / "x.parquet"),
                 "--max-seq-len", "32")[1]
    assert mixed.returncode == 1 and "prepack stats" in mixed.stderr
    c = subprocess.run([prepack_bin, "pack", str(good), "-o",
                        str(tmp_path / "a"), "--max-seq-len", "32",
                        "--quiet"], capture_output=True, timeout=60)
    py = subprocess.run([sys.executable, "-m", "prepack", "pack", str(good),
                         "-o", str(tmp_path / "b"), "--max-seq-len", "32",
                         "--quiet"], capture_output=True, text=True,
                        timeout=60, env=env)
    assert c.returncode == 0 and py.returncode == 0, py.stderr
    assert sorted(os.listdir(tmp_path / "a")) == \
        sorted(os.listdir(tmp_path / "b"))
    for name in os.listdir(tmp_path / "a"):
        if name != "manifest.json":
            assert (tmp_path / "a" / name).read_bytes() == \
                (tmp_path / "b" / name).read_bytes(), name
