"""python -m prepack pack|stats|export: the command line's jobs that need
Python's libraries: pack and stats for Parquet (.parquet) and Arrow IPC
(.arrow, .feather) inputs, through prepack.pack_dataset (the options are
`prepack pack`'s; errors name the file, row group and row), and export
of a shard set to another trainer's packed format (prepack.export).
Exit 1 on bad input, 2 on a usage error."""
import argparse
import json
import sys

from . import _native


def _parser():
    p = argparse.ArgumentParser(prog="python -m prepack",
                                description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("pack", "stats"):
        c = sub.add_parser(name, help=f"as 'prepack {name}', for Parquet and "
                                      f"Arrow inputs")
        c.add_argument("inputs", nargs="+", metavar="INPUT")
        c.add_argument("--max-seq-len", type=int, required=True)
        c.add_argument("--algo", choices=list(_native.ALGOS), default="ffd")
        c.add_argument("--overlong", choices=list(_native._OVERLONG),
                       default="error")
        c.add_argument("--max-seqs-per-row", type=int, default=0)
        c.add_argument("--field", default="input_ids",
                       help="the token column (default: input_ids)")
        c.add_argument("--token-dtype", choices=["auto", "uint16", "uint32"],
                       default="auto")
        c.add_argument("--tmp-dir")
        c.add_argument("--batch-size", type=int, default=8)
        c.add_argument("--json", action="store_true",
                       help="print the plan's figures as one JSON object")
        if name == "pack":
            c.add_argument("-o", "--output", required=True)
            c.add_argument("--rows-per-frame", type=int, default=0)
            size = c.add_mutually_exclusive_group()
            size.add_argument("--shard-rows", type=int, default=0)
            size.add_argument("--shard-bytes", type=_size, default=0)
            c.add_argument("--level", type=int, default=0)
            c.add_argument("--threads", type=int, default=1)
            c.add_argument("--overwrite", action="store_true")
            c.add_argument("--shuffle", action="store_true")
            c.add_argument("--seed", type=int, default=0)
    e = sub.add_parser("export", help="a shard set into another trainer's "
                                      "packed format (docs/EXPORT.md)")
    e.add_argument("set", metavar="SET")
    e.add_argument("--to", required=True,
                   choices=["hf", "hf-parquet", "nemo-npy", "nemo-parquet"])
    e.add_argument("-o", "--output", required=True)
    return p


def missing_package(e):
    """One line for an ImportError: the package missing and the pip
    install that brings it (each of prepack's packages installs under
    its module's name)."""
    name = (e.name or "").split(".")[0]
    if not name:
        return f"prepack: {e}"
    return (f"prepack: {sys.executable} has no Python package {name!r} "
            f"({e}): pip install {name}")


def _size(text):
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    scale = units.get(text[-1:].lower(), 1)
    digits = text[:-1] if scale > 1 else text
    if not digits.isdigit():
        raise argparse.ArgumentTypeError(f"a size such as 512M, not {text!r}")
    return int(digits) * scale


def main(argv=None):
    a = _parser().parse_args(argv)
    if a.command == "export":
        from ._shards import ShardSetError
        from .exporting import export
        try:
            n = export(a.set, a.to, a.output)
        except ImportError as e:  # pyarrow, datasets: imported on use
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
                  batch_size=a.batch_size)
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
        print(f"prepack: {e}", file=sys.stderr)
        return 1
    except RuntimeError as e:  # no libprepack
        print(f"prepack: {e}", file=sys.stderr)
        return 1
    if a.json:
        print(json.dumps(stats))
    else:
        print(f"sequences {stats['sequences']:,}, tokens "
              f"{stats['input_tokens']:,}: {stats['rows']:,} rows of "
              f"{a.max_seq_len} (lower bound {stats['lower_bound']:,}), "
              f"efficiency {100 * stats['efficiency']:.3f}%"
              + (f"; written to {a.output}" if a.command == "pack" else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
