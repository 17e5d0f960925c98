"""The options' one definition (src/cli/options.def, as the generated
python/prepack/_options.py) held against what both front ends do: `prepack
pack|stats` and `python -m prepack pack|stats` accept the same values of
each shared option and refuse the same ones in the same words (a range's
ends and one past them, each choice and a wrong one), take the table's
defaults, print its help, and refuse another command's options by name.
test_front_ends.py holds the two --help texts to one set of options."""
import inspect
import json
import subprocess

import pytest

from prepack import _options
from prepack.__main__ import _cores, _parser
from test_front_ends import (COMMAND_ONLY, MODULE_ONLY, command_options,
                             module_options)

OPTIONS = {o["name"]: o for o in _options.OPTIONS}
CMDS = ("pack", "stats")


def shared(cmd):
    """The options of cmd on both front ends."""
    return [o for o in _options.OPTIONS
            if cmd in o["commands"] and cmd in o["module"]]


def candidates(o):
    """(value, whether the table lets it in) for an option with a value:
    a range's ends and one past each, malformed numbers, each choice and
    wrong ones."""
    kind = o["kind"]
    if kind in ("int", "size"):
        lo, hi = o["range"]
        out = [(str(lo), True), (str(hi), True), (str(hi + 1), False),
               (str(lo - 1), False), ("", False), ("abc", False),
               ("1.5", False), ("+1", False), (" 1", False), ("1_0", False),
               ("0x10", False), ("\u0661", False)]  # an Arabic-Indic one
        if kind == "size":
            out += [(s, lo <= n <= hi) for s, n in (
                ("1K", 1 << 10), ("3k", 3 << 10), ("512M", 512 << 20),
                ("2G", 2 << 30), (f"{(2**64 - 1) >> 30}g",
                                  ((2**64 - 1) >> 30) << 30))]
            out += [("1T", False), (f"{((2**64 - 1) >> 30) + 1}G", False),
                    ("G", False), ("0" * 30 + "1", True),
                    ("0" * 31 + "1", False)]  # the command's 32 characters
        return out
    if kind == "choice":
        return [(c, True) for c in o["choices"]] + [
            ("nope", False), ("", False),
            (o["choices"][0].upper(), False)]
    if kind == "name":
        return [("x", True), ("", False)]
    return []


