#!/usr/bin/env bash
# bench/gpu/bench_train.py's CPU check (PREPACK_BENCH_SMALL=1: a tiny
# float32 model, one step each way) on the bundled corpus packed at 512,
# so the script keeps working between device runs. Usage:
#   check_small.sh PREPACK PYTHON
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
"$1" pack "$here/../../fixtures/corpus/python-docs.jsonl.zst" -o "$tmp/set" \
    --max-seq-len 512 --overlong split --shuffle --quiet >/dev/null
PREPACK_BENCH_SMALL=1 "$2" "$here/bench_train.py" "$tmp/set" --steps 1 \
    --rows 1 --out "$tmp/result.json" >/dev/null
"$2" -c 'import json, sys; r = json.load(open(sys.argv[1]))["results"][0]; assert r["packed"]["real_tokens"] > 0 and r["padded"]["real_tokens"] > 0, r' "$tmp/result.json"
