"""ShardSet, the one front to a shard set (docs/FORMAT.md): it checks the
manifest (_manifest.py), reads rows through libprepack's C reader
(_creader.py) or the pure-Python one (_pyreader.py), and builds batches
and row costs through whichever is open. Other modules use ShardSet's
methods, never its readers."""

import os

import numpy as np

from ._collate import collate
from ._creader import CReader, collate_batch
from ._errors import CorruptShardError, ShardSetError
from ._files import open_shard
from ._format import is_tmp_set_file
from ._manifest import Manifest
from ._pyreader import PyReader

try:  # verify() checks each shard's XXH64
    import xxhash
except ImportError:  # pragma: no cover - Debian's python3-xxhash is optional
    xxhash = None

__all__ = ["ShardSet", "ShardSetError", "CorruptShardError"]


class ShardSet:
    """A shard set directory. `len(s)`, `s[i]` (a row: a dict of numpy
    arrays `input_ids`, `cu_seqlens`, `seq_ids`, and `loss_mask` /
    `seq_starts` when the set has them), iteration, `manifest`,
    `batch(rows, form, ...)`, `row_costs(cost)` and `verify()`.

    backend="auto" reads rows through libprepack's C reader when the
    library loads (backend="c" requires it), else through the package's
    own reader (backend="python", an independent implementation of
    docs/FORMAT.md); both check everything and give the same rows. The
    manifest is checked here in both cases.

    A ShardSet is used from one thread at a time (its reader keeps the
    frame it decompressed and its call buffers): open one a thread, as
    PackedDataset does in each DataLoader worker."""

    def __init__(self, path, backend="auto"):
        if backend not in ("auto", "c", "python"):
            raise ValueError(f"backend must be 'auto', 'c' or 'python', not "
                             f"{backend!r}")
        self._layout = m = Manifest(path)
        self.path, self.manifest = m.path, m.doc
        self.references, self.sources = m.references, m.sources
        self.max_seq_len, self.rows_per_frame = m.max_seq_len, \
            m.rows_per_frame
        self.token_dtype, self.overlong = m.token_dtype, m.overlong
        self.max_seqs_per_row = m.max_seqs_per_row
        self.pad_multiple, self.stats = m.pad_multiple, m.stats
        self._rows = m.rows
        # rows through libprepack's reader when it loads ("auto") or on
        # request ("c"), which reads and checks the seek tables itself;
        # the Python reader otherwise
        self._c = self._open_c(backend)
        self.backend = "c" if self._c else "python"
        self._py = None if self._c else PyReader(m)

    def _open_c(self, backend):
        if backend == "python":
            return None
        try:
            return CReader(self.path)
        except RuntimeError:  # no libprepack
            if backend == "c":
                raise
            return None

    def __len__(self):
        return self._rows

    def __iter__(self):
        for i in range(self._rows):
            yield self[i]

    def __getitem__(self, i):
        if i < 0:
            i += self._rows
        if not 0 <= i < self._rows:
            raise IndexError(f"row {i} of {self._rows}")
        return self._c.row(i) if self._c else self._py.row(i)

    def batch(self, rows, form="varlen", **collate_options):
        """collate([self[i] for i in rows], form, **collate_options)
        (prepack.collate's forms and options): built in one C call when
        the C reader is open and the options allow it, the same keys,
        dtypes and values either way (the tests hold both to it)."""
        if self._c_builds(form, collate_options):
            return collate_batch(self._c, rows, form, **collate_options)
        return collate([self[int(i)] for i in rows], form,
                       **collate_options)

    def _c_builds(self, form, options):
        """Which path builds a batch, decided here only: the C batch when
        the C reader is open (context-parallel pad_multiple included),
        but not for a padded form of another width than L."""
        if not self._c:
            return False
        return form != "padded" or options.get("max_seq_len") == \
            self.max_seq_len

    def row_costs(self, cost):
        """Each row's cost (float64) under cost, a prepack.CostModel
        (prepack.balancing): prepack_reader_row_costs in one pass when the
        C reader is open, else cost.of() over each row's lengths."""
        if self._c:
            return self._c.row_costs(cost.per_token, cost.per_pair)
        out = np.empty(self._rows, dtype=np.float64)
        for i, row in enumerate(self):
            out[i] = cost.of(np.diff(row["cu_seqlens"].astype(np.int64)))
        return out

    def verify(self):
        """Checks what the C reader's verify does: every shard file's XXH64
        against the manifest, every row, each shard's tokens, the stats
        only the rows can prove (items, max_seqs_in_row, sequence ids
        below stats.sequences), max_seqs_per_row, and no writer's file
        the manifest does not list. Raises CorruptShardError at the first
        problem."""
        if xxhash is None:  # pragma: no cover
            raise ShardSetError("verify() needs the xxhash module")
        for entry, (path, *_) in zip(self.manifest["shards"],
                                     self._layout.shards):
            _verify_hash(path, entry["xxh64"])
        for name in sorted(os.listdir(self.path)):
            if is_tmp_set_file(name):
                raise CorruptShardError(
                    f"{os.path.join(self.path, name)}: not listed in the "
                    f"manifest (left by another run?)")
        items = most = 0
        for (path, rows, tokens, _), first in zip(self._layout.shards,
                                                  self._layout.first):
            counts = self._verify_rows(path, range(first, first + rows))
            if counts[0] != tokens:
                raise CorruptShardError(
                    f"{path}: its rows hold {counts[0]} tokens, "
                    f"the manifest says {tokens}")
            items += counts[1]
            most = max(most, counts[2])
        self._verify_stats(items, most)

    def _verify_rows(self, path, rows):
        """These rows of shard `path` checked; (tokens, items, most
        sequences in a row) of theirs."""
        tokens = items = most = 0
        sequences = self.stats["sequences"] if self.stats else None
        for i in rows:
            row = self[i]
            k = len(row["seq_ids"])
            tokens += len(row["input_ids"])
            items += k
            most = max(most, k)
            if self.max_seqs_per_row and k > self.max_seqs_per_row:
                raise CorruptShardError(
                    f"{path}: row {i}: {k} sequences, "
                    f"max_seqs_per_row {self.max_seqs_per_row}")
            if sequences is not None and k and \
                    int(row["seq_ids"].max()) >= sequences:
                raise CorruptShardError(
                    f"{path}: row {i}: sequence id "
                    f"{int(row['seq_ids'].max())}, the manifest says "
                    f"{sequences} sequences were packed")
        return tokens, items, most

    def _verify_stats(self, items, most):
        """The stats only the rows can prove."""
        manifest = self._layout.manifest_path
        if self.stats and items != self.stats["items"]:
            raise CorruptShardError(f"{manifest}: stats.items is "
                                    f"{self.stats['items']}, the rows hold "
                                    f"{items}")
        if self.stats and most != self.stats["max_seqs_in_row"]:
            raise CorruptShardError(f"{manifest}: stats.max_seqs_in_row is "
                                    f"{self.stats['max_seqs_in_row']}, the "
                                    f"rows' most is {most}")


def _verify_hash(path, xxh64):
    """A shard file's whole XXH64 against the manifest's."""
    h = xxhash.xxh64()
    with open_shard(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    if h.hexdigest() != xxh64:
        raise CorruptShardError(f"{path}: xxh64 {h.hexdigest()}, the "
                                f"manifest says {xxh64}")
