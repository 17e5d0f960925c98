"""Copies a shard set with row 1 of its first shard replaced by row 0: a
set that is intact on disk (checksums, seek table and manifest all agree)
but places a sequence twice, which only `prepack verify`'s placement check
can catch. Usage: duplicate_row.py SET_DIR OUT_DIR"""
import json
import shutil
import struct
import sys

import msgpack
import xxhash
import zstandard

src, dst = sys.argv[1:3]
shutil.copytree(src, dst)
with open(f"{dst}/manifest.json") as f:
    manifest = json.load(f)
entry = manifest["shards"][0]
path = f"{dst}/{entry['file']}"
with open(path, "rb") as f:
    data = f.read()

count = struct.unpack_from("<I", data, len(data) - 9)[0]
table_at = len(data) - (12 * count + 17)
sizes = [struct.unpack_from("<III", data, table_at + 8 + 12 * i)[0]
         for i in range(count)]
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

table = b"".join(struct.pack("<III", len(fr), len(raw) if i == 0 else
                             struct.unpack_from("<III", data, table_at + 8 + 12 * i)[1],
                             (xxhash.xxh64_intdigest(raw) & 0xFFFFFFFF) if i == 0 else
                             struct.unpack_from("<III", data, table_at + 8 + 12 * i)[2])
                 for i, fr in enumerate(frames))
footer = struct.pack("<IBI", count, 0x80, 0x8F92EAB1)
seek = struct.pack("<II", 0x184D2A5E, len(table) + len(footer)) + table + footer
out = b"".join(frames) + seek
with open(path, "wb") as f:
    f.write(out)
entry["bytes"] = len(out)
entry["xxh64"] = xxhash.xxh64_hexdigest(out)
with open(f"{dst}/manifest.json", "w") as f:
    json.dump(manifest, f, indent=2)
