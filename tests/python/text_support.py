"""What the text tests share: the ChatML template with {% generation %}
markers they give their tokenizers, a set's sequences read back, and the
command's hand-off to python -m prepack run as printed."""
import os
import shlex
import subprocess
import sys

import numpy as np

from conftest import ROOT

CHATML = (
    "{% for m in messages %}"
    "{{ '<|im_start|>' + m['role'] + '\n' }}"
    "{% if m['role'] == 'assistant' %}{% generation %}"
    "{{ m['content'] + '<|im_end|>' }}{% endgeneration %}"
    "{% else %}{{ m['content'] + '<|im_end|>' }}{% endif %}"
    "{{ '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


def rows_by_sequence(out):
    """seq_id -> (input_ids, loss_mask) over the rows of the set in out."""
    from prepack import ShardSet
    got = {}
    for row in ShardSet(out):
        cu = row["cu_seqlens"]
        for k, sid in enumerate(row["seq_ids"]):
            a, b = int(cu[k]), int(cu[k + 1])
            mask = row["loss_mask"][a:b] if "loss_mask" in row else \
                np.ones(b - a, np.uint8)
            got[int(sid)] = (row["input_ids"][a:b].tolist(), mask.tolist())
    return got


def run_as_printed(prepack_bin, args, out):
    """`prepack ARGS` (a text option given) exits 2 printing the
    python -m prepack command with ARGS, shell-quoted; that command, run
    as printed, succeeds, and `prepack verify OUT` passes."""
    p = subprocess.run([prepack_bin] + args, capture_output=True, text=True)
    assert p.returncode == 2, p.stderr
    argv = shlex.split(p.stderr.splitlines()[-1].strip())
    assert argv[:3] == ["python3", "-m", "prepack"] and argv[3:] == args
    env = dict(os.environ, PYTHONPATH=os.path.join(ROOT, "python"))
    run = subprocess.run([sys.executable] + argv[1:], capture_output=True,
                         text=True, env=env)
    assert run.returncode == 0, run.stderr
    v = subprocess.run([prepack_bin, "verify", str(out)], capture_output=True,
                       text=True)
    assert v.returncode == 0, v.stdout + v.stderr
