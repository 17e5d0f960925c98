"""Balancing data-parallel steps by compute (docs/BALANCE.md).

Packed rows hold about L tokens each, not the same work: attention costs
the sum of l^2 over a row's sequences. A row's cost is

    per_token * tokens + per_pair * sum(l_i ** 2)

(`cost_model()` derives the two from a transformer's dimensions; the
default is a Llama-3-8B shape). `balance()` splits a step's rows (or
sequences) among ranks with equal counts and the costliest rank as cheap
as the library's heuristic finds (longest first under the count limit,
then swaps); `balance_epoch()` does it step by step over an epoch's order,
as `prepack.torch.PackedDataset(..., balance="compute")` does.

    import prepack
    rows = prepack.pack(rollouts, max_seq_len=8192)
    mine = [rows[i] for i in prepack.balance(rows, world_size)[rank]]
"""
import ctypes
from typing import NamedTuple

import numpy as np

from . import _native
from ._shards import ShardSet

__all__ = ["CostModel", "cost_model", "costs", "set_costs", "balance",
           "balance_epoch"]


class CostModel(NamedTuple):
    per_token: float  # FLOPs a token (linear layers)
    per_pair: float   # FLOPs a (query, key) pair of one sequence

    def of(self, lengths):
        """The cost of a row of sequences of these lengths: per_token x
        tokens + per_pair x sum(l ** 2), in float64."""
        lengths = np.asarray(lengths).astype(np.float64)
        return self.per_token * lengths.sum() + \
            self.per_pair * (lengths ** 2).sum()


def cost_model(hidden_size=4096, intermediate_size=14336, num_heads=32,
               num_kv_heads=8, num_layers=32, bidirectional=False):
    """The forward FLOPs of a decoder-only transformer (prepack.h,
    prepack_cost_model_for): intermediate_size 0 means a 4h two-matrix
    MLP, else SwiGLU's three matrices."""
    dims = _native.ModelDims(hidden_size, intermediate_size, num_heads,
                             num_kv_heads, num_layers, int(bool(bidirectional)))
    out = _native.CostModelStruct()
    if _native.library().prepack_cost_model_for(ctypes.byref(dims),
                                                ctypes.byref(out)) != 0:
        raise ValueError(f"bad model dimensions: {dims_repr(dims)}")
    return CostModel(out.per_token, out.per_pair)


def dims_repr(d):
    return ", ".join(f"{name}={getattr(d, name)}" for name, _ in d._fields_)


def default_cost():
    """The default model (prepack_cost_model_default: a Llama-3-8B
    shape)."""
    return cost_model()


def _row_lengths(item):
    if isinstance(item, dict):
        cu = np.asarray(item["cu_seqlens"], dtype=np.int64)
        return np.diff(cu)
    if np.isscalar(item) or (isinstance(item, np.ndarray) and item.ndim == 0):
        return np.asarray([int(item)], dtype=np.int64)
    return np.asarray(item, dtype=np.int64)


def costs(rows_or_lengths, cost=None):
    """The cost of each item: a row (a dict with cu_seqlens, as
    prepack.pack and ShardSet give them), a list of sequence lengths (one
    row), or an int (one sequence)."""
    m = _model(cost)
    out = np.empty(len(rows_or_lengths), dtype=np.float64)
    for i, item in enumerate(rows_or_lengths):
        lengths = _row_lengths(item)
        if (lengths < 0).any():
            raise ValueError(f"item {i}: negative length")
        out[i] = m.of(lengths)
    return out


def _model(cost):
    """cost (anything with per_token and per_pair) as a CostModel; None
    is the default model."""
    m = cost or default_cost()
    return CostModel(m.per_token, m.per_pair)


def set_costs(path, cost=None, backend="auto"):
    """The cost of every row of a shard set (a path, or an open ShardSet),
    in one pass over it (the C reader's prepack_reader_row_costs, or the
    Python reader's rows): what PackedDataset(balance="compute") computes
    at start; save it with numpy and pass it back as row_costs= to skip
    the pass."""
    shards = path if isinstance(path, ShardSet) else ShardSet(path, backend=backend)
    return shards.row_costs(_model(cost))


def _check(rc, diag):
    if rc != 0:
        raise ValueError(_native.diag_message(diag, rc))


def balance(rows_or_lengths, world_size, *, cost=None, item_costs=None):
    """Splits the items among world_size ranks: counts differ by at most
    one, the costliest rank as cheap as the heuristic finds, the same
    answer for the same input. Returns world_size lists of item indices,
    each in increasing order. item_costs (an array) replaces computing
    them from rows_or_lengths."""
    if world_size < 1:
        raise ValueError("world_size must be at least 1")
    c = np.ascontiguousarray(
        costs(rows_or_lengths, cost) if item_costs is None else item_costs,
        dtype=np.float64)
    bins = np.empty(len(c), dtype=np.uint32)
    diag = _native.Diag()
    _check(_native.library().prepack_balance(
        c.ctypes.data, len(c), world_size, bins.ctypes.data, ctypes.byref(diag)),
        diag)
    return [np.flatnonzero(bins == r).tolist() for r in range(world_size)]


def balance_epoch(item_costs, world_size, rows_per_rank, order=None,
                  window_steps=1):
    """An epoch of steps: order (a permutation of the rows; None = 0..n-1)
    cut into steps of world_size x rows_per_rank rows, each balanced; with
    window_steps W > 1 each W steps' rows are first regrouped by cost so a
    step's rows cost alike (what helps when a rank takes one row a step).
    Returns (order, rank_of): the epoch's order of rows and each one's
    rank; a rank's rows are order[rank_of == rank], in that order."""
    c = np.ascontiguousarray(item_costs, dtype=np.float64)
    n = len(c)
    o = np.arange(n, dtype=np.uint64) if order is None else \
        np.ascontiguousarray(order, dtype=np.uint64)
    if len(o) != n:
        raise ValueError(f"order has {len(o)} rows, costs {n}")
    out = np.empty(n, dtype=np.uint64)
    rank_of = np.empty(n, dtype=np.uint32)
    diag = _native.Diag()
    _check(_native.library().prepack_balance_epoch(
        c.ctypes.data, n, o.ctypes.data, world_size, rows_per_rank,
        window_steps, out.ctypes.data, rank_of.ctypes.data, ctypes.byref(diag)),
        diag)
    return out, rank_of
