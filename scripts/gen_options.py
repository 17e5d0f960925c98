#!/usr/bin/env python3
"""Writes python/prepack/_options.py from src/cli/options.def: the options
of `prepack pack|stats` and `python -m prepack pack|stats`, defined once.

options.def is read strictly: comments, then PP_OPT(...) entries whose
arguments are identifiers (joined by '|'), decimal numbers, 'x'
characters and string literals (adjacent ones joined). Anything else, an
entry of the wrong length, an unknown KIND or WHERE word, a default out of
its range or not one of its choices, or a help that does not state the
default it documents fails naming the line.

Usage:
    python3 scripts/gen_options.py           # rewrite _options.py
    python3 scripts/gen_options.py --check   # exit 1 when it is stale
"""
import argparse
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEF = os.path.join("src", "cli", "options.def")
OUT = os.path.join("python", "prepack", "_options.py")
REGENERATE = "python3 scripts/gen_options.py"

FIELDS = ("id", "name", "short", "kind", "metavar", "lo", "hi", "choices",
          "default", "where", "must", "help", "stats_help")
KINDS = ("FLAG", "INT", "SIZE", "CHOICE", "NAME", "STRING")
WHERE = ("CMD_PACK", "CMD_STATS", "MOD_PACK", "MOD_STATS", "REQUIRED",
         "INPUT")
HELP_WIDTH = 50  # a help line after column 27 of --help
_ESCAPES = {"n": "\n", "\\": "\\", '"': '"', "'": "'"}

_TOKEN = re.compile(r"""
    (?P<space>\s+)
  | (?P<comment>/\*.*?\*/)
  | (?P<string>"(?:[^"\\\n]|\\.)*")
  | (?P<char>'[a-z]')
  | (?P<number>[0-9]+)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[(),|])
""", re.S | re.X)


class DefError(Exception):
    pass


def _tokens(text):
    """(kind, value, line) of each token, comments and space skipped."""
    pos, line = 0, 1
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise DefError(f"{DEF}:{line}: cannot read "
                           f"{text[pos:pos + 20]!r}")
        kind, value = m.lastgroup, m.group()
        if kind == "string":
            body = value[1:-1]
            bad = re.search(r"\\([^n\\\"'])", body)
            if bad:
                raise DefError(f"{DEF}:{line}: escape \\{bad.group(1)} "
                               f"(only \\n, \\\\, \\\", \\')")
            value = re.sub(r"\\(.)", lambda e: _ESCAPES[e.group(1)], body)
        elif kind == "char":
            value = value[1]
        elif kind == "number":
            value = int(value)
        if kind not in ("space", "comment"):
            yield kind, value, line
        line += m.group().count("\n")
        pos = m.end()


def _arguments(tokens, line):
    """One entry's arguments after 'PP_OPT(' through its ')'."""
    args, current = [], []
    for kind, value, where in tokens:
        if kind == "punct" and value in ",)":
            if not current:
                raise DefError(f"{DEF}:{where}: an empty argument")
            args.append(_argument(current, where))
            current = []
            if value == ")":
                return args
        else:
            current.append((kind, value))
    raise DefError(f"{DEF}:{line}: PP_OPT( without its ')'")


def _argument(parts, line):
    kinds = [k for k, _ in parts]
    if all(k == "string" for k in kinds):
        return "".join(v for _, v in parts)
    if len(parts) == 1 and kinds[0] in ("number", "char", "ident"):
        return parts[0][1]
    # WORD | WORD | ...
    words = [v for k, v in parts[::2]]
    if kinds[::2] == ["ident"] * len(words) and all(
            k == "punct" and v == "|" for k, v in parts[1::2]) \
            and len(parts) % 2 == 1:
        return tuple(words)
    raise DefError(f"{DEF}:{line}: cannot read the argument "
                   f"{' '.join(str(v) for _, v in parts)!r}")


def read_def(text):
    """The entries of options.def as dicts of FIELDS (checked)."""
    tokens = _tokens(text)
    entries = []
    for kind, value, line in tokens:
        if kind != "ident" or value != "PP_OPT":
            raise DefError(f"{DEF}:{line}: expected PP_OPT(, not {value!r}")
        kind, value, _ = next(tokens, (None, None, line))
        if value != "(":
            raise DefError(f"{DEF}:{line}: expected '(' after PP_OPT")
        args = _arguments(tokens, line)
        if len(args) != len(FIELDS):
            raise DefError(f"{DEF}:{line}: PP_OPT takes {len(FIELDS)} "
                           f"arguments ({', '.join(FIELDS)}), not "
                           f"{len(args)}")
        entries.append(_checked(dict(zip(FIELDS, args)), line))
    for field in ("id", "name"):
        seen = [e[field] for e in entries]
        dup = sorted({v for v in seen if seen.count(v) > 1})
        if dup:
            raise DefError(f"{DEF}: {field} {dup[0]!r} given twice")
    return entries


