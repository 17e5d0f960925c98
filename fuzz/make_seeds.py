"""Builds the seed corpora of the fuzz targets that take composite inputs
(megatron, llmc, manifest, roundtrip) from the fixtures and a few valid
files written here. Run from the repository root:
    /usr/bin/python3 fuzz/make_seeds.py
libFuzzer adds what it finds to these directories; keep the small ones."""
import glob
import json
import os
import random
import struct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAL = os.path.join(ROOT, 'fixtures', 'malformed', 'ingest')
CORPUS = os.path.join(ROOT, 'fuzz', 'corpus')


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, name), 'wb') as f:
        f.write(data)


def idx(dtype, lengths, pointers, docs):
    head = b'MMIDIDX\x00\x00' + struct.pack('<QBQQ', 1, dtype, len(lengths),
                                           len(docs))
    return (head + b''.join(struct.pack('<i', n) for n in lengths) +
            b''.join(struct.pack('<q', p) for p in pointers) +
            b''.join(struct.pack('<q', d) for d in docs))


def megatron_seeds():
    for path in sorted(glob.glob(os.path.join(MAL, 'mg_*.idx'))):
        stem = path[:-4]
        i = open(path, 'rb').read()
        b = open(stem + '.bin', 'rb').read()
        put('megatron', os.path.basename(stem), struct.pack('<I', len(i)) + i + b)
    for dtype, width, fmt in ((8, 2, '<H'), (4, 4, '<i'), (1, 1, '<B')):
        lengths = [3, 1, 5]
        pointers, off = [], 0
        for n in lengths:
            pointers.append(off)
            off += n * width
        i = idx(dtype, lengths, pointers, [0, 1, 3])
        b = b''.join(struct.pack(fmt, t % 200) for t in range(sum(lengths)))
        put('megatron', 'valid_dtype%d' % dtype, struct.pack('<I', len(i)) + i + b)


def llmc_seeds():
    for path in sorted(glob.glob(os.path.join(MAL, 'llmc_*.bin')) +
                       glob.glob(os.path.join(MAL, 'raw_*.u16'))):
        put('llmc', os.path.basename(path), open(path, 'rb').read())
    for version, width, sep in ((1, 2, 50256), (2, 4, 128000)):
        toks = [sep, 5, 6, 7, sep, 8, sep, 9, 10]
        head = struct.pack('<3i', 20240520, version, len(toks)) + bytes(4 * 253)
        fmt = '<H' if width == 2 else '<I'
        put('llmc', 'valid_v%d' % version,
            head + b''.join(struct.pack(fmt, t) for t in toks))


def manifest_seeds():
    golden = open(os.path.join(ROOT, 'fixtures', 'expected', 'set',
                               'manifest.json'), 'rb').read()
    put('manifest', 'golden', golden)
    m = json.loads(golden)
    variants = {
        'rows_off': lambda m: m['shards'][0].update(rows=13),
        'bytes_off': lambda m: m['shards'][1].update(bytes=634),
        'one_shard': lambda m: m.update(shards=m['shards'][:1], rows=12),
        'wrong_dtype': lambda m: m.update(token_dtype='uint32'),
        'big_len': lambda m: m.update(max_seq_len=4294967295),
        'frame_rows': lambda m: m.update(rows_per_frame=1),
        'version': lambda m: m.update(version=2),
        'file_path': lambda m: m['shards'][0].update(file='../shard-00000.zst'),
    }
    for name, change in variants.items():
        v = json.loads(golden)
        change(v)
        put('manifest', name, json.dumps(v).encode())


def plan_only_seeds():
    """The plan-only target's set, as replay_plan_only (or fuzz_plan_only)
    builds it at a fixed path on its first run, and edits of it that
    each reader must refuse or read the same: run the target once first."""
    path = '/tmp/prepack-fuzz-plan-only-v1/set/manifest.json'
    if not os.path.exists(path):
        print('plan_only: run build/fuzz/replay_plan_only once first')
        return
    valid = open(path, 'rb').read()
    put('plan_only', 'valid', valid)
    src = lambda m, i: m['sources'][i]
    variants = {
        'narrowed': lambda m: m.update(token_dtype='uint16'),
        'width_mg_2': lambda m: src(m, 1).update(width=2),
        'width_llmc_4': lambda m: src(m, 0).update(width=4),
        'signed_llmc': lambda m: src(m, 0).update(signed=True),
        'unsigned_mg': lambda m: src(m, 1).update(signed=False),
        'no_index': lambda m: [src(m, 1).pop(k) for k in
                               ('index', 'index_bytes', 'index_xxh64')],
        'swapped': lambda m: m.update(sources=m['sources'][::-1]),
        'one_source': lambda m: m.update(sources=m['sources'][:1]),
        'duplicated': lambda m: m.update(sources=m['sources'][:1] * 2),
        'many': lambda m: m.update(sources=m['sources'] * 50),
        'same_index': lambda m: src(m, 0).update(
            {k: src(m, 1)[k] for k in ('index', 'index_bytes',
                                       'index_xxh64')}),
        'pad_multiple': lambda m: m.update(pad_multiple=32),
        'short_len': lambda m: m.update(max_seq_len=16),
        'v1': lambda m: m.update(version=1),
        'bytes_off': lambda m: src(m, 0).update(bytes=src(m, 0)['bytes'] - 2),
        'fifo': lambda m: src(m, 0).update(path='/dev/zero'),
    }
    for name, change in variants.items():
        v = json.loads(valid)
        change(v)
        put('plan_only', name, json.dumps(v).encode())


