#!/usr/bin/env bash
# End-to-end `prepack pack` against `zstd -3 -T1` compressing the same
# tokens as raw binary, in one run: throughput ratio (zstd time / pack
# time; goal >= 0.5) and size ratio (shards / zstd output; goal <= 1.05).
# Usage: bench/pack_vs_zstd.sh [SIZE_MB] [RUNS]   (defaults 1024, 3)
set -euo pipefail
cd "$(dirname "$0")/.."
size=${1:-1024}
runs=${2:-3}
dir=$(mktemp -d /tmp/prepack-packbench-XXXXXX)
trap 'rm -rf "$dir"' EXIT
./build/bench/bench_ingest --size-mb "$size" --runs 1 --keep --dir "$dir" >/dev/null 2>&1
sync

median() { sort -n | awk '{a[NR]=$1} END {print (NR % 2) ? a[(NR+1)/2] : (a[NR/2] + a[NR/2+1]) / 2}'; }
seconds() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null 2>&1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc -l; }

printf '%-10s %10s %10s %10s %10s %10s %8s %8s\n' input tokens_MB zstd_s pack_s zstd_MB shards_MB speed size
for input in corpus.idx corpus.jsonl; do
    zt=(); pt=()
    for r in $(seq "$runs"); do
        zt+=("$(seconds zstd -3 -T1 -q -f "$dir/corpus.bin" -o "$dir/raw.zst")")
        pt+=("$(seconds ./build/prepack pack "$dir/$input" -o "$dir/out" \
                --max-seq-len 4096 --overlong split --overwrite --tmp-dir "$dir")")
    done
    z=$(printf '%s\n' "${zt[@]}" | median)
    p=$(printf '%s\n' "${pt[@]}" | median)
    zb=$(stat -c %s "$dir/raw.zst")
    pb=$(du -cb "$dir"/out/shard-*.zst | tail -1 | cut -f1)
    tb=$(stat -c %s "$dir/corpus.bin")
    awk -v i="$input" -v tb="$tb" -v z="$z" -v p="$p" -v zb="$zb" -v pb="$pb" 'BEGIN {
        printf "%-10s %10.1f %10.3f %10.3f %10.1f %8.1f %7.2fx %7.3fx\n",
               i, tb / 1e6, z, p, zb / 1e6, pb / 1e6, z / p, pb / zb }'
done
echo "speed = zstd time / pack time (goal >= 0.5); size = shards / zstd output (goal <= 1.05)"

# Real text: the bundled corpora (r50k ids as uint16, o200k ids as uint32),
# shards against zstd of the same tokens in input and in packed order.
echo
py=./.venv/bin/python
[ -x "$py" ] || py=python3
"$py" bench/shard_size.py --prepack ./build/prepack --max-seq-len 4096
