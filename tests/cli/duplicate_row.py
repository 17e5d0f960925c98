"""Copies a shard set with row 1 of its first shard replaced by row 0: a
set that is intact on disk (checksums, seek table and manifest all agree)
but places a sequence twice, which only `prepack verify`'s placement check
can catch. Usage: duplicate_row.py SET_DIR OUT_DIR"""
import json
import os
import shutil
import struct
import sys

import msgpack
import xxhash
import zstandard

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "python"))
from prepack._format import (SEEK_CHECKSUMS, SEEK_ENTRY, SEEK_FOOTER,  # noqa: E402
                             SEEK_HEADER, SEEKABLE_MAGIC, SKIPPABLE_MAGIC,
                             seek_table_bytes)

src, dst = sys.argv[1:3]
shutil.copytree(src, dst)
with open(f"{dst}/manifest.json") as f:
    manifest = json.load(f)
entry = manifest["shards"][0]
path = f"{dst}/{entry['file']}"
with open(path, "rb") as f:
    data = f.read()

count = SEEK_FOOTER.unpack_from(data, len(data) - SEEK_FOOTER.size)[0]
table_at = len(data) - seek_table_bytes(count)
entries = [SEEK_ENTRY.unpack_from(data, table_at + SEEK_HEADER.size + SEEK_ENTRY.size * i)
           for i in range(count)]
sizes = [e[0] for e in entries]
frames, at = [], 0
for size in sizes:
    frames.append(data[at:at + size])
    at += size

rows = msgpack.unpackb(zstandard.ZstdDecompressor().decompress(frames[0]),
                       raw=False)
rows[1] = rows[0]
raw = b"\xdd" + struct.pack(">I", len(rows)) + b"".join(
    msgpack.packb(row, use_bin_type=True) for row in rows)
frames[0] = zstandard.ZstdCompressor(
    level=3, write_checksum=True, write_content_size=True).compress(raw)

table = b"".join(SEEK_ENTRY.pack(len(fr), len(raw) if i == 0 else entries[i][1],
                                 (xxhash.xxh64_intdigest(raw) & 0xFFFFFFFF) if i == 0
                                 else entries[i][2])
                 for i, fr in enumerate(frames))
footer = SEEK_FOOTER.pack(count, SEEK_CHECKSUMS, SEEKABLE_MAGIC)
seek = SEEK_HEADER.pack(SKIPPABLE_MAGIC, len(table) + len(footer)) + table + footer
out = b"".join(frames) + seek
with open(path, "wb") as f:
    f.write(out)
entry["bytes"] = len(out)
entry["xxh64"] = xxhash.xxh64_hexdigest(out)
with open(f"{dst}/manifest.json", "w") as f:
    json.dump(manifest, f, indent=2)
