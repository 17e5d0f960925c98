#!/usr/bin/env bash
# Peak memory of `prepack stats` on the corpora bench_ingest leaves with
# --keep: /usr/bin/time -v's maximum resident set size, per format.
# Usage: bench/ingest_memory.sh [DIR] [PREPACK]
set -euo pipefail
dir=${1:-/tmp/prepack-bench}
prepack=${2:-build/prepack}
printf '%-20s %10s %12s %10s %8s\n' file MB sequences max_RSS_MiB B/seq
for f in corpus.jsonl corpus.jsonl.zst corpus.idx llmc.bin; do
    out=$( { /usr/bin/time -v "$prepack" stats "$dir/$f" --max-seq-len 32768 --overlong truncate \
             --tmp-dir "$dir" --json > "$dir/stats.json"; } 2>&1 )
    rss=$(echo "$out" | awk -F: '/Maximum resident set size/ {print $2}')
    seqs=$(awk -F'[:,]' '/"sequences"/ {print $2; exit}' "$dir/stats.json")
    size=$(stat -c %s "$dir/$f")
    awk -v f="$f" -v size="$size" -v rss="$rss" -v seqs="$seqs" 'BEGIN {
        printf "%-20s %10.0f %12d %10.1f %8.1f\n", f, size / 1e6, seqs,
               rss / 1024, rss * 1024 / seqs }'
done
rm -f "$dir/stats.json"
