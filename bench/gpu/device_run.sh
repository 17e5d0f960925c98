#!/usr/bin/env bash
# Everything issue 19 asks of a machine with a GPU and 16 cores, as one
# command, for a session lent such a machine (its device time is short:
# prepare here, run there once).
#
# Here (this build machine):
#   bench/gpu/device_run.sh prepare
# makes bench/gpu/data: the training shard sets (make_train_sets.sh) and
# bin/ with bench_ingest, libprepack (PackedDataset's C reader) and the C
# libraries they link that a
# device image may lack (simdjson, msgpack-c, xxhash, zstd; glibc 2.34 or
# newer and libstdc++ with GLIBCXX_3.4.30 are needed there). Then, with
# bench/gpu/data carried:
#   bench/gpu/device_run.sh run        (on the device; about 6 minutes)
# writes $OUT (or bench/gpu/results) /ingest-scaling.txt: bench_ingest at
# 1, 2, 4, 8 and 16 threads on a generated 512 MB corpus of each format,
# and train-h200.json: bench_train.py on both shard sets.
#   bench/gpu/device_run.sh prefill-hf (on the device; about 7 minutes)
# writes prefill-hf-h200.txt: bench_prefill_hf.py in bf16, sdpa and
# flash_attention_2 (issue 30).
set -uo pipefail
cd "$(dirname "$0")/../.."
data=bench/gpu/data
case "${1:-}" in
prepare)
    set -e
    bash bench/gpu/make_train_sets.sh
    mkdir -p "$data/bin"
    cp build/bench/bench_ingest "$data/bin/"
    cp -L build/libprepack.so.0 "$data/bin/"
    for lib in libsimdjson.so.14 libmsgpackc.so.2 libxxhash.so.0 libzstd.so.1; do
        cp -L "/lib/x86_64-linux-gnu/$lib" "$data/bin/"
    done
    du -sh "$data"
    ;;
run)
    out=${OUT:-bench/gpu/results}
    mkdir -p "$out"
    nproc >"$out/ingest-scaling.txt"
    LD_LIBRARY_PATH=$data/bin timeout 300 "$data/bin/bench_ingest" \
        --size-mb 512 --runs 3 --threads 2,4,8,16 --dir /tmp/prepack-scaling \
        >>"$out/ingest-scaling.txt" 2>&1
    echo "bench_ingest: exit $?" >>"$out/ingest-scaling.txt"
    rm -rf /tmp/prepack-scaling
    # the C reader under PackedDataset where libprepack loads there
    LD_LIBRARY_PATH=$data/bin PREPACK_LIBRARY=$PWD/$data/bin/libprepack.so.0 \
        timeout 240 python3 bench/gpu/bench_train.py "$data/corpus" \
        "$data/sharegpt" --out "$out/train-h200.json"
    echo "bench_train: exit $?"
    cat "$out/ingest-scaling.txt"
    ;;
prefill-hf)
    # issue 30: bench_prefill_hf.py in bf16 on the GPU, a 1.2B Llama shape
    # (16 layers, hidden 2048), sdpa and (where flash-attn is installed)
    # flash_attention_2; libprepack from bench/gpu/data/bin (prepare)
    out=${OUT:-bench/gpu/results}
    mkdir -p "$out"
    for attn in sdpa flash_attention_2; do
        if [ "$attn" = flash_attention_2 ] && ! python3 -c 'import flash_attn' 2>/dev/null; then
            echo "flash_attention_2: flash_attn is not installed here" >>"$out/prefill-hf-h200.txt"
            continue
        fi
        LD_LIBRARY_PATH=$data/bin PREPACK_LIBRARY=$PWD/$data/bin/libprepack.so.0 \
            PYTHONPATH=python timeout 200 python3 bench/bench_prefill_hf.py \
            --device cuda --dtype bf16 --attn "$attn" --layers 16 --hidden 2048 \
            --cap 2048 --runs 5 --nbatches 2 --batches 16,32,64 \
            >>"$out/prefill-hf-h200.txt" 2>&1
        echo "bench_prefill_hf $attn: exit $?" >>"$out/prefill-hf-h200.txt"
    done
    cat "$out/prefill-hf-h200.txt"
    ;;
*)
    echo "usage: $0 prepare|run|prefill-hf" >&2
    exit 2
    ;;
esac
