#!/bin/sh
# Random row reads before and after a change (issue 31's 1.5x budget):
# each CORPUS packed with --shuffle (L 4096, --overlong split) by the
# build in BEFORE and by the one in AFTER (repository trees, built in
# their build/), then bench/bench_random_read.py run under each build
# on its own set, alternating, ROUNDS times (default 2).
#
#   sh bench/random_read.sh BEFORE_TREE AFTER_TREE CORPUS.jsonl.zst ...
set -eu
before=$(cd "$1" && pwd) after=$(cd "$2" && pwd)
shift 2
here=$(cd "$(dirname "$0")" && pwd)
py=${PYTHON:-$here/../.venv/bin/python}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for corpus in "$@"; do
    name=$(basename "$corpus" .jsonl.zst)
    for side in before after; do
        tree=$before
        [ "$side" = after ] && tree=$after
        "$tree/build/prepack" pack "$corpus" -o "$work/$name-$side" \
            --max-seq-len 4096 --overlong split --shuffle --quiet >/dev/null
    done
    for round in $(seq "${ROUNDS:-2}"); do
        for side in before after; do
            tree=$before
            [ "$side" = after ] && tree=$after
            printf '%s %s: ' "$side" "$round"
            PYTHONPATH="$tree/python" PREPACK_LIBRARY="$tree/build/libprepack.so" \
                "$py" "$here/bench_random_read.py" "$work/$name-$side"
        done
    done
done
