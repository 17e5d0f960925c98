#!/usr/bin/env python3
"""The README's commands, run as written by a new user: a fresh clone of
the committed tree (nothing uncommitted, no build, no .venv), a fresh
HOME, the runnable blocks (`<!-- runnable -->`, tests/python/doc_blocks.py)
run in order in one shell from the clone's root: `make demo`, `make
chat-demo` (its .venv from requirements/, torch 2.13.0 first), the pack and
check commands, a fresh venv with `pip install .[hf]`, and the training
loop. Every block must be marked runnable or not runnable with a reason,
so a new one is decided on. Minutes (two builds and two venvs): ctest's
label "readme", once, in the plain build.

Usage: test_readme.py SOURCE_DIR [PYTHON]   (PYTHON: whose python3 makes
the venvs, default the python3 on PATH)"""
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "python"))
import doc_blocks  # noqa: E402


def script(clone):
    """The shell script running README.md's runnable blocks of clone in
    order; SystemExit naming an unmarked block."""
    lines = ["set -euo pipefail"]
    for b in doc_blocks.blocks("README.md", root=clone):
        if not b.marked or (not b.runnable and not b.note):
            sys.exit(f"FAIL: README.md:{b.line}: mark the block "
                     f"<!-- runnable --> or <!-- not runnable: why -->")
        if not b.runnable:
            continue
        lines.append(f"echo '>>> README.md:{b.line}'")
        if b.lang == "sh":
            lines.append(b.code)
        elif b.lang == "python" and (b.note or "").startswith("python "):
            # the block is the file the command runs, exactly, but for
            # the file's opening comment
            path = b.note.split()[1]
            with open(os.path.join(clone, path)) as f:
                code = f.read().split("\n")
            while code and code[0].startswith("#"):
                code.pop(0)
            if "\n".join(code).strip() != b.code.strip():
                sys.exit(f"FAIL: README.md:{b.line} is not {path}")
            lines.append(b.note)
        else:
            sys.exit(f"FAIL: README.md:{b.line}: a runnable {b.lang} block "
                     f"needs the command that runs it")
    return "\n".join(lines) + "\n"


def main():
    src = os.path.abspath(sys.argv[1])
    if not os.path.exists(os.path.join(src, ".git")):
        print(f"test_readme: skipped, {src} is not a git clone")
        return 77
    tmp = tempfile.mkdtemp(prefix="prepack-readme-")
    try:
        clone, home = os.path.join(tmp, "clone"), os.path.join(tmp, "home")
        os.mkdir(home)
        subprocess.run(["git", "clone", "-q", src, clone], check=True)
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("PREPACK_", "PYTHON", "VIRTUAL_ENV",
                                    "MAKE", "CMAKE_", "CTEST"))}
        env["HOME"] = home
        env["PIP_NO_COMPILE"] = "1"  # no .pyc for torch's files: a minute less
        if len(sys.argv) > 2:  # this Python's python3 first
            env["PATH"] = os.path.dirname(os.path.abspath(sys.argv[2])) + \
                os.pathsep + env.get("PATH", "")
        body = script(clone)
        t0 = time.monotonic()
        p = subprocess.run(["bash", "-c", body], cwd=clone, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                           text=True)
        took = time.monotonic() - t0
        if p.returncode != 0:
            print(p.stdout[-6000:])
            block = [ln for ln in p.stdout.split("\n")
                     if ln.startswith(">>> ")][-1:]
            print(f"FAIL: the README's commands ended with status "
                  f"{p.returncode} in {block} ({took:.0f} s)")
            return 1
        for want in ("out/manifest.json", "out/report.svg",
                     "out-chat/manifest.json", "shards/manifest.json"):
            if not os.path.exists(os.path.join(clone, want)):
                print(f"FAIL: the README's commands left no {want}")
                return 1
        steps = [ln for ln in p.stdout.split("\n") if ln.startswith("0 ")
                 or ln.startswith("2 ")]
        if len(steps) != 2:  # the training loop's steps 0 and 2 printed
            print(p.stdout[-3000:])
            print("FAIL: the training loop printed no steps 0..2")
            return 1
        print(f"test_readme: ok, the README's commands ran in {took:.0f} s")
        return 0
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
