"""libprepack.so exports exactly the functions include/prepack.h declares.

Usage: python3 test_symbols.py LIBPREPACK_SO PREPACK_H

The header's declarations are read from the text (comments stripped), not
from the PREPACK_API marks, so a declaration that lost its mark (hidden, so
missing from the library) fails here as surely as a private pp_* function
or a C++ template that leaked into the dynamic symbol table.
"""
import re
import subprocess
import sys


def declared(header):
    text = open(header, encoding="utf-8").read()
    text = re.sub(r"/\*.*?\*/", " ", text, flags=re.S)
    text = re.sub(r"^#.*$", " ", text, flags=re.M)
    names, unmarked = set(), []
    # top-level declarations end with ';'; typedefs (function pointers,
    # structs) are not functions the library defines
    for decl in re.split(r";", text):
        decl = " ".join(decl.split())
        decl = re.split(r"[{}]", decl)[-1].strip()  # after a body or {
        if decl.startswith("typedef") or "(" not in decl:
            continue
        m = re.match(r"(PREPACK_API )?[^()]*?\b(prepack_[a-z0-9_]+)\s*\(",
                     decl)
        if m:
            names.add(m.group(2))
            if not m.group(1):
                unmarked.append(m.group(2))
    return names, unmarked


def exported(lib):
    out = subprocess.run(["nm", "-D", "--defined-only", lib], check=True,
                         capture_output=True, text=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.split()}


def main():
    lib, header = sys.argv[1], sys.argv[2]
    names, unmarked = declared(header)
    symbols = exported(lib)
    problems = []
    if len(names) < 100:
        problems.append(f"only {len(names)} declarations read from {header}")
    problems += [f"{n} is declared without PREPACK_API" for n in unmarked]
    problems += [f"{n} is declared but not exported"
                 for n in sorted(names - symbols)]
    problems += [f"{s} is exported but not in prepack.h"
                 for s in sorted(symbols - names)]
    for p in problems:
        print(f"test_symbols: {p}", file=sys.stderr)
    if problems:
        return 1
    print(f"test_symbols: {len(symbols)} dynamic symbols, all prepack.h's")
    return 0


if __name__ == "__main__":
    sys.exit(main())
