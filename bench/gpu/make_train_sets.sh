#!/usr/bin/env bash
# Shard sets for bench/gpu/bench_train.py, made here (the device machine
# only reads them): the bundled corpus and a larger generated one with
# ShareGPT's real lengths (its first 30,000 conversations, truncated to
# 4096, about 17 M tokens: the carry limit is 64 MiB; ids log-uniform like
# text's), both packed at 4096 with split and
# shuffle. Carry bench/gpu/data to the device:
#
#   bench/gpu/make_train_sets.sh
#   run(carry=["bench/gpu/data"], command="python3 bench/gpu/bench_train.py \
#       bench/gpu/data/corpus bench/gpu/data/sharegpt --out bench/gpu/results/train-h200.json")
set -euo pipefail
cd "$(dirname "$0")/../.."
out=bench/gpu/data
mkdir -p "$out"
opts=(--max-seq-len 4096 --overlong split --shuffle --seed 1 --quiet --overwrite)
./build/prepack pack fixtures/corpus/python-docs.jsonl.zst -o "$out/corpus" "${opts[@]}" >/dev/null
py=./.venv/bin/python
[ -x "$py" ] || py=python3
"$py" - "$out/sharegpt.jsonl" <<'PY'
import json, math, random, sys
rng = random.Random(1)
lengths = [min(int(l), 4096) for l in open("fixtures/lengths/sharegpt_opt_first_turn_total_lengths.txt") if l.strip() and int(l) > 0][:30000]
with open(sys.argv[1], "w") as f:
    for n in lengths:
        ids = [min(31999, int(math.exp(rng.random() * math.log(32000)))) for _ in range(n)]
        f.write(json.dumps({"input_ids": ids}) + "\n")
PY
./build/prepack pack "$out/sharegpt.jsonl" -o "$out/sharegpt" "${opts[@]}" >/dev/null
rm "$out/sharegpt.jsonl"
du -sh "$out"/*
