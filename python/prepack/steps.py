"""Pack in steps on Ray: `prepack scan` as N Ray tasks, `prepack plan` as
one, `prepack write` as M, `prepack finalize` last (docs/SCALE.md). The
shard set is byte-identical to one `prepack pack` of the same inputs and
options, for any N and M.

The work is the command's; Ray only starts the steps, passes the task
indices and retries: a task whose worker dies (a node lost, a process
killed) is rerun by Ray (`max_retries`), and a rerun of a task whose output
is already there and verifies does nothing. Paths must be the same on
every node (a shared file system), and the `prepack` command must be on
the nodes (pip install prepack-tokens puts it beside the Python that runs
Ray's workers; or give `prepack_bin`).

    import prepack.steps
    report = prepack.steps.pack(["a.jsonl", "b.bin"], "shards/",
                                max_seq_len=4096, tasks=64)

starts a local Ray when none is initialized (ray.init(address=address):
RAY_ADDRESS or a cluster `ray start` began on this machine, else a new
local one), or runs on the one the caller initialized.

Text (tokenizer=..., docs/SCALE.md "Text in steps"): each scan task
tokenizes its part in the Ray worker (scan_text, also `python -m prepack
scan --tokenizer`); plan, write and finalize are the command's, given the
key of the tokenizer and text options (text_key, --text-key).
"""
import ctypes
import hashlib
import json
import os
import shutil
import subprocess
import sys

from . import _optional

__all__ = ["pack", "scan_text", "text_key", "StepError"]


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
    raise FileNotFoundError("no prepack command: pip install prepack-tokens "
                            "on every node, or pass prepack_bin=")


def run_step(prepack_bin, step, args, task=None, cwd=None):
    """Runs one step; returns its --json result. Exit 1 and 2 (bad input,
    usage) raise StepError; anything else (a signal, a lost node) raises
    RuntimeError, which Ray retries. cwd: the caller's directory, where
    relative paths are (a Ray worker starts elsewhere), when this node
    has it."""
    _maybe_die_for_test(step, task)
    cmd = [prepack_bin, step, *args, "--json"]
    if task is not None:
        cmd += ["--task-index", str(task)]
    p = subprocess.run(cmd, capture_output=True, text=True,
                       cwd=cwd if cwd and os.path.isdir(cwd) else None)
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


_TEXT_ARGS = ("tokenizer", "chat_template", "assistant_only_loss",
              "completion_only_loss", "add_eos", "text_field", "untrained",
              "workers")


def _scan_text_task(inputs, out_dir, task, tasks, token_dtype, text):
    """A Ray task: scan_text in the worker (StepError is not retried)."""
    _maybe_die_for_test("scan", task)
    return scan_text(inputs, out_dir, task, tasks, token_dtype=token_dtype,
                     **text)