def command_verdict(prepack_bin, cmd, name, value):
    """(accepted, the words after '--NAME ') of the command given only
    this option: a value it takes leaves the usage error of no inputs."""
    p = subprocess.run([prepack_bin, cmd, f"--{name}", value],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 2, (name, value, p.stderr)
    first = p.stderr.splitlines()[0]
    if "give INPUT files" in first:
        return True, None
    head = f"prepack {cmd}: --{name} "
    assert first.startswith(head), (name, value, first)
    return False, first[len(head):]


def module_verdict(capsys, cmd, name, value):
    """(accepted, the words after 'argument --NAME: ') of python -m
    prepack's parser given this option on a whole command line."""
    args = [cmd, "in.parquet", "--max-seq-len", "16"] + (
        ["-o", "out"] if cmd == "pack" else [])
    capsys.readouterr()
    try:
        _parser().parse_args(args + [f"--{name}", value])
    except SystemExit as e:
        assert e.code == 2
        err = capsys.readouterr().err.splitlines()[-1]
        head = f"error: argument --{name}: "
        assert head in err, (name, value, err)
        return False, err.split(head, 1)[1]
    return True, None


@pytest.mark.parametrize("cmd", CMDS)
def test_values_accepted_and_refused_alike(prepack_bin, capsys, cmd):
    """Each shared option with a value: what the table lets in, both take;
    what it keeps out, both refuse, in the same words."""
    tried = 0
    for o in shared(cmd):
        for value, fits in candidates(o):
            c = command_verdict(prepack_bin, cmd, o["name"], value)
            py = module_verdict(capsys, cmd, o["name"], value)
            assert c == py, (o["name"], value)
            assert c[0] == fits, (o["name"], value, c)
            tried += 1
    assert tried > 60


@pytest.mark.parametrize("cmd", CMDS)
def test_command_only_options_take_the_tables_values(prepack_bin, cmd):
    """The command's own options with a value (--doc-sep, --format,
    --sep-position): accepted and refused as the table says."""
    own = [o for o in _options.OPTIONS
           if cmd in o["commands"] and cmd not in o["module"]]
    tried = 0
    for o in own:
        for value, fits in candidates(o):
            got = command_verdict(prepack_bin, cmd, o["name"], value)[0]
            assert got == fits, (o["name"], value)
            tried += 1
    assert tried > 10


@pytest.mark.parametrize("cmd", CMDS)
def test_flags_take_no_value(prepack_bin, capsys, cmd):
    for o in shared(cmd):
        if o["kind"] != "flag":
            continue
        c = subprocess.run([prepack_bin, cmd, f"--{o['name']}=1"],
                           capture_output=True, text=True, timeout=30)
        assert c.returncode == 2 and "unknown option" in c.stderr
        args = [cmd, "x.parquet", "--max-seq-len", "8"] + (
            ["-o", "out"] if cmd == "pack" else [])
        with pytest.raises(SystemExit) as e:
            _parser().parse_args(args + [f"--{o['name']}=1"])
        assert e.value.code == 2


@pytest.mark.parametrize("cmd", CMDS)
def test_another_commands_option_is_refused_by_name(prepack_bin, cmd):
    """An option of the other command is refused naming it (it named its
    value: "'1G' is not an option of stats"), and stats refuses
    --shard-bytes (it took it and ignored it)."""
    others = [o for o in _options.OPTIONS if cmd not in o["commands"]]
    assert others
    for o in others:
        args = [f"--{o['name']}"] + ([] if o["kind"] == "flag" else ["1G"])
        p = subprocess.run([prepack_bin, cmd, *args], capture_output=True,
                           text=True, timeout=30)
        assert p.returncode == 2
        assert p.stderr.startswith(f"prepack {cmd}: '--{o['name']}' is not "
                                   f"an option of {cmd}\n"), p.stderr
    if cmd == "stats":
        assert "shard-bytes" in [o["name"] for o in others]


def test_ranges_and_choices_are_the_librarys():
    """--max-seq-len and --pad-multiple reach the library's limit
    (PREPACK_MAX_SEQ_LEN_LIMIT, which test_seam holds _native's to); the
    choices pack_dataset takes are the table's (the command's are tried
    above)."""
    from prepack import _native
    for name in ("max-seq-len", "pad-multiple"):
        assert OPTIONS[name]["range"] == (1, _native.MAX_SEQ_LEN_LIMIT)
    assert OPTIONS["algo"]["choices"] == _native.ALGOS
    assert OPTIONS["overlong"]["choices"] == _native.OVERLONGS
    assert OPTIONS["token-dtype"]["choices"] == _native.DTYPES


def test_exceptions_are_the_tables():
    """test_front_ends' lists of one front end's own options are the
    table's (the C command's) and Python's own (not in the table)."""
    for cmd in CMDS:
        command_only = {f"--{o['name']}" for o in _options.OPTIONS
                        if cmd in o["commands"] and cmd not in o["module"]}
        assert command_only == set(COMMAND_ONLY[cmd])
        module_only = {f"--{o['name']}" for o in _options.OPTIONS
                       if cmd in o["module"] and cmd not in o["commands"]}
        assert module_only == set()
        assert not set(MODULE_ONLY[cmd]) & {f"--{n}" for n in OPTIONS}


@pytest.mark.parametrize("cmd", CMDS)
def test_module_defaults_are_the_tables(cmd):
    """python -m prepack's defaults, and pack_dataset's and
    stats_dataset's keywords they fill, are the table's (--threads: the
    cores available, as the command's)."""
    from prepack import dataset
    args = [cmd, "in.parquet", "--max-seq-len", "16"] + (
        ["-o", "out"] if cmd == "pack" else [])
    a = vars(_parser().parse_args(args))
    keyword = {"field": "column"}  # the option's name where it differs
    signature = inspect.signature(getattr(dataset, f"{cmd}_dataset"))
    checked = 0
    for o in _options.OPTIONS:
        if cmd not in o["module"] or o["required"]:
            continue
        dest = o["name"].replace("-", "_")
        want = _cores() if o["name"] == "threads" else o["default"]
        assert a[dest] == want, o["name"]
        k = keyword.get(o["name"], dest)
        if k in signature.parameters and o["name"] != "threads":
            assert signature.parameters[k].default == o["default"], k
            checked += 1
    assert checked >= 6


def _stats_json(prepack_bin, path, *extra):
    p = subprocess.run([prepack_bin, "stats", str(path), "--max-seq-len",
                        "16", "--json", "--quiet", *extra],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    figures = json.loads(p.stdout)
    del figures["timings"], figures["io"]  # the process's own: ASan's reads count
    return figures


def test_command_defaults_are_the_tables(prepack_bin, tmp_path):
    """The command without an option and with the table's default for it
    report the same; a value other than the default changes the report
    (so each option is read at all)."""
    seqs = [list(range(1, n + 1)) for n in (5, 17, 3, 30, 12, 9, 1, 26, 7)]
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"input_ids": s, "ids": s}) + "\n"
                            for s in seqs))
    plain = _stats_json(prepack_bin, path, "--overlong", "split")
    other = {"algo": "nextfit", "batch-size": "2", "max-seqs-per-row": "1"}
    checked = 0
    for o in _options.OPTIONS:
        if "stats" not in o["commands"] or o["kind"] == "flag" or \
                o["default"] is None or o["name"] == "overlong":
            continue
        if o["range"] and not o["range"][0] <= o["default"] <= o["range"][1]:
            continue  # 0: none given (--pad-multiple, --threads)
        given = _stats_json(prepack_bin, path, "--overlong", "split",
                            f"--{o['name']}", str(o["default"]))
        assert given == plain, o["name"]
        checked += 1
    assert checked >= 6
    # overlong's default: an error on the sequences over 16
    p = subprocess.run([prepack_bin, "stats", str(path), "--max-seq-len",
                        "16", "--quiet"], capture_output=True, text=True,
                       timeout=60)
    assert p.returncode == 1
    assert OPTIONS["overlong"]["default"] == "error"
    for name, value in other.items():
        assert _stats_json(prepack_bin, path, "--overlong", "split",
                           f"--{name}", value) != plain, name


