"""Shard sets into the packed formats other trainers read (docs/EXPORT.md).

    prepack.export("shards/", "hf", "packed_ds/")       # datasets.save_to_disk
    prepack.export("shards/", "hf-parquet", "packed/")  # Parquet files

`hf` and `hf-parquet`: one row a pack with the columns TRL's
`pack_dataset` gives packed rows: `input_ids` (the pack's tokens),
`seq_lengths` (its sequences' lengths, from which TRL's padding-free
collator, `DataCollatorForLanguageModeling(padding_free=True)`, builds
`position_ids` that restart per sequence) and, when the set has a loss
mask, `labels` (the token, or -100 where it is not trained; the collator
sets -100 at each sequence's first token as well), so TRL's SFTTrainer and
collator take the dataset as already packed. Rows keep the set's order.

`nemo-npy` and `nemo-parquet`: the packs NeMo's and Megatron-Bridge's
GPTSFTPackedDataset read, `{input_ids, loss_mask, seq_start_id}` with the
loss mask shifted as their packer writes it, in `training_{L}.npy` (an
object array of dicts: np.load needs allow_pickle=True) or
`training_{L}.idx.parquet`, and the packing metadata in
`{L}_metadata.jsonl`, in their units (a sequence of n tokens counts
n - 1). A set packed with --pad-multiple M has each sequence padded with
pad_id (the tokenizer's EOS) as their packer pads under pad_seq_to_mult.
"""
import os
import stat

import numpy as np

from . import _optional
from ._files import beside
from ._shards import ShardSet

FORMATS = ("hf", "hf-parquet", "nemo-npy", "nemo-parquet")
_PARQUET_ROWS = 100_000  # rows a Parquet file


def _hf_columns(shards, rows):
    ids, lengths, labels = [], [], []
    masked = False
    for i in rows:
        r = shards[i]
        tokens = np.asarray(r["input_ids"], dtype=np.int64)
        ids.append(tokens)
        lengths.append(np.diff(np.asarray(r["cu_seqlens"], dtype=np.int64)))
        mask = r.get("loss_mask")
        masked |= mask is not None
        labels.append(tokens if mask is None else
                      np.where(np.asarray(mask) == 1, tokens, -100))
    return ids, lengths, labels if masked else None


def _table(ids, lengths, labels):
    pa = _optional.require("pyarrow", "arrow", "export --to hf")
    columns = {"input_ids": pa.array([a.tolist() for a in ids],
                                     type=pa.list_(pa.int64())),
               "seq_lengths": pa.array([a.tolist() for a in lengths],
                                       type=pa.list_(pa.int64()))}
    if labels is not None:
        columns["labels"] = pa.array([a.tolist() for a in labels],
                                     type=pa.list_(pa.int64()))
    return pa.table(columns)


def _nemo_rows(shards, rows, pad_id=None):
    """Packs as NeMo's and Megatron-Bridge's packers fill them
    (iter_packing_strategy): input_ids concatenated; loss_mask shifted,
    loss_mask[i] saying whether token i + 1 of the same sequence is a
    target (False at each sequence's last token); seq_start_id the starts
    without the end.

    A set packed with --pad-multiple M (context parallelism): each
    sequence of n tokens is followed by ceil(n / M) x M - n + 1 pad_id
    tokens, never trained, as Megatron-Bridge's
    src/megatron/bridge/data/datasets/packed_sequence.py, tokenize_dataset
    (pre_pad_dataset: "input_ids are truncated by 1 for labels; add 1
    extra pad token") pads under pad_seq_to_mult, with the tokenizer's EOS:
    GPTSFTPackedDataset.collate_fn then takes ceil(n / M) x M inputs of the
    sequence, so every cu_seqlens_padded boundary is a multiple of M, and
    finds the real length by stripping the untrained EOS at its end."""
    m = shards.pad_multiple
    out = []
    for i in rows:
        r = shards[i]
        ids = np.asarray(r["input_ids"], dtype=np.int64)
        cu = np.asarray(r["cu_seqlens"], dtype=np.int64)
        trained = (np.ones(len(ids), bool) if r.get("loss_mask") is None
                   else np.asarray(r["loss_mask"]) == 1)
        shifted = np.zeros(len(ids), bool)
        shifted[:-1] = trained[1:]
        shifted[cu[1:] - 1] = False  # nothing after a sequence's last token
        if m > 1:
            ids, shifted, cu = _nemo_pad(ids, shifted, cu, m, pad_id)
        out.append({"input_ids": ids.tolist(), "loss_mask": shifted.tolist(),
                    "seq_start_id": cu[:-1].tolist()})
    return out


