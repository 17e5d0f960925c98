"""Progress on stderr for pack_dataset, stats_dataset and python -m prepack,
as the command shows it (src/cli/util.c): only when stderr is a terminal
(or when asked), one line rewritten in place at most five times a second,
then cleared and replaced by one summary line, so nothing reaches logs and
stdout (--json) is untouched.

Reading: documents (or sequences, for token inputs) read, tokens, and for
text the UTF-8 bytes of the strings in the fields the tokenizer reads
(text, prompt, completion, messages: roles and contents), each with its
rate. Writing: rows written of the plan's, rows/s and the time left."""
import sys
import time

from . import _optional

EVERY = 0.2  # seconds between two updates, as the command's
CLEAR = "\r\033[K"  # to the line's start, erase it


def human(v):
    """12, 1.2 k, 3.4 M: the command's human() (src/cli/util.c)."""
    units = ("", "k", "M", "G", "T")
    u = 0
    while v >= 1000 and u < 4:
        v /= 1000
        u += 1
    return f"{v:.1f} {units[u]}" if u else f"{v:.0f}"


def _isatty(stream):
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError, OSError):  # closed, or no such
        return False


class Progress:
    """show: None (shown when the stream is a terminal), True or False;
    stream: sys.stderr unless given (read when made, so a replaced
    sys.stderr is the one used); clock: seconds (time.monotonic)."""

    def __init__(self, show=None, stream=None, clock=time.monotonic):
        if show is not None and not isinstance(show, bool):
            raise ValueError(f"progress: None (shown when stderr is a "
                             f"terminal), True or False, not {show!r}")
        self.stream = sys.stderr if stream is None else stream
        self.enabled = _isatty(self.stream) if show is None else show
        self.clock = clock
        self.begin = self.start = self.last = clock()
        self.stage = None
        self.docs = self.tokens = self.bytes = 0
        self.text = False  # bytes of text counted
        self.read_s = 0.0  # the read stage's length so far
        self.drawn = False  # a line is on the terminal

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.clear()

    def stage_begins(self, stage):
        """Starts a stage's clock (its rates count from here)."""
        self.stage, self.start = stage, self.clock()

    def text_read(self, batch, fields):
        """Counts a batch's text (before tokenizing): `fields` of a
        pyarrow RecordBatch, or of the rows a batch's to_pylist() gives."""
        if self.enabled:
            self.text = True
            self.bytes += text_bytes(batch, fields)

    def read(self, docs, tokens):
        """docs more documents of tokens tokens read."""
        if not self.enabled:
            return
        self.docs += docs
        self.tokens += tokens
        t, due = self._due("read", False)
        self.read_s = t - self.start
        if not due:
            return
        s = max(self.read_s, 1e-9)
        unit = "documents" if self.text else "sequences"
        line = (f"{'read':<7} {human(self.docs)} {unit} "
                f"({human(self.docs / s)}/s)")
        if self.text:
            line += f"  {human(self.bytes)}B ({human(self.bytes / s)}B/s)"
        self._draw(f"{line}  {human(self.tokens)} tokens "
                   f"({human(self.tokens / s)}/s)")

    def write(self, done, total):
        """done rows of total written: the command's write line."""
        if not self.enabled:
            return
        t, due = self._due("write", done >= total)
        if not due:
            return
        rate = done / (t - self.start) if t > self.start else 0
        line = (f"{'write':<7} "
                f"{100.0 * done / total if total else 100.0:5.1f}%  "
                f"{human(done)} rows / {human(total)} rows  "
                f"{human(rate)} rows/s")
        if rate > 0 and total > done:
            line += f"  ETA {(total - done) / rate:.0f} s"
        self._draw(line)

    def done(self, summary):
        """Clears the line; prints the summary, the run's seconds and what
        was read."""
        if not self.enabled:
            return
        line = f"{summary} ({self.clock() - self.begin:.2f} s)"
        if self.docs:
            s = max(self.read_s, 1e-9)
            unit = "documents" if self.text else "sequences"
            line += (f"; read {self.docs:,} {unit}, {self.tokens:,} tokens"
                     + (f", {self.bytes / 1e6:.2f} MB of text" if self.text
                        else "")
                     + f" in {self.read_s:.2f} s: {human(self.docs / s)} "
                       f"{unit}/s, {human(self.tokens / s)} tokens/s"
                     + (f", {self.bytes / s / 1e6:.2f} MB/s" if self.text
                        else ""))
        self.stream.write(f"{CLEAR}{line}\n")
        self.stream.flush()
        self.drawn = False

    def clear(self):
        """Erases a line left drawn (an error ended the run)."""
        if self.drawn:
            self.stream.write(CLEAR)
            self.stream.flush()
            self.drawn = False

    def _due(self, stage, final):
        """(now, whether a line is due): EVERY seconds after the last one,
        or the stage's last (a new stage restarts the stage's clock)."""
        t = self.clock()
        if stage != self.stage:
            self.stage, self.start = stage, t
        if t - self.last < EVERY and not final:
            return t, False
        self.last = t
        return t, True

    def _draw(self, line):
        self.stream.write(CLEAR + line)
        self.stream.flush()
        self.drawn = True


def text_bytes(batch, fields):
    """UTF-8 bytes of the strings under `fields` of a pyarrow RecordBatch
    (Arrow's string lengths, at any depth) or of the rows a batch's
    to_pylist() gives (a string, a list of strings or of objects)."""
    pa = _optional.require("pyarrow", "text", "text in")
    names = [f for f in fields if f in batch.schema.names]
    if isinstance(batch, pa.RecordBatch):
        return sum(_arrow_bytes(batch.column(n)) for n in names)
    return sum(_python_bytes(row.get(n)) for row in batch.to_pylist()
               for n in names)


def _arrow_bytes(array):
    pa = _optional.require("pyarrow", "text", "text in")
    pc = _optional.require("pyarrow.compute", "text", "text in")
    t = array.type
    if pa.types.is_string(t) or pa.types.is_large_string(t):
        total = pc.sum(pc.binary_length(array)).as_py()
        return int(total or 0)
    if pa.types.is_list(t) or pa.types.is_large_list(t) or \
            pa.types.is_fixed_size_list(t):
        return _arrow_bytes(array.flatten())
    if pa.types.is_struct(t):
        return sum(_arrow_bytes(child) for child in array.flatten())
    return 0


def _python_bytes(value):
    """UTF-8 bytes of a string, or of a list's strings and of the strings
    its objects hold (messages: [{role, content}, ...]): one
    comprehension, half the time a walk to any depth took."""
    if isinstance(value, str):
        return len(value.encode("utf-8", "surrogatepass"))
    if not isinstance(value, list):
        return 0
    return sum(len(s.encode("utf-8", "surrogatepass")) for v in value
               for s in (v.values() if isinstance(v, dict) else (v,))
               if isinstance(s, str))
