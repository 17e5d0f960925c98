#!/usr/bin/env python3
"""The sample outputs of README.md and docs/*.md, generated from the code
so they cannot drift from it.

A sample is a fenced block between two markers,

    <!-- sample: make demo -->
    ```
    ...what the command prints...
    ```
    <!-- /sample -->

whose name (after "sample:") is one of SAMPLES below: the command a
reader runs, and how this script runs it (from a scratch directory that
holds the clone's fixtures/, with the prepack command given). Lines that
vary from run to run (timings, rates, I/O counters) are masked when
comparing, and kept as the doc has them when rewriting (a timing from a
quiet machine stays).

Usage:
    scripts/sample_outputs.py --prepack build/prepack           # rewrite
    scripts/sample_outputs.py --prepack build/prepack --check   # exit 1 on
                                                                # a stale one
"""
import argparse
import difflib
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = ["README.md"] + sorted(
    os.path.join("docs", n) for n in os.listdir(os.path.join(ROOT, "docs"))
    if n.endswith(".md"))

FOUR_PROMPTS = "printf '7\\n9\\n6\\n10\\n' | prepack stats --lengths - " \
               "--max-seq-len 16"
# name -> the shell command run for it, in the scratch directory, with
# `prepack` on PATH
SAMPLES = {
    "make demo": 'make -s --no-print-directory -f "$ROOT/Makefile" '
                 'demo-report PREPACK=prepack',
    FOUR_PROMPTS: FOUR_PROMPTS,
    FOUR_PROMPTS + " --json": FOUR_PROMPTS + " --json",
}

_MARK = re.compile(r"^<!-- sample: (.+) -->$")
_END = "<!-- /sample -->"
# what varies run to run: the report's time line, --json's timings and
# I/O counters
_VARIES = [
    (re.compile(r"^(  time +).*$"), r"\1<time>"),
    (re.compile(r'^(\s*"(?:read_s|plan_s|write_s|read_bytes|write_bytes)": )'
                r'[0-9.e+-]+(,?)$'), r"\1<n>\2"),
]


def masked(lines):
    out = []
    for ln in lines:
        for pattern, repl in _VARIES:
            ln = pattern.sub(repl, ln)
        out.append(ln)
    return out


def samples(text):
    """(name, first line, last line) of each sample's fenced body, 0-based
    indices into text's lines; ValueError on a malformed one."""
    lines = text.split("\n")
    found = []
    for i, ln in enumerate(lines):
        m = _MARK.match(ln)
        if not m:
            continue
        if m.group(1) not in SAMPLES:
            raise ValueError(f"line {i + 1}: no sample named {m.group(1)!r} "
                             f"(scripts/sample_outputs.py's SAMPLES)")
        if not lines[i + 1].startswith("```"):
            raise ValueError(f"line {i + 1}: a fenced block must follow")
        end = i + 2
        while not lines[end].startswith("```"):
            end += 1
        if lines[end + 1] != _END:
            raise ValueError(f"line {end + 2}: {_END} must follow the block")
        found.append((m.group(1), i + 2, end))
    return found


def run(name, prepack):
    """The sample's output (stdout and stderr, as a terminal shows them),
    run as a reader would from the clone's root."""
    with tempfile.TemporaryDirectory(prefix="prepack-sample-") as tmp:
        os.symlink(os.path.join(ROOT, "fixtures"), os.path.join(tmp, "fixtures"))
        bindir = os.path.join(tmp, ".bin")
        os.mkdir(bindir)
        os.symlink(os.path.abspath(prepack), os.path.join(bindir, "prepack"))
        env = dict(os.environ, ROOT=ROOT,
                   PATH=bindir + os.pathsep + os.environ.get("PATH", ""))
        env.pop("MAKEFLAGS", None)
        p = subprocess.run(["bash", "-c", "set -o pipefail; " + SAMPLES[name]],
                           cwd=tmp, env=env, stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True, timeout=300)
        if p.returncode != 0:
            raise RuntimeError(f"sample {name!r} failed ({p.returncode}): "
                               f"{p.stdout.strip()}")
        return p.stdout.rstrip("\n").split("\n")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prepack", required=True, help="the prepack command")
    ap.add_argument("--check", action="store_true",
                    help="compare only; exit 1 when a sample differs")
    a = ap.parse_args(argv)
    stale, outputs = 0, {}
    for doc in DOCS:
        path = os.path.join(ROOT, doc)
        text = open(path, encoding="utf-8").read()
        try:
            found = samples(text)
        except ValueError as e:
            print(f"{doc}: {e}", file=sys.stderr)
            return 1
        lines, changed = text.split("\n"), False
        for name, first, end in reversed(found):
            if name not in outputs:
                outputs[name] = run(name, a.prepack)
            now, have = outputs[name], lines[first:end]
            if masked(now) == masked(have):
                continue
            stale, changed = stale + 1, True
            kept = {m: ln for m, ln in zip(masked(have), have)}
            now = [kept.get(m, ln) for m, ln in zip(masked(now), now)]
            print(f"{doc}:{first}: the sample of {name!r} differs from what "
                  f"it prints now:", file=sys.stderr)
            sys.stderr.writelines(difflib.unified_diff(
                [x + "\n" for x in have], [x + "\n" for x in now],
                f"{doc} (as written)", "now"))
            lines[first:end] = now
        if changed and not a.check:
            with open(path + ".tmp", "w", encoding="utf-8") as f:
                f.write("\n".join(lines))
            os.replace(path + ".tmp", path)
    if a.check and stale:
        print(f"{stale} sample output(s) out of date: run "
              f"scripts/sample_outputs.py --prepack build/prepack",
              file=sys.stderr)
        return 1
    unused = set(SAMPLES) - set(outputs)
    if unused:
        print(f"samples no doc shows: {sorted(unused)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
