"""prepack: pack token sequences, and read packed shard sets into
training loops.

ShardSet and prepack.torch.PackedDataset read through libprepack's C
reader (shipped inside the package by `pip install .`), or through an
independent pure-Python reader of the format (docs/FORMAT.md: numpy,
zstandard, msgpack), backend="python"; both give the same rows.

    import prepack
    shards = prepack.ShardSet("shards/")
    batch = prepack.collate([shards[i] for i in range(8)], form="varlen")
"""

from ._errors import CorruptShardError, ShardSetError
from ._shards import ShardSet
from ._collate import FORMS, collate, cp_split, flex_mask_mod
from ._native import pack
from .balancing import (CostModel, balance, balance_epoch, cost_model,
                        costs as row_costs, set_costs)

__all__ = ["ShardSet", "ShardSetError", "CorruptShardError", "collate",
           "flex_mask_mod", "FORMS", "pack", "pack_dataset", "balance", "balance_epoch", "cost_model", "cp_split",
           "CostModel", "row_costs", "set_costs", "export"]
__version__ = "0.1.0"  # CMakeLists.txt's project(VERSION); a test checks


def export(*args, **kwargs):
    """prepack.exporting.export: a shard set into another trainer's packed
    format (pyarrow, datasets imported on first use)."""
    from .exporting import export as run
    return run(*args, **kwargs)


def pack_dataset(*args, **kwargs):
    """prepack.dataset.pack_dataset (pyarrow imported on first use)."""
    from .dataset import pack_dataset as run
    return run(*args, **kwargs)


def __getattr__(name):
    """prepack.stream on first use (it imports torch when there)."""
    if name == "stream":
        import importlib
        return importlib.import_module(".stream", __name__)
    raise AttributeError(f"module 'prepack' has no attribute {name!r}")