def test_pack_seed_default_is_the_tables(prepack_bin, tmp_path):
    """pack --shuffle without --seed is --seed 0 (the table's default)."""
    path = tmp_path / "in.jsonl"
    path.write_text("".join(json.dumps({"input_ids": list(range(1, n))})
                            + "\n" for n in range(2, 17) for _ in range(3)))
    sets = []
    for name, extra in (("a", []), ("b", ["--seed",
                                          str(OPTIONS["seed"]["default"])]),
                        ("c", ["--seed", "7"])):
        out = tmp_path / name
        subprocess.run([prepack_bin, "pack", str(path), "-o", str(out),
                        "--max-seq-len", "16", "--shuffle", "--quiet",
                        *extra], check=True, capture_output=True, timeout=60)
        sets.append(sorted((p.name, p.read_bytes())
                           for p in out.iterdir() if p.suffix != ".json"))
    assert sets[0] == sets[1]
    assert sets[0] != sets[2]


@pytest.mark.parametrize("cmd", CMDS)
def test_help_is_the_tables(prepack_bin, cmd):
    """Each option's help in both --help texts is the table's (pack's
    input options: stats' help, to which pack's points)."""
    c, py = command_options(prepack_bin, cmd), module_options(cmd)

    def words(text):
        return " ".join(text.split()).replace("- ", "-")
    for o in _options.OPTIONS:
        name = f"--{o['name']}"
        text = o["help"]["stats" if o["input"] else cmd] \
            if cmd in o["commands"] or cmd in o["module"] else None
        if cmd in o["commands"]:
            assert words(c[name]) == words(text), name
        if cmd in o["module"]:
            assert words(py[name]) == words(o["help"][cmd]), name
