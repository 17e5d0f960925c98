"""python -m prepack: the prepack command's jobs that need Python's
libraries, with its options. pack and stats read Parquet (.parquet) and
Arrow IPC (.arrow, .feather) datasets, and text (JSONL too) with
--tokenizer, through prepack.pack_dataset; given only JSON lines of token
ids or Megatron token files, they run the prepack command on them, which
reads those. export writes a shard set in another trainer's packed format
(prepack.export); scan, plan, write and finalize are a text job's steps
(prepack.steps).

Errors name the file, row group and row, or line. Exit 1 on bad input or
a missing optional package (one line naming the pip extra to install), 2
on a usage error."""
import argparse
import json
import os
import sys

from . import _native, _option_values, _optional, _options


def _parser():
    p = argparse.ArgumentParser(prog="python -m prepack",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("-V", "--version", action=_Version, nargs=0,
                   help="show the version (as 'prepack --version')")
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("pack", "stats"):
        c = sub.add_parser(
            name, help=f"as 'prepack {name}': Parquet, Arrow and text "
                       f"(--tokenizer); token files through the command",
            description=f"'prepack {name}' of Parquet (.parquet) and Arrow "
                        f"IPC (.arrow, .feather) datasets, and of text "
                        f"(JSONL, Parquet, Arrow) with --tokenizer, with "
                        f"the command's options; JSON lines of token ids "
                        f"and Megatron token files are read by the "
                        f"prepack command, which this runs on them.")
        _add_job_options(c, pack=name == "pack")
    e = sub.add_parser("export", help="a shard set into another trainer's "
                                      "packed format (docs/EXPORT.md)")
    e.add_argument("set", metavar="SET")
    e.add_argument("--to", required=True,
                   choices=["hf", "hf-parquet", "nemo-npy", "nemo-parquet"])
    e.add_argument("-o", "--output", required=True)
    e.add_argument("--pad-id", type=int, metavar="EOS",
                   help="nemo-npy, nemo-parquet of a set packed with "
                        "--pad-multiple (required there): the tokenizer's "
                        "EOS id, with which each sequence is padded to the "
                        "multiple as NeMo's packer pads it")
    return p


# The options of `prepack pack` and `prepack stats` come from their one
# definition, src/cli/options.def (as _options.py, which
# scripts/gen_options.py writes from it); tests/python/test_front_ends.py
# holds the two front ends to it. Python's own options are these:
def _add_text_options(c):
    """Text in (prepack.text): the options are python -m prepack's alone;
    `prepack pack --tokenizer` says to run this."""
    c.add_argument("--tokenizer", metavar="PATH",
                   help="the inputs hold text, prompt-completion pairs or "
                        "conversations (JSONL, Parquet, Arrow), tokenized "
                        "with this Hugging Face tokenizer directory "
                        "(tokenizer.json, tokenizer_config.json) or "
                        "tiktoken encoding file (r50k_base.tiktoken, "
                        "cl100k_base.tiktoken, ...: named for its encoding)")
    c.add_argument("--chat-template", metavar="FILE",
                   help="a Jinja chat template in place of the tokenizer's")
    c.add_argument("--assistant-only-loss", action="store_true",
                   help="conversations: train only the assistant's tokens "
                        "(the template's {%% generation %%} blocks)")
    c.add_argument("--all-tokens-loss", action="store_true",
                   help="prompt-completion: train the prompt too (default: "
                        "the completion only, as TRL)")
    c.add_argument("--no-eos", action="store_true",
                   help="do not append EOS to text and completions")
    c.add_argument("--text-field", default="text",
                   help="the language-modelling column (default: text)")
    c.add_argument("--untrained", choices=("error", "drop"),
                   default="error",
                   help="a record with no token to train (its loss mask "
                        "all zeros): an error (the default), or drop it "
                        "and count it")
    c.add_argument("--workers", type=_int_in(1, 1024), default=None,
                   metavar="N",
                   help="tokenize in N processes (default: the cores this "
                        "process may use; the output is the same for any "
                        "N)")
    c.add_argument("--save-tokens", metavar="PATH",
                   help="also keep the tokenized sequences, for 'prepack "
                        "pack PATH' at another L: PATH.jsonl.zst (.jsonl, "
                        ".jsonl.gz; loss masks too) or a Megatron pair "
                        "PREFIX.bin + PREFIX.idx (no masks), written when "
                        "the run succeeds (docs/TEXT.md)")


def _text_options(a):
    """The text options as pack_dataset takes them ({} without
    --tokenizer; a text option without it is a usage error)."""
    if a.tokenizer is None:
        return {}
    return dict(tokenizer=a.tokenizer, chat_template=a.chat_template,
                assistant_only_loss=a.assistant_only_loss,
                completion_only_loss=not a.all_tokens_loss,
                add_eos=not a.no_eos, text_field=a.text_field,
                untrained=a.untrained, workers=a.workers,
                save_tokens=a.save_tokens)


def _add_job_options(c, pack):
    _add_text_options(c)
    c.add_argument("inputs", nargs="+", metavar="INPUT")
    cmd = "pack" if pack else "stats"
    for o in _options.OPTIONS:  # the command's, src/cli/options.def
        if cmd in o["module"]:
            _add_option(c, o, cmd)


def _add_option(c, o, cmd):
    """One option of src/cli/options.def (through _options.py), as the
    command takes it: its names, metavar, help (the command's words,
    argparse rewraps them), default and the command's check of a value
    and usage error ("--level must be 1..22, not '23'")."""
    names = ([f"-{o['short']}"] if o["short"] else []) + [f"--{o['name']}"]
    text = " ".join(o["help"][cmd].split()).replace("%", "%%")
    if o["kind"] == "flag":
        c.add_argument(*names, action="store_true", help=text)
        return
    default = o["default"]
    if o["name"] == "threads":  # the command's: the cores available
        default = _cores()
    c.add_argument(*names, type=_value_of(o), default=default,
                   required=o["required"], metavar=o["metavar"], help=text)


def _value_of(o):
    """An argparse type: a value read as the command reads it
    (_option_values), refused in its words."""
    def parse(text):
        try:
            return _option_values.parse(o, text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))
    parse.__name__ = o["name"]  # argparse names a type in some errors
    return parse


