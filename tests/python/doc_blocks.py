"""The code blocks of the docs as tests run them: a fenced block preceded
by `<!-- runnable -->` (or `<!-- runnable: why, where -->`) runs as
written; `<!-- not runnable: why -->` says why one cannot (a cluster, a
GPU, a placeholder path); `<!-- sample: COMMAND -->` marks what a
command prints (scripts/sample_outputs.py). Used by test_readme.py (the README's commands in
a fresh clone) and test_steps_cluster.py (docs/SCALE.md's Ray example)."""
import os
import re

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))

# a sample output (scripts/sample_outputs.py) is marked as not a command
_MARK = re.compile(r"^<!-- (runnable|not runnable|sample)(?::\s*(.*?))? -->$")
_FENCE = re.compile(r"^```(\w*)\s*$")


class Block:
    def __init__(self, doc, line, lang, code, mark, note):
        self.doc, self.line, self.lang, self.code = doc, line, lang, code
        self.runnable = mark == "runnable"
        self.marked = mark is not None
        self.note = note

    def __repr__(self):
        return f"{self.doc}:{self.line} ({self.lang})"


def blocks(doc, root=ROOT):
    """Every fenced block of root/doc, in order, with the mark just above
    its opening fence (None when unmarked)."""
    lines = open(os.path.join(root, doc), encoding="utf-8").read().split("\n")
    out, i = [], 0
    while i < len(lines):
        m = _FENCE.match(lines[i])
        if not m:
            i += 1
            continue
        mark = _MARK.match(lines[i - 1]) if i else None
        end = i + 1
        while not lines[end].startswith("```"):
            end += 1
        out.append(Block(doc, i + 1, m.group(1), "\n".join(lines[i + 1:end]),
                         mark.group(1) if mark else None,
                         mark.group(2) if mark else None))
        i = end + 1
    return out


def runnable(doc, lang=None):
    """The blocks of doc marked runnable (of one language when given)."""
    return [b for b in blocks(doc) if b.runnable and lang in (None, b.lang)]
