"""Test helper: a shard's frames as rows and back, for any format version
(docs/FORMAT.md), so a test can change rows and keep everything else
consistent (the seek table, a version 4 shard's index, the manifest's
bytes and xxh64): only the rows lie. Also a version 4 row's id codes,
both ways, written from the format's text rather than the readers."""
import json
import os
import struct

import msgpack
import xxhash
import zstandard

SEEK_FOOTER = struct.Struct("<IBI")
INDEX_MAGIC = 0x184D2A5D


def read_shard(path):
    """(frames, table, width): each frame's rows as msgpack decodes them,
    and a version 4 shard's id table (a list) and token width, or
    (frames, None, 0)."""
    data = open(path, "rb").read()
    n = SEEK_FOOTER.unpack_from(data, len(data) - 9)[0]
    seek_at = len(data) - 9 - 12 * n - 8
    sizes = [struct.unpack_from("<I", data, seek_at + 8 + 12 * i)[0]
             for i in range(n)]
    frames, at = [], 0
    for size in sizes:
        frames.append(msgpack.unpackb(
            zstandard.ZstdDecompressor().decompress(data[at:at + size]),
            raw=False))
        at += size
    if at == seek_at:
        return frames, None, 0
    magic, body, count, nframes = struct.unpack_from("<IIII", data, at)
    assert magic == INDEX_MAGIC and nframes == n
    width = (body - 16 - 8 * n) // count if count else 2
    ids = data[at + 24:at + 24 + count * width]
    table = [int.from_bytes(ids[i * width:(i + 1) * width], "little")
             for i in range(count)]
    return frames, table, width


def zstd_frame(content, content_size=True):
    """content as one zstd frame, with its checksum, as prepack writes."""
    return zstandard.ZstdCompressor(
        level=3, write_checksum=True,
        write_content_size=content_size).compress(content)


def rewrite(set_dir, frames, shard="shard-00000.zst", table=None, width=0,
            store=None):
    """Writes frames (lists of row maps, or a frame's content as bytes) as
    the shard, with its seek table, its index when `table` is given
    (version 4), and the manifest's bytes and xxh64 made to agree.
    store(i, content): the bytes stored for frame i (default: one zstd
    frame of the content)."""
    body, seek, hashes = b"", b"", b""
    for i, rows in enumerate(frames):
        raw = rows if isinstance(rows, bytes) else b"\xdd" + struct.pack(
            ">I", len(rows)) + b"".join(msgpack.packb(r, use_bin_type=True)
                                        for r in rows)
        z = store(i, raw) if store else zstd_frame(raw)
        body += z
        hashes += struct.pack("<Q", xxhash.xxh64_intdigest(z))
        seek += struct.pack("<III", len(z), len(raw),
                            xxhash.xxh64_intdigest(raw) & 0xFFFFFFFF)
    n = len(frames)
    if table is not None:
        rest = b"".join(i.to_bytes(width, "little") for i in table) + hashes
        body += struct.pack("<IIIIQ", INDEX_MAGIC, 16 + len(rest), len(table),
                            n, xxhash.xxh64_intdigest(rest)) + rest
    data = body + struct.pack("<II", 0x184D2A5E, 12 * n + 9) + seek + \
        struct.pack("<IBI", n, 0x80, 0x8F92EAB1)
    with open(os.path.join(set_dir, shard), "wb") as f:
        f.write(data)
    mp = os.path.join(set_dir, "manifest.json")
    m = json.load(open(mp))
    for e in m["shards"]:
        if e["file"] == shard:
            e["bytes"], e["xxh64"] = len(data), xxhash.xxh64_hexdigest(data)
    with open(mp, "w") as f:
        json.dump(m, f)


def encode_codes(ids, table, width):
    """ids as version 4 id codes through table (docs/FORMAT.md)."""
    rank = {v: i for i, v in enumerate(table)}
    out = bytearray()
    for v in ids:
        r = rank.get(int(v))
        if r is None:
            out += b"\xff" + int(v).to_bytes(width, "little")
        elif r < 192:
            out.append(r)
        else:
            out += bytes((192 + (r - 192) // 256, (r - 192) % 256))
    return bytes(out)


def decode_codes(codes, table, width):
    """Version 4 id codes as a list of ids (the format's text, walked one
    code at a time); IndexError for a code cut short or a rank past the
    table."""
    out, p = [], 0
    while p < len(codes):
        b = codes[p]
        if b < 192:
            out.append(table[b])
            p += 1
        elif b < 255:
            out.append(table[192 + (b - 192) * 256 + codes[p + 1]])
            p += 2
        else:
            if p + 1 + width > len(codes):
                raise IndexError("an escape cut short")
            out.append(int.from_bytes(codes[p + 1:p + 1 + width], "little"))
            p += 1 + width
    return out
