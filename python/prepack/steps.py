"""Pack in steps on Ray: `prepack scan` as N Ray tasks, `prepack plan` as
one, `prepack write` as M, `prepack finalize` last (docs/SCALE.md). The
shard set is byte-identical to one `prepack pack` of the same inputs and
options, for any N and M.

The work is the command's; Ray only starts the steps, passes the task
indices and retries: a task whose worker dies (a node lost, a process
killed) is rerun by Ray (`max_retries`), and a rerun of a task whose output
is already there and verifies does nothing. Paths must be the same on
every node (a shared file system), and the `prepack` command must be on
the nodes (pip install prepack puts it beside the Python that runs Ray's
workers; or give `prepack_bin`).

    import ray, prepack.steps
    ray.init()
    report = prepack.steps.pack(["a.jsonl", "b.bin"], "shards/",
                                      max_seq_len=4096, tasks=64)
"""
import json
import os
import shutil
import subprocess
import sys

__all__ = ["pack", "StepError"]


class StepError(Exception):
    """A step failed for a reason a retry does not fix (bad input, bad
    options): the command's message, naming the file and record."""


# pack's options as keyword arguments: name -> (flag, takes a value)
_OPTIONS = {
    "algo": "--algo",
    "overlong": "--overlong",
    "max_seqs_per_row": "--max-seqs-per-row",
    "seed": "--seed",
    "rows_per_frame": "--rows-per-frame",
    "shard_rows": "--shard-rows",
    "level": "--level",
    "token_dtype": "--token-dtype",
    "format": "--format",
    "field": "--field",
    "doc_sep": "--doc-sep",
    "sep_position": "--sep-position",
    "batch_size": "--batch-size",
}
_SWITCHES = {"shuffle": "--shuffle", "allow_trailing_bytes": "--allow-trailing-bytes"}


def _command_args(inputs, out_dir, max_seq_len, options):
    args = [os.fspath(p) for p in inputs]
    args += ["-o", os.fspath(out_dir), "--max-seq-len", str(int(max_seq_len))]
    for name, value in options.items():
        if name in _SWITCHES:
            if value:
                args.append(_SWITCHES[name])
        elif name in _OPTIONS:
            if value is not None:
                args += [_OPTIONS[name], str(value)]
        else:
            raise TypeError(f"pack() got an unexpected option {name!r}")
    return args


def find_command(prepack_bin=None):
    """The prepack command: prepack_bin, $PREPACK_BIN, the one beside this
    Python (a venv's bin/), or prepack on PATH."""
    for candidate in (prepack_bin, os.environ.get("PREPACK_BIN"),
                      os.path.join(os.path.dirname(sys.executable), "prepack"),
                      shutil.which("prepack")):
        if candidate and os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    raise FileNotFoundError("no prepack command: pip install prepack on every node, "
                            "or pass prepack_bin=")


def run_step(prepack_bin, step, args, task=None):
    """Runs one step; returns its --json result. Exit 1 and 2 (bad input,
    usage) raise StepError; anything else (a signal, a lost node) raises
    RuntimeError, which Ray retries."""
    _maybe_die_for_test(step, task)
    cmd = [prepack_bin, step, *args, "--json"]
    if task is not None:
        cmd += ["--task-index", str(task)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode in (1, 2):
        raise StepError(p.stderr.strip())
    if p.returncode != 0:
        raise RuntimeError(f"prepack {step} ended with status {p.returncode}: "
                           f"{p.stderr.strip()}")
    return json.loads(p.stdout)


def _maybe_die_for_test(step, task):
    """Tests only: PREPACK_STEPS_KILL=STEP:TASK:MARKER kills the worker
    running that task (SIGKILL) the first time, for Ray to retry it."""
    spec = os.environ.get("PREPACK_STEPS_KILL")
    if not spec:
        return
    want_step, want_task, marker = spec.split(":", 2)
    if step == want_step and str(task) == want_task and not os.path.exists(marker):
        open(marker, "w").close()
        os.kill(os.getpid(), 9)


def pack(inputs, out_dir, max_seq_len, *, tasks=None, write_tasks=None, threads=1,
         max_retries=3, prepack_bin=None, ray_remote_args=None, **options):
    """Packs `inputs` into the shard set `out_dir` with pack's options
    (algo, overlong, max_seqs_per_row, shuffle, seed, rows_per_frame,
    shard_rows, level, token_dtype, format, field, doc_sep, sep_position,
    allow_trailing_bytes, batch_size) as Ray tasks: `tasks` scan tasks
    (default: the cluster's CPUs) and `write_tasks` write tasks (default:
    tasks). Each write task compresses on `threads` threads. Returns the
    finalize step's result (rows, shards, bytes) with every step's under
    "steps". Needs Ray (pip install ray) and a running or local cluster."""
    args = _command_args(inputs, out_dir, max_seq_len, options)
    bin_ = find_command(prepack_bin)
    import ray

    if not ray.is_initialized():
        ray.init()
    if tasks is None:
        tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    write_tasks = tasks if write_tasks is None else write_tasks
    if tasks < 1 or write_tasks < 1:
        raise ValueError("tasks and write_tasks must be at least 1")
    remote = ray.remote(max_retries=max_retries, retry_exceptions=[RuntimeError],
                        **(ray_remote_args or {}))(run_step)
    scans = ray.get([remote.remote(bin_, "scan", args + ["--task-count", str(tasks)], t)
                     for t in range(tasks)])
    plan = ray.get(remote.remote(bin_, "plan", args + ["--scan-tasks", str(tasks)]))
    write_args = args + ["--task-count", str(write_tasks), "--threads", str(threads)]
    writes = ray.get([remote.remote(bin_, "write", write_args, t)
                      for t in range(write_tasks)])
    final = ray.get(remote.remote(bin_, "finalize",
                                  args + ["--write-tasks", str(write_tasks)]))
    final["steps"] = {"scan": scans, "plan": plan, "write": writes}
    return final
