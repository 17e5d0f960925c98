#!/usr/bin/env bash
# End-to-end checks of the prepack command: exit codes, error messages that
# name file and line, --help, --json. Usage: test_cli.sh PREPACK FIXTURES
source "$(dirname "$0")/lib.sh"

# ---- help and version ----------------------------------------------------
expect_exit 0 "$prepack" --help
expect_in "$tmp/out" "stats"
expect_exit 0 "$prepack" --version
expect_in "$tmp/out" "prepack 0."
expect_exit 0 "$prepack" export --help
expect_in "$tmp/out" "nemo-parquet"
expect_exit 2 "$prepack" export
expect_exit 0 "$prepack" pack --help
expect_in "$tmp/out" "--plan-only"
expect_exit 0 "$prepack" stats --help
for opt in --lengths --max-seq-len --algo --overlong --max-seqs-per-row \
           --batch-size --json "default: ffd" "default: error" "default: 8"; do
    expect_in "$tmp/out" "$opt"
done

# ---- usage errors: exit 2 -------------------------------------------------
lengths=$fixtures/lengths/openchat_v1_multipack_testdata_lengths.txt
expect_exit 2 "$prepack"
expect_exit 2 "$prepack" frobnicate
expect_exit 2 "$prepack" stats --max-seq-len 2048
expect_in "$tmp/err" "give INPUT files or --lengths FILE"
expect_exit 2 "$prepack" stats x.jsonl --lengths "$lengths" --max-seq-len 2048
expect_in "$tmp/err" "not both"
expect_exit 2 "$prepack" stats x.jsonl --max-seq-len 2048 --format csv
expect_exit 2 "$prepack" stats x.jsonl --max-seq-len 2048 --token-dtype int8
expect_exit 2 "$prepack" stats x.jsonl --max-seq-len 2048 --sep-position middle
expect_exit 2 "$prepack" stats x.jsonl --max-seq-len 2048 --doc-sep -1
expect_exit 2 "$prepack" stats --lengths "$lengths"
expect_in "$tmp/err" "--max-seq-len L is required"
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 0
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 12x
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 2048 --algo worst
expect_in "$tmp/err" "--algo must be ffd, bfd or nextfit, not 'worst'"
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 2048 --overlong keep
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 2048 --batch-size 0
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 2048 --bogus
expect_in "$tmp/err" "unknown option '--bogus'"
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len
expect_exit 2 "$prepack" stats --lengths "$lengths" --max-seq-len 2048 extra

