"""The padding report pack_dataset and stats_dataset return: the plan's
figures as the dict they always were (report["rows"], json.dumps(report),
dict(report)), printed as `prepack pack` and `prepack stats` print it
(src/cli/report_print.c's text, but for the inputs' lines: a dataset has
no input files to list), and the report's SVG picture on request
(report.svg(path), as `--svg`). python -m prepack prints str(report);
tests/python/test_report.py holds the text to the command's."""
import os

# src/cli/cli.h's REPORT_WORDS, line for line (a test compares them)
WORDS = (
    "  slots        token positions computed: rows x their width\n"
    "  pad tokens   slots that hold padding, no token\n"
    "  attention    query x key token pairs scored: l^2 per sequence with\n"
    "               varlen attention, width^2 per padded row\n"
    "  lower bound  the fewest rows any packing of these lengths can have\n")


def _ratio(part, whole, unit):
    """src/cli/report_print.c's ratio_text: "n/a" with nothing to divide
    by, never a ratio of nothing."""
    if whole > 0:
        return "%.3f%s" % (part / whole * (100 if unit == "%" else 1), unit)
    return "n/a"


def _layout_row(label, layout):
    share = "%.2f%%" % (100.0 * layout["pad_fraction"]) if layout["slots"] else "n/a"
    return (f"  {label:<34} {layout['rows']:>14,} {layout['slots']:>16,} "
            f"{layout['pad_tokens']:>16,} {share:>7} "
            f"{'%.4g' % layout['attention_cost']:>23}")


def _pad_change(n, p):
    """src/cli/report_print.c's print_pad_change, line for line."""
    if n > p:
        return (f"  packing removes {n - p:,} of {n:,} naive pad tokens "
                f"({_ratio(n - p, n, '%')})")
    if n == 0 and p > 0:
        return (f"  packing removes nothing: naive batches have no pad "
                f"tokens, packed rows hold {p:,}")
    if p > 0:
        return (f"  packing removes none of {n:,} naive pad tokens (packed "
                f"rows hold {p:,}, {p - n:,} more)")
    return "  packing removes nothing: no pad tokens either way"


