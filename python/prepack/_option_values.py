"""An option's value read as the prepack command reads it (src/cli/args.c:
check_value, parse_u64, parse_size), for an option of _options.OPTIONS:
python -m prepack's parser and scripts/gen_options.py (which checks each
default with it) share this one reading. No import: the generator loads
this file alone."""
import re

_SHIFTS = {"k": 10, "m": 20, "g": 30}  # a size's K, M, G


def parse(option, text):
    """The value of `text` for `option` (int for int and size kinds, str
    for choice, name and string), or ValueError with the command's words
    after "--NAME " ("must be 1..22, not '23'", "needs a name")."""
    kind = option["kind"]
    if kind in ("int", "size"):
        digits, shift = text, 0
        if kind == "size" and text[-1:].lower() in _SHIFTS:
            digits, shift = text[:-1], _SHIFTS[text[-1].lower()]
        lo, hi = option["range"]
        # parse_u64: ASCII digits only; parse_size: under 32 characters
        ok = re.fullmatch(r"[0-9]+", digits) is not None and (
            kind == "int" or len(text) < 32)
        if ok:
            v = int(digits)
            ok = v <= (2**64 - 1) >> shift and lo <= v << shift <= hi
        if not ok:
            raise ValueError(f"must be {option['must']}, not '{text}'")
        return v << shift
    if kind == "choice" and text not in option["choices"]:
        *first, last = option["choices"]
        words = f"{', '.join(first)} or {last}" if first else last
        raise ValueError(f"must be {words}, not '{text}'")
    if kind == "name" and not text:
        raise ValueError("needs a name")
    return text
