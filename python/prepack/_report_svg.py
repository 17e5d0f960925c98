"""The packing report drawn as an SVG picture (`--svg FILE` of both front
ends): libprepack's prepack_report_write_svg, into a file opened as the
command opens it (src/cli/load.c: never through a link, never waiting on
a FIFO; DESIGN.md's threat model, rule 2)."""
import ctypes
import errno
import os
import stat


def _libc():
    libc = ctypes.CDLL(None, use_errno=True)
    libc.fdopen.argtypes, libc.fdopen.restype = [ctypes.c_int,
                                                 ctypes.c_char_p], \
        ctypes.c_void_p
    libc.fclose.argtypes, libc.fclose.restype = [ctypes.c_void_p], \
        ctypes.c_int
    return libc


def _open(path):
    """A descriptor of path, a regular file created or truncated for
    writing; ValueError naming it otherwise."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | \
        os.O_NONBLOCK | os.O_CLOEXEC
    try:
        fd = os.open(path, flags, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise ValueError(f"{path} is a symbolic link: the report is "
                             f"written to a file, never through a "
                             f"link") from None
        raise ValueError(f"cannot create {path}: {e.strerror}") from None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        raise ValueError(f"{path} is not a regular file")
    return fd


def write_report_svg(lib, report, plan, store, path):
    """Draws the report computed from plan and store's lengths to path."""
    libc = _libc()
    fd = _open(os.fspath(path))
    f = libc.fdopen(fd, b"w")
    if not f:
        os.close(fd)
        raise ValueError(f"cannot create {path}")
    rc = lib.prepack_report_write_svg(ctypes.byref(report), plan,
                                      lib.prepack_store_lengths(store),
                                      lib.prepack_store_sequence_count(store),
                                      f)
    if libc.fclose(f) != 0 or rc != 0:
        raise ValueError(f"writing {path} failed")