def _nemo_pad(ids, shifted, cu, m, pad_id):
    """A row's sequences each padded with pad_id to a multiple of m, plus
    the one token their inputs lose to the shift (loss mask 0 there)."""
    real = np.diff(cu)
    stored = -(-real // m) * m + 1
    pcu = np.concatenate([[0], np.cumsum(stored)])
    out_ids = np.full(int(pcu[-1]), pad_id, np.int64)
    out_mask = np.zeros(int(pcu[-1]), bool)
    for j, n in enumerate(real):
        lo, src = int(pcu[j]), int(cu[j])
        out_ids[lo:lo + n] = ids[src:src + n]
        out_mask[lo:lo + n] = shifted[src:src + n]
    return out_ids, out_mask, pcu


def _nemo_metadata(packs, max_seq_len):
    """create_packing_strategy's packing_metadata, for
    pack_metadata_file_path, from the packs themselves, in their units: a
    sequence of n stored tokens counts n - 1 (Megatron-Bridge's
    src/megatron/bridge/data/datasets/packing_utils.py, create_hist:
    "seq_len = len(item_dict['input_ids']) - 1", the shifted input/label
    pair; NeMo's nemo/utils/sequence_packing_utils.py, create_hist, the
    same), a pack the sum of those (packed_seq_lens). Their reader relies
    on it: GPTSFTPackedDataset.collate_fn with pad_cu_seqlens takes
    max_seqlen = max(dataset_max_seqlen, max_length - min_packed_seqlen)
    as the bound on every cu_seqlens span, the padding at the end of the
    emptiest row included; raw token counts made it short of that
    padding."""
    lengths = [np.diff(p["seq_start_id"] + [len(p["input_ids"])]) - 1
               for p in packs]
    all_lengths = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
    packed = [int(l.sum()) for l in lengths]
    n = max(len(packs), 1)
    return {"dataset_max_seqlen": int(all_lengths.max(initial=0)),
            "max_samples_per_bin": int(max((len(l) for l in lengths), default=0)),
            "packing_factor": round(len(all_lengths) / n, 2),
            "packing_efficiency": round(sum(packed) / n / max_seq_len * 100, 2),
            "pack_size": int(max_seq_len),
            "min_packed_seqlen": int(min(packed, default=0))}


def _write_nemo(shards, to, tmp, pad_id=None):
    import json
    n, L = len(shards), shards.max_seq_len
    packs = _nemo_rows(shards, range(n), pad_id)
    if to == "nemo-npy":
        # an object array of dicts: np.load(..., allow_pickle=True) reads it
        array = np.empty(len(packs), dtype=object)
        array[:] = packs
        np.save(os.path.join(tmp, f"training_{L}.npy"), array, allow_pickle=True)
    else:
        pa = _optional.require("pyarrow", "arrow",
                               "export --to nemo-parquet")
        pq = _optional.require("pyarrow.parquet", "arrow",
                               "export --to nemo-parquet")
        table = pa.table({
            "input_ids": pa.array([p["input_ids"] for p in packs], type=pa.list_(pa.int32())),
            "loss_mask": pa.array([[int(x) for x in p["loss_mask"]] for p in packs],
                                  type=pa.list_(pa.int8())),
            "seq_start_id": pa.array([p["seq_start_id"] for p in packs],
                                     type=pa.list_(pa.int32()))})
        pq.write_table(table, os.path.join(tmp, f"training_{L}.idx.parquet"),
                       row_group_size=500)
    with open(os.path.join(tmp, f"{L}_metadata.jsonl"), "w") as f:
        f.write(json.dumps([_nemo_metadata(packs, L)]) + "\n")


# Written last in OUT, before the rename: the files of the export and their
# sizes, which `prepack export` (src/cli/export.c) checks before it says
# the export succeeded (docs/EXPORT.md). Hidden, so the consumers'
# loaders (datasets' data-file patterns, NeMo's fixed names) skip it.
DONE_NAME = ".prepack-export"


def _write_done(tmp, to, n):
    lines = ["prepack-export 1", f"format {to}", f"packs {n}"]
    for name in sorted(os.listdir(tmp)):
        st = os.lstat(os.path.join(tmp, name))
        if not stat.S_ISREG(st.st_mode):
            raise OSError(f"{tmp}: {name} is not a plain file; an export "
                          f"holds files only")
        lines.append(f"file {st.st_size} {name}")
    with open(os.path.join(tmp, DONE_NAME), "x") as f:
        f.write("\n".join(lines + ["end"]) + "\n")


def _check_out(out):
    """OUT's parent and name, with OUT refused before any work when it is
    a symbolic link, not a directory, or a directory holding anything.
    The path is spelled as _files.dir_path spells it (`packed/`,
    `./packed`, `a/./packed` name packed) so the staging directory goes
    beside OUT, not inside it."""
    parent, name = beside(out)
    path = os.path.join(parent, name)
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return parent, name
    if stat.S_ISLNK(st.st_mode):
        raise FileExistsError(f"{out} is a symbolic link: give the directory "
                              f"itself (prepack does not write through links)")
    if not stat.S_ISDIR(st.st_mode):
        raise FileExistsError(f"{out} exists and is not a directory")
    if os.listdir(path):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    return parent, name


def _place(tmp, parent, name, out):
    """Renames the finished export over OUT (absent or an empty directory)
    relative to the parent's descriptor: rename follows no link, and one
    planted at OUT since the check is refused, not written through."""
    pfd = os.open(parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        st = os.lstat(name, dir_fd=pfd) if _exists(name, pfd) else None
        if st is not None and not stat.S_ISDIR(st.st_mode):
            raise FileExistsError(f"{out} became a symbolic link or a file "
                                  f"during the export: not replacing it")
        try:
            os.rename(os.path.basename(tmp), name, src_dir_fd=pfd,
                      dst_dir_fd=pfd)
        except OSError as e:
            raise OSError(f"cannot rename the export to {out}: "
                          f"{e.strerror}") from None
        os.fsync(pfd)
    finally:
        os.close(pfd)


def _umask_mode(tmp):
    """mkdtemp's 0700 widened to what mkdir would have made (0777 less
    the umask), as the export's directory had before."""
    mask = os.umask(0o22)
    os.umask(mask)
    os.chmod(tmp, 0o777 & ~mask)


def _exists(name, dir_fd):
    try:
        os.lstat(name, dir_fd=dir_fd)
        return True
    except FileNotFoundError:
        return False


def _write(shards, to, tmp, rows_per_file, pad_id=None):
    n = len(shards)
    if to.startswith("nemo"):
        _write_nemo(shards, to, tmp, pad_id)
    elif to == "hf":
        hf = _optional.require("datasets", "hf", "export --to hf")
        Dataset, concatenate_datasets = hf.Dataset, hf.concatenate_datasets
        parts = [Dataset(_table(*_hf_columns(shards, range(lo, min(n, lo + rows_per_file)))))
                 for lo in range(0, max(n, 1), rows_per_file)]
        ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
        ds.save_to_disk(tmp)
    else:
        pq = _optional.require("pyarrow.parquet", "arrow",
                               "export --to hf-parquet")
        files = max(1, -(-n // rows_per_file))
        for f in range(files):
            lo = f * rows_per_file
            table = _table(*_hf_columns(shards, range(lo, min(n, lo + rows_per_file))))
            pq.write_table(table, os.path.join(
                tmp, f"train-{f:05d}-of-{files:05d}.parquet"))


def _check_pad_id(shards, path, to, pad_id):
    """pad_id: the token NeMo's exports pad a --pad-multiple set's
    sequences with (their tokenizer's EOS, by which their reader finds
    the padding); needed there, an error anywhere else."""
    if pad_id is not None and not (to.startswith("nemo")
                                   and shards.pad_multiple > 1):
        raise ValueError(f"pad_id applies to the nemo formats of a set "
                         f"packed with --pad-multiple; {path} is "
                         f"{'' if shards.pad_multiple > 1 else 'not '}"
                         f"such a set and the format is {to}")
    if pad_id is None and to.startswith("nemo") and shards.pad_multiple > 1:
        raise ValueError(
            f"{path} was packed with --pad-multiple {shards.pad_multiple}: "
            f"the {to} export pads each sequence to it as NeMo's packer "
            f"does, with the tokenizer's EOS id (their reader finds the "
            f"padding by it): give it with --pad-id EOS (prepack.export"
            f"(..., pad_id=EOS))")
    if pad_id is not None and not 0 <= int(pad_id) < 2**31:
        raise ValueError(f"pad_id {pad_id} is not a token id (0..2^31-1)")


def export(path, to, out, *, backend="auto", rows_per_file=_PARQUET_ROWS,
           pad_id=None):
    """Writes the shard set at `path` to `out` in format `to` (FORMATS).
    Returns the number of packs written. `out` must not exist or be an
    empty directory (not a symbolic link); it is written in a new
    directory beside it (.NAME.prepack-XXXXXX) and renamed into place when
    complete, with DONE_NAME, the list of its files, written last.
    pad_id: for nemo-npy and nemo-parquet of a set packed with
    --pad-multiple (and only then; required there), the tokenizer's EOS
    id, with which each sequence is padded to the multiple."""
    if to not in FORMATS:
        raise ValueError(f"to must be one of {FORMATS}, not {to!r}")
    out = os.fspath(out)
    parent, name = _check_out(out)
    shards = ShardSet(path, backend=backend)
    _check_pad_id(shards, path, to, pad_id)
    n = len(shards)
    import shutil
    import tempfile
    os.makedirs(parent, exist_ok=True)  # OUT's parents, as before
    # mkdir makes it: never an existing name, never through a link
    tmp = tempfile.mkdtemp(prefix=f".{name}.prepack-", dir=parent)
    try:
        _umask_mode(tmp)
        _write(shards, to, tmp, rows_per_file, pad_id)
        _write_done(tmp, to, n)
        _place(tmp, parent, name, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