def pack(inputs, out_dir, max_seq_len, *, tasks=None, write_tasks=None, threads=1,
         max_retries=3, prepack_bin=None, ray_remote_args=None, address=None,
         **options):
    """Packs `inputs` into the shard set `out_dir` with pack's options
    (algo, overlong, max_seqs_per_row, shuffle, seed, rows_per_frame,
    shard_rows, level, token_dtype, format, field, doc_sep, sep_position,
    allow_trailing_bytes, batch_size) as Ray tasks: `tasks` scan tasks
    (default: the cluster's CPUs) and `write_tasks` write tasks (default:
    tasks). Each write task compresses on `threads` threads. Returns the
    finalize step's result (rows, shards, bytes) with every step's under
    "steps". Needs Ray (pip install ray). When Ray is not initialized,
    ray.init(address=address): address None joins the cluster RAY_ADDRESS
    names or one `ray start --head` began on this machine, else starts a
    local Ray, as Ray's own examples do; "auto" or "HOST:6379" joins that
    cluster or fails (docs/SCALE.md).

    Text: with `tokenizer` (a path every node reads) and the other text
    options of pack_dataset (chat_template, assistant_only_loss,
    completion_only_loss, add_eos, text_field, workers), each scan task
    tokenizes its part of the JSON-lines inputs in the Ray worker
    (scan_text); the set is byte-identical to pack_dataset's."""
    text = {k: options.pop(k) for k in list(options) if k in _TEXT_ARGS}
    args = _command_args(inputs, out_dir, max_seq_len, options)
    if text.get("tokenizer") is not None:
        args += ["--text-key", text_key(**{k: v for k, v in text.items()
                                           if k != "workers"})]
    bin_ = find_command(prepack_bin)
    ray = _optional.require("ray", "ray", "prepack.steps.pack")

    if not ray.is_initialized():
        ray.init(address=address)
    if tasks is None:
        tasks = max(1, int(ray.cluster_resources().get("CPU", 1)))
    write_tasks = tasks if write_tasks is None else write_tasks
    if tasks < 1 or write_tasks < 1:
        raise ValueError("tasks and write_tasks must be at least 1")
    here = os.getcwd()  # relative paths are the caller's
    remote = ray.remote(max_retries=max_retries, retry_exceptions=[RuntimeError],
                        **(ray_remote_args or {}))(run_step)
    if text.get("tokenizer") is not None:
        scan = ray.remote(max_retries=max_retries,
                          retry_exceptions=[RuntimeError],
                          **(ray_remote_args or {}))(_scan_text_task)
        dtype = options.get("token_dtype") or "auto"
        scans = ray.get([scan.remote(inputs, out_dir, t, tasks, dtype, text)
                         for t in range(tasks)])
    else:
        scans = ray.get([remote.remote(bin_, "scan",
                                       args + ["--task-count", str(tasks)], t,
                                       here)
                         for t in range(tasks)])
    plan = ray.get(remote.remote(bin_, "plan",
                                 args + ["--scan-tasks", str(tasks)], None, here))
    write_args = args + ["--task-count", str(write_tasks), "--threads", str(threads)]
    writes = ray.get([remote.remote(bin_, "write", write_args, t, here)
                      for t in range(write_tasks)])
    final = ray.get(remote.remote(bin_, "finalize",
                                  args + ["--write-tasks", str(write_tasks)],
                                  None, here))
    final["steps"] = {"scan": scans, "plan": plan, "write": writes}
    return final


# ---- text: scan tasks that tokenize their part ---------------------------

# The text options a text job's key covers (text.OPTIONS but the loaded
# tokenizer: a path here, which each task loads), and the group column.
_TEXT_KEYED = ("chat_template", "assistant_only_loss", "completion_only_loss",
               "add_eos", "text_field", "untrained")


def _file_digest(h, path):
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)


def text_key(tokenizer, group="group", **text_options):
    """The key of how a text job tokenizes: the tokenizer's files (a
    directory's every file, by name and content; a tiktoken file's name,
    which names its encoding, and content), the chat template's text, the
    other text options and the group column. Every step of a text job
    takes it (the command's --text-key), so that a scan made with another
    tokenizer or other options is refused by the plan, never mixed in."""
    if not isinstance(tokenizer, (str, os.PathLike)):
        raise ValueError("the steps load the tokenizer in every task: give "
                         "its path, not a loaded tokenizer")
    from . import text as ptext
    options = dict(ptext.OPTIONS, **text_options)
    unknown = set(text_options) - set(ptext.OPTIONS)
    if unknown:
        raise TypeError(f"unexpected text options {sorted(unknown)}")
    h = hashlib.sha256(b"prepack-text-steps-1\0")
    path = os.fspath(tokenizer)
    if os.path.isdir(path):
        for name in sorted(os.listdir(path)):
            full = os.path.join(path, name)
            if os.path.isfile(full):
                h.update(name.encode() + b"\0")
                _file_digest(h, full)
                h.update(b"\0")
    elif os.path.isfile(path):
        h.update(os.path.basename(path).encode() + b"\0")
        _file_digest(h, path)
    else:
        raise ValueError(f"{path}: no such tokenizer directory or tiktoken "
                         f"file")
    template = options.get("chat_template")
    if template is not None:
        h.update(b"template\0")
        _file_digest(h, os.fspath(template))
    keyed = {k: options.get(k) for k in _TEXT_KEYED if k != "chat_template"}
    keyed["group"] = group
    h.update(json.dumps(keyed, sort_keys=True).encode())
    return "text:" + h.hexdigest()


_TEXT_FILES = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.zst",
               ".json.gz")


def _group_bytes(v):
    return None if v is None else json.dumps(
        v, sort_keys=True, separators=(",", ":")).encode()


