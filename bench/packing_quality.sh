#!/usr/bin/env bash
# Packing quality on the real length data in fixtures/lengths: rows against
# the lower bound for each algorithm, and the padding packing removes.
# Usage: bench/packing_quality.sh [PREPACK]   (default build/prepack)
set -euo pipefail
cd "$(dirname "$0")/.."
prepack=${1:-build/prepack}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
py=/usr/bin/python3
[ -x "$py" ] || py=python3

# Histograms (length,count) expand to one length a line, in a seeded
# shuffled order, so next-fit sees a realistic stream.
expand() {
    awk -F, 'NR > 1 || $1 ~ /^[0-9]+$/ { for (i = 0; i < $2; i++) print $1 }' "$1" |
        shuf --random-source=<(yes prepack) > "$2"
}
expand fixtures/lengths/wikipedia_seq512_histogram.csv "$tmp/wikipedia.txt"
expand fixtures/lengths/squad_1_1_seq384_histogram.csv "$tmp/squad.txt"

run() { # name file L extra-args...
    local name=$1 file=$2 L=$3; shift 3
    for algo in ffd bfd nextfit; do
        "$prepack" stats --lengths "$file" --max-seq-len "$L" --algo "$algo" "$@" --json |
            "$py" -c '
import json, sys
d = json.load(sys.stdin)
p = d["padding"]
print("| %s | %s | %d | %s | %s | %d | %d | %+.4f%% | %.3f%% | %.1f%% | %.1f%% | %.3f |" % (
    sys.argv[1], d["options"]["algorithm"], d["options"]["max_seq_len"],
    format(d["sequences"], ","), format(d["tokens"], ","), d["rows"], d["lower_bound"],
    100.0 * (d["rows"] - d["lower_bound"]) / d["lower_bound"], 100 * d["efficiency"],
    100 * p["naive_batch"]["pad_fraction"], 100 * p["padded_to_max"]["pad_fraction"],
    d["timings"]["plan_s"]))' "$name"
    done
}

echo "| data | algo | L | sequences | tokens | rows | lower bound | excess | efficiency | naive-batch pad | pad-to-L pad | plan s |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
run "Wikipedia (BERT)" "$tmp/wikipedia.txt" 512
run "SQuAD 1.1" "$tmp/squad.txt" 384
run "OpenChat V1" fixtures/lengths/openchat_v1_multipack_testdata_lengths.txt 2048
run "ShareGPT (truncate)" fixtures/lengths/sharegpt_opt_first_turn_total_lengths.txt 2048 --overlong truncate
run "ShareGPT (split)" fixtures/lengths/sharegpt_opt_first_turn_total_lengths.txt 4096 --overlong split
