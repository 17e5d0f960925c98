"""The errors of reading a shard set, in one place: every module that
reads one (the manifest's checks, the sources, both readers) raises
these, and `prepack` exports them."""


class ShardSetError(Exception):
    """A shard set that cannot be opened: no manifest, a bad one."""


class CorruptShardError(ShardSetError):
    """Damaged data: the message names the shard, the frame and the cause."""