class _Ends:
    """Each part's first and last records' group values (the tokenized
    batches the reader hands its save_tokens hook), for the plan to join a
    group cut between two tasks."""

    def __init__(self, group):
        self.group, self.names, self.first, self.last = group, [], [], []

    def begin_input(self):
        self.names.append(None)
        self.first.append(None)
        self.last.append(None)
        self.started = False

    def add(self, batch, where):
        self.names[-1] = where.name
        if batch.num_rows == 0:
            return
        if self.group in batch.schema.names:
            values = batch.column(self.group).to_pylist()
        else:
            values = [None] * batch.num_rows
        if not self.started:
            self.first[-1] = _group_bytes(values[0])
            self.started = True
        self.last[-1] = _group_bytes(values[-1])

    def per_range(self, paths):
        """(first, last) per range: the inputs the reader began matched to
        the ranges in order by name, as prepack_step_scan_save matches the
        store's (a range without a record began none)."""
        first, last, k = [None] * len(paths), [None] * len(paths), 0
        for i, path in enumerate(paths):
            if k < len(self.names) and self.names[k] == path:
                first[i], last[i] = self.first[k], self.last[k]
                k += 1
        return first, last


def _step_options(inputs, token_dtype, key):
    from . import _native
    paths = [os.fsencode(os.fspath(p)) for p in inputs]
    array = (ctypes.c_char_p * max(1, len(paths)))(*paths)
    o = _native.StepOptions()
    o.inputs = ctypes.cast(array, ctypes.POINTER(ctypes.c_char_p))
    o.ninputs = len(paths)
    o.store.dtype = _native.enum_value("dtype", token_dtype)
    o.text_key = key.encode()
    return o, array


def scan_text(inputs, out_dir, task, task_count, *, token_dtype="auto",
              group="group", read_rows=None, **text_options):
    """Scan task `task` of `task_count` of a text job: tokenizes its part
    of `inputs` (JSON lines: a plain file cut at line starts among the
    tasks as `prepack scan` cuts token files, a compressed one whole) as
    pack_dataset does (prepack.text: the same ids, masks, groups and
    errors) and saves what `prepack plan` needs in out_dir/.prepack-job.
    Plan, write and finalize are the command's, given the same inputs and
    options and --text-key text_key(...) (python -m prepack plan|write|
    finalize --tokenizer ... passes it). Returns the task's result (a
    dict: already_done, sequences, tokens, bytes_written); a task whose
    output is there and verifies does nothing. untrained="drop" is
    refused (a dropped record at a task's cut would decide a join)."""
    from . import _native
    from .dataset import DatasetError, TextPart, read_text_parts
    if text_options.get("untrained", "error") != "error":
        raise ValueError("untrained='drop' is not taken by the steps yet: "
                         "pack in one process (pack_dataset)")
    for path in map(os.fspath, inputs):
        if not path.endswith(_TEXT_FILES):
            raise StepError(f"{path}: the steps take text as JSON lines "
                            f"({', '.join(_TEXT_FILES)}); pack Parquet and "
                            f"Arrow in one process (pack_dataset)")
    key = text_key(group=group, **{k: v for k, v in text_options.items()
                                   if k != "workers"})
    # a missing package before the job's directory is made
    _optional.require("pyarrow", "text", "text in steps")
    _optional.require("transformers", "text", "text in steps")
    if not os.path.isdir(os.fspath(text_options.get("tokenizer", ""))):
        _optional.require("tiktoken", "text", "a tiktoken file")
    lib = _native.library()
    o, keep = _step_options(inputs, token_dtype, key)
    ranges = (_native.StepRange * max(1, len(inputs)))()
    n = ctypes.c_size_t()
    scanner, store = ctypes.c_void_p(), ctypes.c_void_p()
    res, diag = _native.StepResult(), _native.Diag()
    rc = lib.prepack_step_scan_open(
        ctypes.byref(scanner), os.fsencode(os.fspath(out_dir)),
        ctypes.byref(o), task, task_count, ranges, ctypes.byref(n),
        ctypes.byref(store), ctypes.byref(res), ctypes.byref(diag))
    if rc != 0:
        raise StepError(_native.diag_message(diag, rc))
    try:
        if not res.already_done:
            parts = []
            for r in ranges[:n.value]:
                path = os.fspath(inputs[r.input])
                parts.append(path if r.whole else
                             TextPart(path, r.begin, r.end))
            ends = _Ends(group)
            try:
                read_text_parts(store, parts, group, read_rows, ends,
                                **text_options)
            except DatasetError as e:
                raise StepError(str(e)) from None
            firsts, lasts = ends.per_range([os.fspath(p) for p in parts])
            first = (ctypes.c_char_p * max(1, len(parts)))(*firsts)
            last = (ctypes.c_char_p * max(1, len(parts)))(*lasts)
            rc = lib.prepack_step_scan_save(scanner, first, last,
                                            ctypes.byref(res),
                                            ctypes.byref(diag))
            if rc != 0:
                raise StepError(_native.diag_message(diag, rc))
    finally:
        lib.prepack_step_scan_free(scanner)
    del keep
    return {"step": "scan", "task": task, "tasks": task_count,
            "already_done": bool(res.already_done),
            "sequences": res.sequences, "tokens": res.tokens,
            "bytes_written": res.bytes_written}