# ---- data errors: exit 1, naming file and line ----------------------------
expect_exit 1 "$prepack" stats --lengths "$tmp/missing.txt" --max-seq-len 8
expect_in "$tmp/err" "cannot open $tmp/missing.txt"
for input in "$fixtures"/malformed/lengths/*.txt; do
    expect_exit 1 "$prepack" stats --lengths "$input" --max-seq-len 4096
    expect_in "$tmp/err" "prepack: $(dirname "$input")/$(cat "${input%.txt}.expected")"
done
# Malformed corpora: each case's input is the file named like its .expected
# (the .idx of a Megatron pair), with extra arguments from its .args. The
# token store must leave nothing in --tmp-dir, whatever happens.
mkdir -p "$tmp/store"
for expected in "$fixtures"/malformed/ingest/*.expected; do
    base=$(basename "${expected%.expected}")
    input=$(cd "$fixtures/malformed/ingest" && ls "$base".* |
            grep -vE '\.(expected|args|bin)$' | head -n 1)
    [ -n "$input" ] || input=$base.bin
    args=$(cat "${expected%.expected}.args" 2>/dev/null || true)
    (cd "$fixtures/malformed/ingest" &&
     "$prepack" stats "$input" $args --max-seq-len 4096 --tmp-dir "$tmp/store") \
        >"$tmp/out" 2>"$tmp/err"
    code=$?
    [ "$code" -eq 1 ] && ok || bad "$input: exit $code, want 1"
    expect_in "$tmp/err" "prepack: $(cat "$expected")"
    [ -z "$(ls -A "$tmp/store")" ] && ok || bad "$input: left files in --tmp-dir"
done
# stdin as INPUT ('-'), plain or compressed JSONL; other formats refused
printf '{"input_ids": [1, 2, 3]}\n{"input_ids": [4]}\n' > "$tmp/two.jsonl"
"$prepack" stats - --max-seq-len 8 --json < "$tmp/two.jsonl" >"$tmp/out" 2>"$tmp/err" &&
    ok || bad "stats - (stdin) failed: $(cat "$tmp/err")"
expect_in "$tmp/out" '"input_tokens": 4'
"$prepack" stats /dev/stdin --max-seq-len 8 --overlong drop --json \
    < "$fixtures/corpus/python-docs.jsonl.zst" >"$tmp/out" 2>"$tmp/err" &&
    ok || bad "stats /dev/stdin (zstd) failed: $(cat "$tmp/err")"
expect_in "$tmp/out" '"sequences": 4679'

echo x | "$prepack" stats - --format llmc --max-seq-len 8 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && ok || bad "stats - --format llmc: want exit 1"
expect_in "$tmp/err" "stdin takes JSONL"
# content, not the name, says JSONL: compressed or not, any file name
cp "$tmp/two.jsonl" "$tmp/two.data"
gzip -c "$tmp/two.jsonl" > "$tmp/two.gz"
for f in two.data two.gz; do
    expect_exit 0 "$prepack" stats "$tmp/$f" --max-seq-len 8 --json
    expect_in "$tmp/out" '"input_tokens": 4'
done
cp "$fixtures/corpus/python-docs.jsonl.zst" "$tmp/corpus.zst"
expect_exit 0 "$prepack" stats "$tmp/corpus.zst" --max-seq-len 8 --overlong drop --json
expect_in "$tmp/out" '"sequences": 4679'
# an id too large for a forced uint16 names the file and the sequence
printf '{"input_ids": [1]}\n{"input_ids": [70000]}\n' > "$tmp/wide.jsonl"
expect_exit 1 "$prepack" pack "$tmp/wide.jsonl" -o "$tmp/wide" --max-seq-len 8 --token-dtype uint16
expect_in "$tmp/err" "$tmp/wide.jsonl: sequence 1 of this input (1 overall): token id 70000 does not fit the uint16 token dtype"
# help for a command, either way round
expect_exit 0 "$prepack" help pack
expect_in "$tmp/out" "usage: prepack pack"
expect_exit 2 "$prepack" help nothing
expect_in "$tmp/err" "no command 'nothing'"

# bytes past what a Megatron index covers: refused above, accepted on request
expect_exit 0 "$prepack" stats "$fixtures/malformed/ingest/mg_trailing.idx" \
    --allow-trailing-bytes --max-seq-len 8 --json
expect_in "$tmp/out" '"input_tokens": 4'
printf '5\nx\n' | "$prepack" stats --lengths - --max-seq-len 8 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && ok || bad "stdin error exit"
expect_in "$tmp/err" "stdin:2: not a non-negative integer: 'x'"

# ---- results ----------------------------------------------------------------
expect_exit 0 "$prepack" stats --lengths "$lengths" --max-seq-len 2048
expect_in "$tmp/out" "sequences            6,144"
expect_in "$tmp/out" "packed rows (varlen attention)"
# the report's words explained beneath the table and in --help, attention
# in a unit: 7, 9, 6 and 10 tokens packed score 49+81+36+100 token pairs
printf '7\n9\n6\n10\n' | "$prepack" stats --lengths - --max-seq-len 16 >"$tmp/out"
grep -qE '^  packed rows \(varlen attention\) .* 266$' "$tmp/out" && ok || bad "attention 266"
for cmd in "stats --lengths $lengths --max-seq-len 2048" "stats --help" "pack --help"; do
    expect_exit 0 "$prepack" $cmd
    for word in "attention (token pairs)" "  slots        token positions computed" \
                "  pad tokens   slots that hold padding" \
                "  attention    query x key token pairs scored: l^2 per sequence" \
                "  lower bound  the fewest rows any packing"; do
        case "$cmd:$word" in *help:attention\ \(*) continue ;; esac
        expect_in "$tmp/out" "$word"
    done
done
printf '7\n9\n6\n10\n' | "$prepack" stats --lengths - --max-seq-len 16 --json >"$tmp/out"
[ $? -eq 0 ] && ok || bad "stdin --json exit"
py=${PREPACK_TEST_PYTHON-/usr/bin/python3}
[ -x "$py" ] || py=$(command -v python3 || true)
if [ -z "$py" ]; then
    # No Python on this machine: check the key figures textually.
    for want in '"rows": 2,' '"lower_bound": 2,' '"efficiency": 1,' '"plan_s": '; do
        expect_in "$tmp/out" "$want"
    done
elif "$py" - "$tmp/out" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
assert d["rows"] == 2 and d["lower_bound"] == 2, d
assert d["efficiency"] == 1, d
assert d["sequences"] == 4 and d["tokens"] == 32
assert d["options"]["algorithm"] == "ffd" and d["options"]["batch_size"] == 8
assert d["padding"]["naive_batch"]["slots"] == 40
assert d["padding"]["packed"]["pad_tokens"] == 0
assert d["padding"]["packed"]["attention_cost"] == 266
assert d["timings"]["plan_s"] >= 0 and d["timings"]["read_s"] >= 0
for k in ("zero_length", "overlong", "mean_seqs_per_row", "max_seqs_in_row",
          "packed_dense_attention_cost", "input_tokens", "items"):
    assert k in d, k
PY
then ok; else bad "--json content"; fi
sharegpt=$fixtures/lengths/sharegpt_opt_first_turn_total_lengths.txt
for algo in ffd bfd nextfit; do
    for pol in truncate split drop; do
        expect_exit 0 "$prepack" stats --lengths "$sharegpt" --max-seq-len 2048 \
            --algo "$algo" --overlong "$pol" --max-seqs-per-row 16 --json
    done
done

# ---- pack, verify, inspect ----------------------------------------------------
corpus=$tmp/corpus.jsonl
for i in $(seq 1 60); do
    n=$(( (i * 37) % 50 + 1 ))
    ids=$(seq -s, $i $((i + n - 1)))
    mask=$(yes 1 | head -n $n | paste -sd,)
    printf '{"text": "doc %d", "input_ids": [%s], "loss_mask": [%s]}\n' "$i" "$ids" "$mask"
done > "$corpus"
expect_exit 0 "$prepack" pack --help
for opt in --output --max-seq-len --rows-per-frame --shard-rows --level --overwrite --shuffle --seed; do
    expect_in "$tmp/out" "$opt"
done
expect_exit 2 "$prepack" pack "$corpus" --max-seq-len 64
expect_in "$tmp/err" "-o DIR is required"
expect_exit 2 "$prepack" pack -o "$tmp/set" --max-seq-len 64
expect_exit 2 "$prepack" pack "$corpus" -o "$tmp/set" --max-seq-len 64 --lengths x
expect_exit 2 "$prepack" stats "$corpus" --max-seq-len 64 -o "$tmp/set"
expect_exit 2 "$prepack" pack "$corpus" -o "$tmp/set" --max-seq-len 64 --level 99
expect_exit 0 "$prepack" pack "$corpus" -o "$tmp/set" --max-seq-len 64 \
    --rows-per-frame 4 --shard-rows 8 --shuffle --seed 3
expect_in "$tmp/out" "written"
[ -f "$tmp/set/manifest.json" ] && [ -f "$tmp/set/shard-00001.zst" ] && ok || bad "pack wrote no shards"
expect_exit 1 "$prepack" pack "$corpus" -o "$tmp/set" --max-seq-len 64
expect_in "$tmp/err" "not empty"
expect_exit 0 "$prepack" pack "$corpus" -o "$tmp/set2" --max-seq-len 64 \
    --rows-per-frame 4 --shard-rows 8 --shuffle --seed 3 --json --threads 3
for f in "$tmp"/set/*; do
    cmp -s "$f" "$tmp/set2/$(basename "$f")" && ok ||
        bad "pack --threads 3 differs from one thread: $(basename "$f")"
done
expect_exit 0 "$prepack" verify "$tmp/set" --input "$corpus"
expect_in "$tmp/err" "all checks pass"
# --shard-rows is exact, whatever --rows-per-frame: 3 rows a shard
expect_exit 0 "$prepack" pack "$corpus" -o "$tmp/rows3" --max-seq-len 64 \
    --rows-per-frame 4 --shard-rows 3 --json
rows=$(sed -n 's/^  "rows": \([0-9]*\),$/\1/p' "$tmp/rows3/manifest.json")
[ "$(grep -c '"rows": 3,' "$tmp/rows3/manifest.json")" -eq $((rows / 3)) ] && ok ||
    bad "--shard-rows 3: shards of other sizes: $(grep -o '"rows": [0-9]*' "$tmp/rows3/manifest.json" | tr '\n' ' ')"
expect_exit 0 "$prepack" verify "$tmp/rows3"
# --shard-bytes: each shard but the last reaches the size (ended at the
# frame that crosses it); the same shards for any thread count
for t in 1 3; do
    expect_exit 0 "$prepack" pack "$corpus" -o "$tmp/bytes$t" --max-seq-len 64 \
        --rows-per-frame 2 --shard-bytes 1K --threads $t
done
cmp -s "$tmp/bytes1/manifest.json" "$tmp/bytes3/manifest.json" && ok ||
    bad "--shard-bytes: other shards with --threads 3"
sizes=$(grep -o '"bytes": [0-9]*' "$tmp/bytes1/manifest.json" | grep -o '[0-9]*$')
[ "$(echo "$sizes" | wc -l)" -gt 2 ] && ok || bad "--shard-bytes 1K: one shard"
echo "$sizes" | head -n -1 | awk '$1 < 1024 { bad = 1 } END { exit bad }' && ok ||
    bad "--shard-bytes 1K: a shard under the size before the last: $sizes"
expect_exit 0 "$prepack" verify "$tmp/bytes1" --input "$corpus"
expect_exit 2 "$prepack" pack "$corpus" -o "$tmp/both" --max-seq-len 64 --shard-rows 3 --shard-bytes 1M
expect_in "$tmp/err" "not both"
expect_exit 2 "$prepack" pack "$corpus" -o "$tmp/both" --max-seq-len 64 --shard-bytes 12X
expect_in "$tmp/err" "--shard-bytes must be a size"
expect_exit 0 "$prepack" stats "$corpus" --max-seq-len 64 --svg "$tmp/r.svg"
expect_in "$tmp/r.svg" "</svg>"
expect_exit 1 "$prepack" stats "$corpus" --max-seq-len 64 --svg "$tmp/no/such/dir.svg"
# the report never goes through a link, nor waits on a FIFO (rule 2)
echo keep > "$tmp/victim.txt"
ln -s "$tmp/victim.txt" "$tmp/linked.svg"
expect_exit 1 "$prepack" stats "$corpus" --max-seq-len 64 --svg "$tmp/linked.svg"
expect_in "$tmp/err" "symbolic link"
expect_in "$tmp/victim.txt" "keep"
mkfifo "$tmp/fifo.svg"
expect_exit 1 timeout 20 "$prepack" stats "$corpus" --max-seq-len 64 --svg "$tmp/fifo.svg"
expect_exit 0 "$prepack" inspect "$tmp/set"
expect_in "$tmp/out" "shards, max_seq_len 64, uint16 tokens"
expect_exit 0 "$prepack" inspect "$tmp/set" --row 0 --json
expect_in "$tmp/out" '"sequences": ['
expect_exit 1 "$prepack" inspect "$tmp/set" --row 100000
# row lists: every entry a row number, never an empty batch or a negative row
for bad in '' '--batch=' ',' '1,' ',1' '1,,2' '5,-1' '-1' 'x' '1 2' \
           '99999999999999999999999'; do
    if [ "$bad" = "--batch=" ]; then
        expect_exit 2 "$prepack" inspect "$tmp/set" --batch=
    else
        expect_exit 2 "$prepack" inspect "$tmp/set" --batch "$bad"
    fi
    expect_in "$tmp/err" "--batch takes row numbers"
done
expect_exit 2 "$prepack" inspect "$tmp/set" --row -1
expect_in "$tmp/err" "--row takes a row number, not '-1'"
expect_exit 2 "$prepack" inspect "$tmp/set" --row
expect_exit 1 "$prepack" inspect "$tmp/set" --batch 0,100000
expect_exit 0 "$prepack" inspect "$tmp/set" --batch 1,0,1
# a set packed from other tokens fails --input
printf '{"input_ids": [9]}\n' > "$tmp/other.jsonl"
expect_exit 1 "$prepack" verify "$tmp/set" --input "$tmp/other.jsonl"
# damage: a flipped byte, a truncated shard, a missing shard
cp -r "$tmp/set" "$tmp/flip"
printf '\x55' | dd of="$tmp/flip/shard-00000.zst" bs=1 seek=40 conv=notrunc status=none
expect_exit 1 "$prepack" verify "$tmp/flip"
expect_in "$tmp/out" "shard-00000.zst"
cp -r "$tmp/set" "$tmp/cut"
truncate -s -5 "$tmp/cut/shard-00001.zst"
expect_exit 1 "$prepack" verify "$tmp/cut"
expect_in "$tmp/out" "shard-00001.zst"
cp -r "$tmp/set" "$tmp/gone"
rm "$tmp/gone/shard-00001.zst"
expect_exit 1 "$prepack" verify "$tmp/gone"
expect_in "$tmp/out" "cannot open"
# intact on disk but a sequence placed twice: only the placement check sees it
if /usr/bin/python3 "$(dirname "$0")/duplicate_row.py" "$fixtures/expected/set" "$tmp/dup" 2>/dev/null; then
    expect_exit 1 "$prepack" verify "$tmp/dup"
    expect_in "$tmp/out" "row 1: sequence 0 tokens from 0 placed again (row 0 has them)"
    expect_exit 1 "$prepack" verify "$tmp/dup" --input "$fixtures/expected/input.jsonl"
    expect_in "$tmp/out" "sequence 24: 32 of its 40 tokens placed"
else
    echo "test_cli: python3 with msgpack, xxhash, zstandard missing: duplicate-row check skipped"
fi
# every damaged shard is listed, not only the first
truncate -s -5 "$tmp/gone/shard-00000.zst"
expect_exit 1 "$prepack" verify "$tmp/gone"
expect_in "$tmp/out" "shard-00000.zst"
expect_in "$tmp/out" "shard-00001.zst"
expect_in "$tmp/err" "2 problems"
# --json: one object a script can read, the same problems
expect_exit 1 "$prepack" verify "$tmp/gone" --json
/usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is False and d["problems"] == 2 and len(d["messages"]) == 2, d
assert any("shard-00000.zst" in m for m in d["messages"]), d
' "$tmp/out" && ok || bad "verify --json on a damaged set"
expect_exit 0 "$prepack" verify "$tmp/set" --json
/usr/bin/python3 -c '
import json, sys
d = json.load(open(sys.argv[1]))
assert d["ok"] is True and d["problems"] == 0 and d["rows"] > 0, d
' "$tmp/out" && ok || bad "verify --json on a good set"

# ---- golden shard set: the on-disk format, byte for byte ---------------------
golden=$fixtures/expected
(cd "$tmp" && cp "$golden/input.jsonl" . &&
 "$prepack" pack input.jsonl -o golden --max-seq-len 16 --overlong split \
     --rows-per-frame 4 --shard-rows 12 --shuffle --seed 7 >/dev/null) && ok || bad "golden pack"
[ "$(ls "$tmp/golden" | wc -l)" -eq "$(ls "$golden/set" | wc -l)" ] && ok || bad "golden file count"
# Byte for byte with the zstd the golden set was made with; with another
# (GOLDEN_COMPARE=content forces it), the same rows and the same manifest
# but for the compressed sizes and hashes, since zstd versions may
# compress the same bytes differently.
linked=$("$prepack" --version | sed -n 's/.*(zstd \([0-9.]*\),.*/\1/p')
if [ "$linked" = "$(cat "$golden/zstd-version")" ] && [ "${GOLDEN_COMPARE:-bytes}" = bytes ]; then
    for f in "$golden"/set/*; do
        cmp -s "$f" "$tmp/golden/$(basename "$f")" && ok ||
            bad "$(basename "$f") differs from fixtures/expected/set"
    done
else
    echo "test_cli: zstd $linked, golden set made with $(cat "$golden/zstd-version"): comparing rows, not bytes"
    rows=$(/usr/bin/python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["rows"])' "$golden/set/manifest.json")
    for i in $(seq 0 $((rows - 1))); do
        "$prepack" inspect "$golden/set" --row "$i" --json > "$tmp/row-want" 2>&1
        "$prepack" inspect "$tmp/golden" --row "$i" --json > "$tmp/row-got" 2>&1
        cmp -s "$tmp/row-want" "$tmp/row-got" && ok || bad "golden row $i differs"
    done
    /usr/bin/python3 - "$golden/set/manifest.json" "$tmp/golden/manifest.json" <<'PY' && ok || bad "golden manifest differs beyond sizes and hashes"
import json, sys
want, got = (json.load(open(p)) for p in sys.argv[1:3])
for m in (want, got):
    for s in m["shards"]:
        del s["bytes"], s["xxh64"]
assert want == got, (want, got)
PY
fi
expect_exit 0 "$prepack" verify "$golden/set" --input "$golden/input.jsonl"

# pack in steps: help, usage errors (tests/python/test_steps.py has the rest)
for step in scan plan write finalize; do
    expect_exit 0 "$prepack" "$step" --help
    expect_in "$tmp/out" "byte-identical"
done
corpus=$fixtures/corpus/python-docs.jsonl.zst
expect_exit 2 env -u SLURM_ARRAY_TASK_ID "$prepack" scan "$corpus" -o "$tmp/steps" --max-seq-len 64
expect_in "$tmp/err" "--task-index I is required"
expect_exit 2 "$prepack" write "$corpus" -o "$tmp/steps" --max-seq-len 64 --task-index 3 --task-count 2
expect_in "$tmp/err" "not below --task-count 2"
expect_exit 2 "$prepack" plan "$corpus" -o "$tmp/steps" --max-seq-len 64
expect_in "$tmp/err" "--scan-tasks N is required"
expect_exit 2 "$prepack" finalize "$corpus" -o "$tmp/steps" --max-seq-len 64 --write-tasks x
expect_exit 2 "$prepack" scan "$corpus" -o "$tmp/steps" --max-seq-len 64 --task-index 0 --task-count 1 --svg x.svg
expect_exit 0 env SLURM_ARRAY_TASK_ID=0 "$prepack" scan "$corpus" -o "$tmp/steps" --max-seq-len 4096 --overlong split --task-count 1
expect_exit 1 "$prepack" finalize "$corpus" -o "$tmp/steps" --max-seq-len 4096 --overlong split --write-tasks 1
expect_in "$tmp/err" "has no plan: run prepack plan first"

# a file whose size is not its contents (sysfs says 4096 bytes, a read
# gives a few): the error says where it ended and what its size said,
# never "Success" nor a bare "read failed" (issue 26)
short=""
for f in /sys/kernel/mm/transparent_hugepage/enabled \
         /sys/devices/system/cpu/online /sys/devices/system/cpu/possible \
         /sys/kernel/mm/transparent_hugepage/defrag; do
    if [ -r "$f" ] && [ "$(stat -Lc %s "$f")" -gt "$(wc -c <"$f")" ]; then
        short=$f; break
    fi
done
if [ -n "$short" ]; then
    for fmt in raw-u16 llmc; do
        expect_exit 1 "$prepack" stats "$short" --format "$fmt" --doc-sep 0 \
            --max-seq-len 64
        expect_in "$tmp/err" "its size says 4096"
        expect_in "$tmp/err" "$short"
        if grep -q "Success" "$tmp/err"; then bad "strerror(0): $fmt"; else ok; fi
    done
else
    echo "skip: no file here whose size is not its contents" >&2
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