def shard_frames(data):
    """A shard file's frames, decompressed, and where its frames end (a
    version 4 shard's index starts there), from its seek table. A frame
    opens with a 5-byte msgpack array 32 header: its rows."""
    import zstandard
    n = struct.unpack_from('<I', data, len(data) - 9)[0]
    seek = len(data) - (12 * n + 17)
    frames, at = [], 0
    for i in range(n):
        size = struct.unpack_from('<I', data, seek + 8 + 12 * i)[0]
        frames.append(zstandard.ZstdDecompressor().decompress(
            data[at:at + size]))
        at += size
    return frames, at


def frame_rows(raw):
    """The rows a frame holds: its array 32 header's count."""
    return struct.unpack_from('>I', raw, 1)[0]


def shard_rows_seeds():
    """Rows mode of the shard target: 0x80 | (rows - 1), rows_per_frame - 1,
    then one frame's msgpack rows, from the golden set's frames."""
    d = os.path.join(ROOT, 'fixtures', 'expected', 'set')
    for name in ('shard-00000.zst', 'shard-00001.zst'):
        frames, _ = shard_frames(open(os.path.join(d, name), 'rb').read())
        for i, raw in enumerate(frames):
            rows = frame_rows(raw)
            put('shard', 'rows-%s-frame%d' % (name[:11], i),
                bytes([0x80 | (rows - 1), rows - 1]) + raw)


def shard_v4_seeds():
    """The shard target's version 4 rows mode: 0x80 | (rows - 1), 0x80
    (uint16) or 0xC0 (uint32), the table's id count (u16), the table,
    then one frame's msgpack rows (id codes), from the bundled corpus
    packed at L = 512, 8 rows a frame (rows long enough for the decoder's
    blocks of 64 bytes). Needs build/prepack."""
    import subprocess
    import tempfile
    for name, width in (('python-docs', 2), ('python-docs-o200k', 4)):
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([os.path.join(ROOT, 'build', 'prepack'), 'pack',
                            os.path.join(ROOT, 'fixtures', 'corpus',
                                         name + '.jsonl.zst'),
                            '-o', out, '--overwrite', '--max-seq-len', '512',
                            '--overlong', 'split', '--rows-per-frame', '8',
                            '--threads', '1'],
                           check=True, capture_output=True)
            data = open(os.path.join(out, 'shard-00000.zst'), 'rb').read()
        frames, index = shard_frames(data)
        count = struct.unpack_from('<I', data, index + 8)[0]
        table = data[index + 24:index + 24 + count * width]
        for i, raw in enumerate(frames[:3]):
            put('shard', 'v4-%s-frame%d' % (name, i),
                bytes([0x80 | (frame_rows(raw) - 1),
                       0xC0 if width == 4 else 0x80]) +
                struct.pack('<H', count) + table + raw)


def roundtrip_seeds():
    rng = random.Random(9)
    for i in range(12):
        head = bytes(rng.randrange(256) for _ in range(8))
        body = bytes(rng.choice((0, 1, 2, 7, 30, 95, 96, 97, 200, 255))
                     for _ in range(rng.randrange(1, 60)))
        put('roundtrip', 'random%02d' % i, head + body)


def stream_seeds():
    """Options, then (length, flags) pairs; 0xFF 0xFF: save, flip the byte
    the next pair names (0xFFFF: none; the top bit set: the XXH64 fixed up
    after), restore; 0xFF 0xFE + pair + value: save, set that byte, fix up
    the XXH64, restore."""
    rng = random.Random(10)
    for i in range(12):
        head = bytes(rng.randrange(256) for _ in range(4))
        body = bytearray()
        for _ in range(rng.randrange(2, 80)):
            if rng.randrange(8) == 0:
                flip = 0xFFFF if rng.randrange(2) else rng.randrange(4096)
                body += bytes([0xFF, 0xFF, flip & 0xFF, flip >> 8])
            else:
                body += bytes([rng.randrange(255), rng.randrange(256)])
        put('stream', 'random%02d' % i, head + bytes(body))
    # crafted states: edits with the checksum fixed up, so they reach the
    # checks behind it (every policy, max_seqs_per_row, masks)
    for i in range(12):
        head = bytes([rng.randrange(256), rng.randrange(256),
                      rng.randrange(256), rng.randrange(256)])
        body = bytearray()
        for _ in range(rng.randrange(4, 60)):
            r = rng.randrange(10)
            at = rng.randrange(600)
            if r == 0:
                body += bytes([0xFF, 0xFF, at & 0xFF, 0x80 | at >> 8])
            elif r == 1:
                body += bytes([0xFF, 0xFE, at & 0xFF, at >> 8,
                               rng.choice([0, 1, 2, 0xFF, rng.randrange(256)])])
            else:
                body += bytes([rng.randrange(255), rng.randrange(256)])
        put('stream', 'crafted%02d' % i, head + bytes(body))


megatron_seeds()
llmc_seeds()
manifest_seeds()
plan_only_seeds()
shard_rows_seeds()
shard_v4_seeds()
roundtrip_seeds()
stream_seeds()
