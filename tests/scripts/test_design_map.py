"""docs/DESIGN.md's map of files names every file under src/, and nothing
that is not there.

Usage: python3 test_design_map.py SOURCE_DIR

The map is the table under "## The map": one row per folder (`src/ingest/`)
or file (`src/version.c`). Each file of a folder must be named, in
backquotes, in its folder's row (`store.c`, or from src/: `ingest/store.h`);
each backquoted file name in a row must exist. A newcomer reads the map to
find a concept's file; a file missing from it, or a name left behind by a
move, sends them looking.
"""
import os
import re
import sys

FILE = re.compile(r"^[\w./-]+\.(c|cpp|h)$")


def map_rows(design):
    """{row's path ('src/ingest/' or 'src/version.c'): its text}."""
    text = open(design, encoding="utf-8").read()
    section = re.search(r"^## The map\n(.*?)(?=^##? )", text, re.S | re.M)
    if not section:
        sys.exit(f"FAIL: {design} has no '## The map' section")
    rows = {}
    for line in section.group(1).splitlines():
        m = re.match(r"^\| `(src/[^`]*)` \|(.*)$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def named_files(folder, row):
    """The files a row names, as paths from the source root."""
    names = set()
    for quoted in re.findall(r"`([^`]+)`", row):
        if FILE.match(quoted):
            if quoted.startswith("include/"):
                continue  # the public header, not a library file
            names.add(os.path.normpath(
                os.path.join("src", quoted) if "/" in quoted
                else os.path.join(folder, quoted)))
    return names


def library_files(root):
    """Every .c, .cpp and .h under src/, as paths from the source root."""
    found = set()
    for dirpath, _, files in os.walk(os.path.join(root, "src")):
        for f in files:
            if FILE.match(f):
                found.add(os.path.relpath(os.path.join(dirpath, f), root))
    return found


def main():
    root = sys.argv[1]
    rows = map_rows(os.path.join(root, "docs", "DESIGN.md"))
    mapped, faults = set(), []
    for path, row in rows.items():
        if path.endswith("/"):
            mapped |= named_files(path, row)
        else:
            mapped.add(os.path.normpath(path))
    existing = library_files(root)
    for f in sorted(existing - mapped):
        faults.append(f"{f} is not in docs/DESIGN.md's map")
    for f in sorted(mapped - existing):
        faults.append(f"docs/DESIGN.md's map names {f}, which does not exist")
    for fault in faults:
        print("FAIL:", fault)
    if faults:
        return 1
    print(f"PASS: the map names the {len(existing)} files under src/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
