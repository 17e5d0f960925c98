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


def report_svg_bytes(lib, report, plan, store):
    """The picture write_report_svg draws, as bytes (kept by the report
    pack_dataset returns, for its svg(path))."""
    libc = _libc()
    libc.open_memstream.argtypes = [ctypes.POINTER(ctypes.c_void_p),
                                    ctypes.POINTER(ctypes.c_size_t)]
    libc.open_memstream.restype = ctypes.c_void_p
    libc.free.argtypes, libc.free.restype = [ctypes.c_void_p], None
    buf, size = ctypes.c_void_p(), ctypes.c_size_t()
    f = libc.open_memstream(ctypes.byref(buf), ctypes.byref(size))
    if not f:
        raise MemoryError("open_memstream failed")
    rc = lib.prepack_report_write_svg(ctypes.byref(report), plan,
                                      lib.prepack_store_lengths(store),
                                      lib.prepack_store_sequence_count(store),
                                      f)
    closed = libc.fclose(f)
    try:
        if rc != 0 or closed != 0:
            raise ValueError(f"prepack error {rc} drawing the report")
        return ctypes.string_at(buf, size.value)
    finally:
        libc.free(buf)


def write_svg_bytes(path, data):
    """Writes a drawn picture to path, opened as write_report_svg opens
    it (never through a link, never waiting on a FIFO)."""
    fd = _open(os.fspath(path))
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
    except OSError as e:
        raise ValueError(f"writing {path} failed: {e.strerror}") from None
    finally:
        os.close(fd)
