#!/usr/bin/env python3
"""The wider benchmark set for bench/shard_size.py: repetitive real text
that a Debian machine holds (man pages, /usr/share/doc, Python's standard
library, C headers), tokenized with the bundled GPT-2 BPE
(fixtures/text/r50k_base.tiktoken.zst, uint16 ids) and written as JSONL
of input_ids (zstd), one document per file, in path order. Nothing is
downloaded; nothing is committed (the default output, bench/data/, is
gitignored).

Each corpus also comes as uint32 ids: the same tokens through a fixed
bijection onto [0, 200003) (id * 40503 + 12345 mod 200003), a vocabulary
as wide as o200k's, whose ids pass 65535 (no o200k file is bundled; the
bundled o200k corpus is real o200k ids).

    python bench/make_corpora.py [--out bench/data] [--max-tokens 12000000]

Prints one line per corpus: documents, tokens, file.
"""
import argparse
import base64
import glob
import gzip
import json
import os
import sys

import numpy as np
import zstandard

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
R50K = os.path.join(ROOT, "fixtures", "text", "r50k_base.tiktoken.zst")
R50K_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+"""
                r"""| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+""")
WIDE_VOCAB = 200003  # a prime: the uint32 map is a bijection below it


def _man():
    return sorted(glob.glob("/usr/share/man/man[1-8]/*.gz"))


def _doc():
    return sorted(p for p in glob.glob("/usr/share/doc/**/*", recursive=True)
                  if os.path.isfile(p) and not os.path.islink(p) and
                  (p.endswith((".gz", ".txt", ".md", ".rst", "copyright",
                               "README", "NEWS")) and not p.endswith(".tar.gz")))


def _pystdlib():
    lib = sorted(glob.glob("/usr/lib/python3.[0-9]*"))[-1]
    return sorted(glob.glob(os.path.join(lib, "**", "*.py"), recursive=True))


def _headers():
    return sorted(glob.glob("/usr/include/**/*.h", recursive=True))


CORPORA = {"manpages": _man, "debian-doc": _doc, "python-stdlib": _pystdlib,
           "c-headers": _headers}


def _text(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
        if path.endswith(".gz"):
            data = gzip.decompress(data)
    except (OSError, EOFError, gzip.BadGzipFile):
        return None
    if b"\0" in data[:4096]:
        return None  # not text
    return data.decode("utf-8", "replace")


def _encoding():
    import tiktoken
    ranks = {}
    with open(R50K, "rb") as f:
        raw = zstandard.ZstdDecompressor().stream_reader(f).read()
    for line in raw.splitlines():
        if line:
            tok, rank = line.split()
            ranks[base64.b64decode(tok)] = int(rank)
    return tiktoken.Encoding("r50k_base", pat_str=R50K_PATTERN,
                             mergeable_ranks=ranks,
                             special_tokens={"<|endoftext|>": 50256})


def _write(path, docs):
    cctx = zstandard.ZstdCompressor(level=3)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f, cctx.stream_writer(f) as z:
        for d in docs:
            z.write(json.dumps({"input_ids": d}, separators=(",", ":")).encode()
                    + b"\n")
    os.replace(tmp, path)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.join(HERE, "data"))
    ap.add_argument("--max-tokens", type=int, default=12_000_000,
                    help="stop a corpus at this many tokens (default 12M)")
    ap.add_argument("names", nargs="*", default=list(CORPORA))
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    enc = _encoding()
    for name in a.names:
        docs, total, batch = [], 0, []
        files = CORPORA[name]()

        def flush():
            nonlocal total
            for ids in enc.encode_ordinary_batch(batch, num_threads=2):
                if ids and total < a.max_tokens:
                    docs.append(ids)
                    total += len(ids)
            batch.clear()

        for p in files:
            t = _text(p)
            if t:
                batch.append(t)
            if len(batch) == 256:
                flush()
            if total >= a.max_tokens:
                break
        flush()
        out16 = os.path.join(a.out, f"{name}.jsonl.zst")
        _write(out16, docs)
        out32 = os.path.join(a.out, f"{name}-wide.jsonl.zst")
        _write(out32, (((np.asarray(d, np.int64) * 40503 + 12345)
                        % WIDE_VOCAB).tolist() for d in docs))
        print(f"{name:<14} {len(docs):>7} docs {total:>10} tokens  {out16}, "
              f"{out32}", flush=True)


if __name__ == "__main__":
    sys.exit(main())
