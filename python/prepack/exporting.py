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
"""
import os

import numpy as np

from ._shards import ShardSet

FORMATS = ("hf", "hf-parquet")
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
    import pyarrow as pa
    columns = {"input_ids": pa.array([a.tolist() for a in ids],
                                     type=pa.list_(pa.int64())),
               "seq_lengths": pa.array([a.tolist() for a in lengths],
                                       type=pa.list_(pa.int64()))}
    if labels is not None:
        columns["labels"] = pa.array([a.tolist() for a in labels],
                                     type=pa.list_(pa.int64()))
    return pa.table(columns)


def export(path, to, out, *, backend="auto", rows_per_file=_PARQUET_ROWS):
    """Writes the shard set at `path` to `out` in format `to` (FORMATS).
    Returns the number of packs written. `out` must not exist or be an
    empty directory; it is written under a temporary name beside it and
    renamed into place when complete."""
    if to not in FORMATS:
        raise ValueError(f"to must be one of {FORMATS}, not {to!r}")
    out = os.fspath(out)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise FileExistsError(f"{out} exists and is not an empty directory")
    shards = ShardSet(path, backend=backend)
    n = len(shards)
    tmp = f"{out}.tmp-{os.getpid()}"
    import shutil
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if to == "hf":
            from datasets import Dataset, concatenate_datasets
            parts = [Dataset(_table(*_hf_columns(shards, range(lo, min(n, lo + rows_per_file)))))
                     for lo in range(0, max(n, 1), rows_per_file)]
            ds = parts[0] if len(parts) == 1 else concatenate_datasets(parts)
            ds.save_to_disk(tmp)
        else:
            import pyarrow.parquet as pq
            os.makedirs(tmp)
            files = max(1, -(-n // rows_per_file))
            for f in range(files):
                lo = f * rows_per_file
                table = _table(*_hf_columns(shards, range(lo, min(n, lo + rows_per_file))))
                pq.write_table(table, os.path.join(
                    tmp, f"train-{f:05d}-of-{files:05d}.parquet"))
        if os.path.isdir(out):
            os.rmdir(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return n
