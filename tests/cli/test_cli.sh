#!/usr/bin/env bash
# End-to-end checks of the prepack command: exit codes, error messages that
# name file and line, --help, --json. Usage: test_cli.sh PREPACK FIXTURES
set -u
prepack=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
fixtures=$(cd "$2" && pwd)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
passed=0
failed=0

ok() { passed=$((passed + 1)); }
bad() { failed=$((failed + 1)); echo "FAIL: $*" >&2; }

# expect_exit CODE CMD...: runs CMD, stdout/stderr to $tmp/out, $tmp/err
expect_exit() {
    local want=$1; shift
    "$@" >"$tmp/out" 2>"$tmp/err"
    local got=$?
    if [ "$got" -eq "$want" ]; then ok; else
        bad "exit $got, want $want: $*"; sed 's/^/    /' "$tmp/err" >&2; fi
}

expect_in() { # expect_in FILE TEXT
    if grep -qF -- "$2" "$1"; then ok; else
        bad "'$2' not in $1:"; sed 's/^/    /' "$1" >&2; fi
}

# ---- help and version ----------------------------------------------------
expect_exit 0 "$prepack" --help
expect_in "$tmp/out" "stats"
expect_exit 0 "$prepack" --version
expect_in "$tmp/out" "prepack 0."
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
printf '5\nx\n' | "$prepack" stats --lengths - --max-seq-len 8 >"$tmp/out" 2>"$tmp/err"
[ $? -eq 1 ] && ok || bad "stdin error exit"
expect_in "$tmp/err" "stdin:2: not a non-negative integer: 'x'"

# ---- results ----------------------------------------------------------------
expect_exit 0 "$prepack" stats --lengths "$lengths" --max-seq-len 2048
expect_in "$tmp/out" "sequences            6,144"
expect_in "$tmp/out" "packed rows (varlen attention)"
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

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