class _Version(argparse.Action):
    """--version: `prepack --version`'s line, read from libprepack (only
    when asked), then exit 0."""

    def __call__(self, parser, namespace, values, option_string=None):
        try:
            line = _native.version_line()
        except RuntimeError as e:  # no libprepack: the package's version
            from . import __version__
            line = f"prepack {__version__} (libprepack not loaded: {e})"
        print(line)
        parser.exit()


# Inputs the prepack command reads and pack_dataset does not (without
# --tokenizer): JSON lines of token ids, Megatron .bin/.idx token files
_COMMAND_INPUTS = (".jsonl", ".jsonl.zst", ".jsonl.gz", ".json", ".json.zst",
                   ".json.gz", ".bin", ".idx")


def _run_command(argv):
    """pack or stats of token files: the prepack command on the same
    arguments (its options are these, tests/python/test_front_ends.py);
    its exit status."""
    import subprocess
    from .steps import find_command
    try:
        command = find_command()
    except FileNotFoundError:
        print("prepack: JSON lines of token ids and Megatron token files "
              "are read by the prepack command, and none was found "
              "($PREPACK_BIN, beside this Python or on PATH)",
              file=sys.stderr)
        return 1
    return subprocess.run([command, *argv]).returncode


def _int_in(lo, hi):
    """An argparse type: an integer in lo..hi, as the command checks."""
    def parse(text):
        try:
            v = int(text)
        except ValueError:
            v = None
        if v is None or not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"an integer in {lo}..{hi}, "
                                             f"not {text!r}")
        return v
    return parse


def _cores():
    """--threads' default, as the command's: the cores this process may
    run on (its affinity mask), at most 256."""
    return max(1, min(256, len(os.sched_getaffinity(0))))


