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


def dir_path(path):
    """A user's directory path in the one spelling every name derived
    from it uses (the C library's pp_dir_path, src/common/io.h): empty
    and "." parts dropped ("out/", "out//", "./out", "a/./out" and
    "out/." give "out"; "." and "./" give "."), ".." parts kept for the
    kernel to resolve ("a/../out" goes through a as it is, link or not).
    ValueError when the last part is "..", which names what is beyond
    the part before it."""
    path = os.fspath(path)
    parts = [p for p in path.split("/") if p not in ("", ".")]
    out = ("/" if path.startswith("/") else "") + "/".join(parts)
    if parts and parts[-1] == "..":
        raise ValueError(f"{path} ends in '..': give the directory by a "
                         f"path that names it")
    return out or "."


def beside(path):
    """The parent and name of a directory that is written beside itself
    (staged as .NAME.prepack-XXXXXX in the parent, renamed into place):
    dir_path's spelling, split. ValueError for "." and "/", which have
    no name to stage beside."""
    path = dir_path(path)
    parent, name = os.path.split(path)
    if name in ("", "."):
        raise ValueError(f"{path}: the output is written beside it and "
                         f"renamed into place, so give the directory by "
                         f"its name (e.g. ../NAME), not as '{path}'")
    return parent or ".", name