class PackReport(dict):
    """The plan's figures (a dict: sequences, input_tokens, items, tokens,
    rows, lower_bound, efficiency, ...; to_dict() gives a plain copy),
    printable: str(report) is the table `prepack pack` prints. Beside the
    figures: .lengths (min, median, p90, p99, max, over_max_seq_len),
    .layouts (naive_batch, padded_to_max, packed: rows, slots, pad_tokens,
    pad_fraction, attention_cost in token pairs),
    .packed_dense_attention_cost, .batch_size, .timings (read_s, plan_s,
    write_s) and .output (dir, rows, bytes, token_bytes; None for stats);
    svg(path) draws the picture `--svg` draws."""

    def __init__(self, figures, *, command, source, algo, overlong,
                 token_dtype, lengths, layouts, packed_dense_attention_cost,
                 batch_size, timings, output=None, svg_bytes=None):
        super().__init__(figures)
        self.command, self.source = command, source
        self.algo, self.overlong, self.token_dtype = algo, overlong, token_dtype
        self.lengths, self.layouts = lengths, layouts
        self.packed_dense_attention_cost = packed_dense_attention_cost
        self.batch_size, self.timings, self.output = batch_size, timings, output
        self._svg = svg_bytes

    def to_dict(self):
        """The figures as a plain dict (what pack_dataset returned before)."""
        return dict(self)

    def svg(self, path):
        """Writes the report's SVG picture to path (a regular file, never
        through a link, as `--svg FILE`)."""
        from ._report_svg import write_svg_bytes
        write_svg_bytes(path, self._svg)

    def __str__(self):
        return "\n".join(self.lines())

    def lines(self):
        s, L = self, self["max_seq_len"]
        out = [f"prepack {self.command}: {self.source}, max_seq_len {L}, "
               f"{self.algo}",
               f"  token store          {self.token_dtype}",
               f"  sequences            {s['sequences']:,} "
               f"({s['zero_length']:,} empty, skipped)",
               self._lengths_line(L), self._overlong_line(L),
               f"  tokens packed        {s['tokens']:,} in {s['items']:,} "
               f"items",
               f"  rows                 {s['rows']:,} (lower bound "
               f"{s['lower_bound']:,}" + (
                   ", +" + _ratio(s["rows"] - s["lower_bound"],
                                  s["lower_bound"], "%")
                   if s["lower_bound"] else "") + ")",
               f"  efficiency           "
               f"{_ratio(s['efficiency'] * s['rows'], s['rows'], '%')} of row "
               f"capacity holds tokens",
               f"  sequences per row    %.2f mean, {s['max_items_per_row']} "
               f"max" % s["mean_items_per_row"], ""]
        out += self._table(L)
        return out + self._footer()

    def _lengths_line(self, L):
        n = self.lengths
        return (f"  lengths              min {n['min']:,}, median "
                f"{n['median']:,}, p90 {n['p90']:,}, p99 {n['p99']:,}, max "
                f"{n['max']:,}; {n['over_max_seq_len']:,} over {L}")

    def _overlong_line(self, L):
        s = self
        if s["overlong"] == 0:
            return f"  overlong             none longer than {L}"
        head = (f"  overlong             {s['overlong']:,} longer than {L}, "
                f"{self.overlong}: ")
        if self.overlong == "truncate":
            return head + f"{s['truncated_tokens']:,} tokens cut"
        if self.overlong == "split":
            return head + f"{s['split_chunks']:,} chunks"
        return head + f"{s['dropped_tokens']:,} tokens dropped"

    def _table(self, L):
        lay = self.layouts
        return [f"  {'layout':<34} {'rows':>14} {'slots':>16} "
                f"{'pad tokens':>16} {'pad':>7} "
                f"{'attention (token pairs)':>23}",
                _layout_row(f"naive batches of {self.batch_size}, input "
                            f"order", lay["naive_batch"]),
                _layout_row(f"every sequence padded to {L}",
                            lay["padded_to_max"]),
                _layout_row("packed rows (varlen attention)", lay["packed"]),
                ""] + WORDS.rstrip("\n").split("\n")

    def _footer(self):
        n, p = self.layouts["naive_batch"], self.layouts["packed"]
        removed = n["pad_tokens"] - p["pad_tokens"]
        out = ["",
               _pad_change(n["pad_tokens"], p["pad_tokens"])
               + f"; computes {_ratio(p['slots'], n['slots'], 'x')} the token slots",
               f"  attention: varlen packed is "
               f"{_ratio(p['attention_cost'], n['attention_cost'], 'x')} naive "
               f"batches (dense L x L packed would be "
               f"{_ratio(self.packed_dense_attention_cost, n['attention_cost'], 'x')})"]
        t, o = self.timings, self.output
        if o is None:
            return out + ["  time                 read %.3f s, plan %.3f s"
                          % (t["read_s"], t["plan_s"])]
        total = t["read_s"] + t["plan_s"] + t["write_s"]
        return out + [
            f"  written              {o['dir']}: {o['rows']:,} rows, "
            f"{o['bytes']:,} bytes ({_ratio(o['bytes'], o['token_bytes'], 'x')} "
            f"the raw tokens' {o['token_bytes']:,} bytes)",
            "  time                 %.3f s: read %.3f s, plan %.3f s, write "
            "%.3f s (%.1f M tokens/s)" % (
                total, t["read_s"], t["plan_s"], t["write_s"],
                self["tokens"] / total / 1e6 if total > 0 else 0.0)]


def source_name(source):
    """The report's first line's name for source, as the command's: the
    first input and " and more", or "the table" / "the dataset"."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    if type(source).__name__ == "Table" or hasattr(source, "with_format"):
        return "the table" if type(source).__name__ == "Table" \
            else "the dataset"
    paths = list(source) if isinstance(source, (list, tuple)) else []
    if not paths:
        return "the source"
    return os.fspath(paths[0]) + (" and more" if len(paths) > 1 else "")