def missing_package(e):
    """One line for an ImportError: the package missing and the pip
    install that brings it (each of prepack's packages installs under
    its module's name)."""
    name = (e.name or "").split(".")[0]
    if not name:
        return f"prepack: {e}"
    return (f"prepack: {sys.executable} has no Python package {name!r} "
            f"({e}): pip install {name}")


def main(argv=None):
    """The command; a TextWarning printed as one line, Ctrl-C as exit 130
    without a traceback."""
    import warnings
    with warnings.catch_warnings():
        warnings.showwarning = _show_warning(warnings.showwarning)
        try:
            return _main(argv)
        except _optional.MissingPackage as e:  # one line, the extra
            print(f"prepack: {e}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print("prepack: interrupted", file=sys.stderr)
            return 130


def _show_warning(default):
    """warnings.showwarning printing prepack's TextWarning as
    "prepack: warning: ..." (its message names the record), others as
    Python does."""
    def show(message, category, *args, **kwargs):
        from .text import TextWarning
        if issubclass(category, TextWarning):
            print(f"prepack: warning: {message}", file=sys.stderr)
        else:
            default(message, category, *args, **kwargs)
    return show


def _main(argv):
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] in ("scan", "plan", "write", "finalize"):
        from .steps import main as step  # a text job's steps
        return step(argv)
    p = _parser()
    a = p.parse_args(argv)
    if a.command == "pack" and a.shard_rows and a.shard_bytes:
        p.error("--shard-rows or --shard-bytes, not both")  # the command's
    if a.command != "export" and a.pad_multiple > 1 \
            and a.max_seq_len % a.pad_multiple:
        p.error(f"--max-seq-len {a.max_seq_len} is not a multiple of "
                f"--pad-multiple {a.pad_multiple}")
    if a.command != "export" and a.tokenizer is None and (
            a.chat_template or a.assistant_only_loss or a.all_tokens_loss
            or a.no_eos or a.text_field != "text" or a.workers
            or a.untrained != "error" or a.save_tokens):
        p.error("the text options need --tokenizer")
    if a.command != "export" and a.tokenizer is None and all(
            i.endswith(_COMMAND_INPUTS) for i in a.inputs):
        return _run_command(argv)
    if a.command == "export":
        from ._shards import ShardSetError
        from .exporting import export
        try:
            n = export(a.set, a.to, a.output, pad_id=a.pad_id)
        except _optional.MissingPackage:
            raise  # main's one line
        except ImportError as e:  # a package's own broken import
            print(missing_package(e), file=sys.stderr)
            return 1
        except (ShardSetError, ValueError, OSError) as e:
            print(f"prepack: {e}", file=sys.stderr)
            return 1
        print(f"{n:,} packs written to {a.output} ({a.to})")
        return 0
    from .dataset import pack_dataset, stats_dataset
    common = dict(max_seq_len=a.max_seq_len, column=a.field, algo=a.algo,
                  overlong=a.overlong, max_seqs_per_row=a.max_seqs_per_row,
                  token_dtype=a.token_dtype, tmp_dir=a.tmp_dir,
                  batch_size=a.batch_size, pad_multiple=a.pad_multiple,
                  svg=a.svg, progress=False if a.quiet else None,
                  **_text_options(a))
    try:
        if a.command == "pack":
            stats = pack_dataset(a.inputs, a.output, shuffle=a.shuffle,
                                 seed=a.seed, rows_per_frame=a.rows_per_frame,
                                 shard_rows=a.shard_rows,
                                 shard_bytes=a.shard_bytes, level=a.level,
                                 threads=a.threads, overwrite=a.overwrite,
                                 **common)
        else:
            stats = stats_dataset(a.inputs, **common)
    except ValueError as e:  # DatasetError and the library's messages
        print(f"prepack: {_native.command_words(str(e))}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # no libprepack
        print(f"prepack: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(stats))
    else:
        print(stats)  # the report's table, as `prepack pack` prints it
        if stats.get("untrained_dropped"):
            print(f"{stats['untrained_dropped']:,} records dropped: no "
                  f"token to train (--untrained drop)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
