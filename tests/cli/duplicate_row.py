"""Copies a shard set with row 1 of its first shard replaced by row 0: a
set that is intact on disk (checksums, seek table, index and manifest all
agree) but places a sequence twice, which only `prepack verify`'s
placement check can catch. Usage: duplicate_row.py SET_DIR OUT_DIR"""
import os
import shutil
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "python"))
from shard_edit import read_shard, rewrite  # noqa: E402

src, dst = sys.argv[1:3]
shutil.copytree(src, dst)
frames, table, width = read_shard(os.path.join(dst, "shard-00000.zst"))
frames[0][1] = frames[0][0]
rewrite(dst, frames, table=table, width=width)
