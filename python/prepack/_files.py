"""Opening and reading the files a shard set names without trusting them:
each opened once, only when it is a regular file (never blocking on a
FIFO), and read through that descriptor with pread."""

import errno
import os
import stat

from ._errors import CorruptShardError, ShardSetError


def pread_all(fd, n, at):
    """n bytes at `at` of fd, fewer only where the file ends."""
    parts = []
    while n > 0:
        chunk = os.pread(fd, min(n, 1 << 24), at)
        if not chunk:
            break
        parts.append(chunk)
        n -= len(chunk)
        at += len(chunk)
    return b"".join(parts)


def open_regular(path, what):
    """A manifest's path opened once, only when it is a regular file (a
    FIFO would block the open, hence O_NONBLOCK): its descriptor and
    stat. Everything after is checked and read through that descriptor,
    so a path swapped after the check cannot change what is read."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as err:
        hint = (" (a reader holds each referenced file open: raise the "
                "open-file limit, ulimit -n or resource.setrlimit)"
                if err.errno == errno.EMFILE else "")
        raise ShardSetError(f"{path}: cannot open the {what} this set "
                            f"references: {err.strerror}{hint}") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise CorruptShardError(f"{path}: the {what} this set references is "
                                f"not a regular file")
    return fd, st


def open_shard(path):
    """A shard file, opened only when it is a regular file (never
    blocking: a FIFO named like a shard is refused, not waited on)."""
    fd, _ = open_regular(path, "shard")
    return os.fdopen(fd, "rb")