def _checked(e, line):
    where = f"{DEF}:{line}: --{e['name']}"
    types = dict(id=str, name=str, kind=str, metavar=str, lo=int, hi=int,
                 choices=str, default=str, must=str, help=str,
                 stats_help=str)
    for field, t in types.items():
        if not isinstance(e[field], t):
            raise DefError(f"{where}: {field} must be a {t.__name__}, not "
                           f"{e[field]!r}")
    if not re.fullmatch(r"[a-z][a-z0-9-]*", e["name"]):
        raise DefError(f"{where}: a long name is lowercase words joined "
                       f"by '-'")
    if e["short"] == 0:
        e["short"] = None
    elif not (isinstance(e["short"], str) and len(e["short"]) == 1):
        raise DefError(f"{where}: SHORT is 0 or a letter in quotes")
    if e["kind"] not in KINDS:
        raise DefError(f"{where}: KIND must be one of {', '.join(KINDS)}")
    flags = e["where"] if isinstance(e["where"], tuple) else (e["where"],)
    unknown = [w for w in flags if w not in WHERE]
    if unknown or not any(w in flags for w in WHERE[:4]):
        raise DefError(f"{where}: WHERE is '|' of {', '.join(WHERE)}, "
                       f"naming a command")
    e["where"] = flags
    kind = e["kind"]
    if (kind == "FLAG") != (e["metavar"] == ""):
        raise DefError(f"{where}: a FLAG has no METAVAR, others have one")
    ranged = kind in ("INT", "SIZE")
    if ranged and not 0 <= e["lo"] <= e["hi"] < 2**64:
        raise DefError(f"{where}: LO..HI must be a range in 0..2**64-1")
    if not ranged and (e["lo"], e["hi"]) != (0, 0):
        raise DefError(f"{where}: LO and HI are 0 but for INT and SIZE")
    if ranged != bool(e["must"]):
        raise DefError(f"{where}: MUST is given for INT and SIZE only")
    if (kind == "CHOICE") != bool(e["choices"]):
        raise DefError(f"{where}: CHOICES are given for CHOICE only")
    if e["default"]:
        try:
            default_value(e)
        except ValueError as err:
            raise DefError(f"{where}: DEFAULT {e['default']!r}: {err}")
    for field in ("help", "stats_help"):
        text = e[field]
        if field == "help" and not text:
            raise DefError(f"{where}: HELP is empty")
        long = [ln for ln in text.split("\n") if len(ln) > HELP_WIDTH]
        if long:
            raise DefError(f"{where}: help line over {HELP_WIDTH} "
                           f"characters: {long[0]!r}")
        if text and e["default"] and \
                f"default: {e['default']}" not in " ".join(text.split()):
            raise DefError(f"{where}: {field} does not say "
                           f"'default: {e['default']}'")
    return e


def _values():
    """python/prepack/_option_values.py, loaded alone (the package needs
    its library): the one reading of a value, the defaults' check."""
    import importlib.util
    path = os.path.join(ROOT, "python", "prepack", "_option_values.py")
    spec = importlib.util.spec_from_file_location("_option_values", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def default_value(e):
    """The value an option takes when absent, as Python holds it."""
    if e["kind"] == "FLAG":
        return False
    if not e["default"]:
        return 0 if e["kind"] in ("INT", "SIZE") else None
    return _values().parse(option(e), e["default"])


def option(e):
    """An entry as _options.OPTIONS holds it."""
    commands = tuple(c for c, w in (("pack", "CMD_PACK"),
                                    ("stats", "CMD_STATS"))
                     if w in e["where"])
    module = tuple(c for c, w in (("pack", "MOD_PACK"),
                                  ("stats", "MOD_STATS"))
                   if w in e["where"])
    ranged = e["kind"] in ("INT", "SIZE")
    return dict(
        name=e["name"], short=e["short"], kind=e["kind"].lower(),
        metavar=e["metavar"] or None,
        range=(e["lo"], e["hi"]) if ranged else None,
        choices=tuple(e["choices"].split("|")) if e["choices"] else None,
        default=None, commands=commands, module=module,
        required="REQUIRED" in e["where"], input="INPUT" in e["where"],
        must=e["must"] or None,
        help={c: (e["stats_help"] or e["help"]) if c == "stats"
              else e["help"] for c in ("pack", "stats")
              if c in commands or c in module})


def render(entries):
    """python/prepack/_options.py's text."""
    out = [
        '"""The options of `prepack pack|stats` and `python -m prepack',
        'pack|stats`, as src/cli/options.def defines them (its comment says',
        'what each field means). Written by scripts/gen_options.py: edit',
        f'options.def and run `{REGENERATE}`, never this file',
        '(test_options_generated fails when it is stale)."""',
        "",
        "# name, short, kind (flag, int, size, choice, name, string), metavar,",
        "# range (int and size: lo, hi), choices, default (the value taken",
        "# when absent), commands (the C command's) and module (python -m",
        "# prepack's), required, input (an input option), must (what a",
        "# value must be, in the usage error), help ({command: text}, lines",
        "# as the command's --help breaks them)",
        "OPTIONS = (",
    ]
    for e in entries:
        fields = option(e)
        fields["default"] = default_value(e)
        out.append("    dict(")
        for k, v in fields.items():
            out.append(f"        {k}={v!r},")
        out.append("    ),")
    out.append(")")
    return "\n".join(out) + "\n"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--check", action="store_true",
                   help="exit 1 when _options.py is not what this writes")
    a = p.parse_args(argv)
    with open(os.path.join(ROOT, DEF), encoding="utf-8") as f:
        try:
            text = render(read_def(f.read()))
        except DefError as e:
            print(f"gen_options: {e}", file=sys.stderr)
            return 1
    path = os.path.join(ROOT, OUT)
    if a.check:
        try:
            with open(path, encoding="utf-8") as f:
                current = f.read()
        except FileNotFoundError:
            current = None
        if current != text:
            print(f"gen_options: {OUT} is not what {DEF} gives "
                  f"({'missing' if current is None else 'stale'}): run "
                  f"`{REGENERATE}` and commit both", file=sys.stderr)
            return 1
        return 0
    tmp = path + ".tmp"  # never a link followed, never half a file
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW,
                 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return 0


if __name__ == "__main__":
    sys.exit(main())
