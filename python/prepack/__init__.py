"""prepack: read packed shard sets into training loops.

An independent reader of the shard format (docs/FORMAT.md), written from the
spec alone: numpy, zstandard and msgpack, no C extension.

    import prepack
    shards = prepack.ShardSet("shards/")
    batch = prepack.collate([shards[i] for i in range(8)], form="varlen")
"""

from ._shards import CorruptShardError, ShardSet, ShardSetError
from ._collate import FORMS, collate, flex_mask_mod
from ._native import pack

__all__ = ["ShardSet", "ShardSetError", "CorruptShardError", "collate",
           "flex_mask_mod", "FORMS", "pack"]
__version__ = "0.1.0"  # CMakeLists.txt's project(VERSION); a test checks