# ---- python -m prepack scan|plan|write|finalize --tokenizer --------------

def _text_parser(full):
    """The text options (and, full: what a text scan task takes besides)."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m prepack STEP", add_help=full,
                                allow_abbrev=False)
    p.add_argument("--tokenizer", required=True)
    p.add_argument("--chat-template")
    p.add_argument("--assistant-only-loss", action="store_true")
    p.add_argument("--all-tokens-loss", action="store_true")
    p.add_argument("--no-eos", action="store_true")
    p.add_argument("--text-field", default="text")
    p.add_argument("--untrained", choices=("error", "drop"), default="error")
    p.add_argument("--workers", type=int)
    p.add_argument("--save-tokens")
    if full:
        p.add_argument("inputs", nargs="+")
        p.add_argument("-o", "--output", required=True)
        p.add_argument("--max-seq-len", required=True)
        p.add_argument("--token-dtype", default="auto")
        p.add_argument("--task-index", type=int)
        p.add_argument("--task-count", type=int)
        p.add_argument("--json", action="store_true")
        p.add_argument("--quiet", action="store_true")
        for name, flag in _OPTIONS.items():  # the plan's: checked there
            if name != "token_dtype":
                p.add_argument(flag, dest=name)
        for name, flag in _SWITCHES.items():
            p.add_argument(flag, dest=name, action="store_true")
        p.add_argument("--pad-multiple")
        p.add_argument("--threads")
    return p


def _text_of(a):
    return dict(tokenizer=a.tokenizer, chat_template=a.chat_template,
                assistant_only_loss=a.assistant_only_loss,
                completion_only_loss=not a.all_tokens_loss,
                add_eos=not a.no_eos, text_field=a.text_field,
                untrained=a.untrained)


def main(argv, prepack_bin=None):
    """python -m prepack scan|plan|write|finalize ... --tokenizer T: a text
    job's steps. scan tokenizes the task's part here (scan_text); plan,
    write and finalize run the prepack command with the same arguments but
    the text options, and --text-key. Returns the exit status."""
    step = argv[0]
    a, rest = _text_parser(False).parse_known_args(argv[1:])
    if a.save_tokens:
        print(f"python -m prepack {step}: --save-tokens is pack's in one "
              f"process", file=sys.stderr)
        return 2
    text = _text_of(a)
    try:
        key = text_key(**text)
    except ValueError as e:
        print(f"prepack {step}: {e}", file=sys.stderr)
        return 1
    if step != "scan":
        try:
            cmd = [find_command(prepack_bin), step, *rest, "--text-key", key]
        except FileNotFoundError as e:
            print(f"prepack {step}: {e}", file=sys.stderr)
            return 1
        return subprocess.run(cmd).returncode
    a = _text_parser(True).parse_args(argv[1:])
    for name in ("format", "field", "doc_sep", "sep_position",
                 "allow_trailing_bytes"):
        if getattr(a, name):
            print(f"python -m prepack scan: --{name.replace('_', '-')} is "
                  f"for token inputs, not text", file=sys.stderr)
            return 2
    task = a.task_index
    if task is None and os.environ.get("SLURM_ARRAY_TASK_ID", "").isdigit():
        task = int(os.environ["SLURM_ARRAY_TASK_ID"])
    if task is None or a.task_count is None or a.task_count < 1 \
            or not 0 <= task < a.task_count:
        print("python -m prepack scan: --task-index I (or a Slurm array's "
              "SLURM_ARRAY_TASK_ID) below --task-count N is required",
              file=sys.stderr)
        return 2
    try:
        out = scan_text(a.inputs, a.output, task, a.task_count,
                        token_dtype=a.token_dtype, workers=a.workers, **text)
    except (StepError, ValueError) as e:
        print(f"prepack scan: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(out))
    elif out["already_done"]:
        print(f"prepack scan task {task} of {a.task_count}: already done in "
              f"{a.output}", file=sys.stderr)
    else:
        print(f"prepack scan task {task} of {a.task_count}: "
              f"{out['sequences']:,} sequences, {out['tokens']:,} tokens",
              file=sys.stderr)
    return 0
