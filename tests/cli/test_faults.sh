#!/usr/bin/env bash
# Faults around `prepack pack`: killed (SIGKILL) or interrupted (SIGINT,
# SIGTERM) after random delays, a file size limit and a full file system
# mid-write, a read-only output directory; and hostile sizes. After each: no manifest, or a
# complete set that verifies; no temporary file after a signal it could
# catch; a clear error and exit 1 for a write that fails; a rerun succeeds.
# Usage: test_faults.sh PREPACK FIXTURES. PREPACK_TEST_SEED repeats a run's
# delays (each run prints its seed).
source "$(dirname "$0")/lib.sh"

seed=${PREPACK_TEST_SEED:-$$}
RANDOM=$seed
echo "test_faults: seed $seed"

# 2 MB of random tokens: about 0.2 s to pack, in ~30 shards
head -c 2000000 /dev/urandom > "$tmp/random.u16"
pack_args=(pack "$tmp/random.u16" --format raw-u16 --doc-sep 7
           --max-seq-len 512 --overlong split --level 19
           --rows-per-frame 8 --shard-rows 64)

no_temporaries() { # no_temporaries DIR WHAT
    if [ -z "$(ls "$1" 2>/dev/null | grep '\.tmp$')" ]; then ok; else
        bad "$2 left a temporary file: $(ls "$1" | grep '\.tmp$' | head -1)"; fi
}

# A set that exists must verify; without a manifest, nothing to check.
complete_or_absent() { # complete_or_absent DIR WHAT
    if [ -f "$1/manifest.json" ]; then
        expect_exit 0 "$prepack" verify "$1"
    else
        ok
    fi
}

rerun_succeeds() { # rerun_succeeds DIR
    expect_exit 0 "$prepack" "${pack_args[@]}" -o "$1" --overwrite
    expect_exit 0 "$prepack" verify "$1"
    no_temporaries "$1" "a rerun"
}

# ---- signals at random moments ------------------------------------------------
for round in 1 2 3 4 5 6 7 8 9; do
    sig=$(case $((round % 3)) in 0) echo KILL ;; 1) echo INT ;; *) echo TERM ;; esac)
    delay=$(printf '0.%03d' $((RANDOM % 300)))
    dir=$tmp/sig-$round
    "$prepack" "${pack_args[@]}" -o "$dir" >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -"$sig" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    code=$?
    complete_or_absent "$dir" "SIG$sig after ${delay}s"
    if [ "$sig" != KILL ] && [ ! -f "$dir/manifest.json" ]; then
        [ "$code" -ne 0 ] && ok ||
            bad "SIG$sig after ${delay}s: exit 0 without a manifest"
        # caught or not (before writing starts), nothing of the run is left
        [ -z "$(ls "$dir" 2>/dev/null)" ] && ok ||
            bad "SIG$sig after ${delay}s left $(ls "$dir" | head -3 | tr '\n' ' ')"
    fi
    rerun_succeeds "$dir"
done

# ---- --overwrite interrupted: the old set or the new one, never neither --------
# The old set is packed with --seed 1, the new one with --seed 2: after a
# signal at any moment the directory holds one of the two, whole.
ow=$tmp/ow/set
mkdir -p "$tmp/ow"
"$prepack" "${pack_args[@]}" --shuffle --seed 1 -o "$ow" >/dev/null 2>&1
cp "$ow/manifest.json" "$tmp/ow-old.json"
"$prepack" "${pack_args[@]}" --shuffle --seed 2 -o "$tmp/ow-new" >/dev/null 2>&1
for round in 1 2 3 4 5 6 7 8 9; do
    sig=$(case $((round % 3)) in 0) echo KILL ;; 1) echo INT ;; *) echo TERM ;; esac)
    delay=$(printf '0.%03d' $((RANDOM % 300)))
    "$prepack" "${pack_args[@]}" --shuffle --seed 2 -o "$ow" --overwrite >/dev/null 2>&1 &
    pid=$!
    sleep "$delay"
    kill -"$sig" "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    expect_exit 0 "$prepack" verify "$ow"
    if cmp -s "$ow/manifest.json" "$tmp/ow-old.json" ||
        cmp -s "$ow/manifest.json" "$tmp/ow-new/manifest.json"; then ok; else
        bad "--overwrite, SIG$sig after ${delay}s: neither the old set nor the new one"
    fi
    # a signal it could catch leaves nothing beside the directory
    if [ "$sig" != KILL ]; then
        [ "$(ls -A "$tmp/ow")" = set ] && ok ||
            bad "--overwrite, SIG$sig after ${delay}s left $(ls -A "$tmp/ow" | tr '\n' ' ')"
    fi
    rm -rf "$tmp"/ow/.set.prepack-* # what SIGKILL leaves
    "$prepack" "${pack_args[@]}" --shuffle --seed 1 -o "$ow" --overwrite >/dev/null 2>&1
done
# a failed overwrite (the new set does not fit) keeps the old set
(trap '' XFSZ; ulimit -f 24; exec "$prepack" "${pack_args[@]}" --shuffle --seed 2 -o "$ow" --overwrite) \
    >/dev/null 2>&1
cmp -s "$ow/manifest.json" "$tmp/ow-old.json" && ok || bad "a failed --overwrite lost the old set"
expect_exit 0 "$prepack" verify "$ow"
[ "$(ls -A "$tmp/ow")" = set ] && ok || bad "a failed --overwrite left $(ls -A "$tmp/ow" | tr '\n' ' ')"

# ---- a file size limit: the disk-full path, without a small disk ---------------
# SIGXFSZ is ignored (by default it kills), so writes fail with EFBIG.
dir=$tmp/limited
for blocks in 4 24 48; do
    rm -rf "$dir"
    (trap '' XFSZ; ulimit -f "$blocks"; exec "$prepack" "${pack_args[@]}" -o "$dir") \
        >"$tmp/out" 2>"$tmp/err"
    code=$?
    [ "$code" -eq 1 ] && ok || bad "file size limit $blocks KiB: exit $code, want 1"
    expect_in "$tmp/err" "File too large"
    expect_in "$tmp/err" "$dir/"
    [ -z "$(ls "$dir" 2>/dev/null)" ] && ok || bad "file size limit: files left: $(ls "$dir" | head -3)"
done
rerun_succeeds "$dir"

# ---- a full file system and a read-only one (where tmpfs can be mounted) -------
mounted=()
cleanup_mounts() {
    for m in "${mounted[@]}"; do umount "$m" 2>/dev/null; done
    rm -rf "$tmp"
}
trap cleanup_mounts EXIT
if mkdir -p "$tmp/tiny" && mount -t tmpfs -o size=256k tmpfs "$tmp/tiny" 2>/dev/null; then
    mounted+=("$tmp/tiny")
    expect_exit 1 "$prepack" "${pack_args[@]}" -o "$tmp/tiny/set"
    expect_in "$tmp/err" "No space left on device"
    [ -z "$(ls "$tmp/tiny/set" 2>/dev/null)" ] && ok || bad "ENOSPC: files left: $(ls "$tmp/tiny/set" | head -3)"
    # room again: the rerun replaces what the failed run left
    umount "$tmp/tiny" && mount -t tmpfs -o size=64m tmpfs "$tmp/tiny"
    rerun_succeeds "$tmp/tiny/set"
    mkdir -p "$tmp/ro" && mount -t tmpfs -o ro,size=64k tmpfs "$tmp/ro" &&
        mounted+=("$tmp/ro")
    expect_exit 1 "$prepack" "${pack_args[@]}" -o "$tmp/ro/set"
    expect_in "$tmp/err" "Read-only file system"
    expect_exit 1 "$prepack" "${pack_args[@]}" -o "$tmp/ro"
    expect_in "$tmp/err" "$tmp/ro"
else
    echo "test_faults: cannot mount tmpfs here: ENOSPC and read-only file system checks skipped"
fi

# ---- an output directory we may not write ------------------------------------
# As root, permissions do not stop writes: drop to nobody where we can.
ro=$(mktemp -d)
chmod 755 "$ro"
cp "$tmp/random.u16" "$ro/in.u16" && chmod 644 "$ro/in.u16"
mkdir -m 755 "$ro/out" # empty, but not ours to write
as_other=()
if [ "$(id -u)" -eq 0 ]; then
    if command -v setpriv >/dev/null &&
        setpriv --reuid=65534 --regid=65534 --clear-groups "$prepack" --version >/dev/null 2>&1; then
        as_other=(setpriv --reuid=65534 --regid=65534 --clear-groups)
    else
        echo "test_faults: cannot run as another user: read-only directory checks skipped"
        ro=
    fi
else
    chmod 555 "$ro"
fi
if [ -n "$ro" ]; then
    ro_args=(pack "$ro/in.u16" --format raw-u16 --doc-sep 7 --max-seq-len 512 --overlong split)
    expect_exit 1 "${as_other[@]}" "$prepack" "${ro_args[@]}" -o "$ro/set"
    expect_in "$tmp/err" "Permission denied"
    expect_in "$tmp/err" "$ro/set"
    expect_exit 1 "${as_other[@]}" "$prepack" "${ro_args[@]}" -o "$ro/out"
    expect_in "$tmp/err" "Permission denied"
    expect_in "$tmp/err" "$ro/out"
    [ -z "$(ls "$ro/out")" ] && ok || bad "read-only directory: something was written"
    chmod 755 "$ro"
    rm -rf "$ro"
fi

# ---- hostile sizes ---------------------------------------------------------------
printf '2147483647\n4294967295\n5\n' > "$tmp/big.txt"
expect_exit 2 "$prepack" stats --lengths "$tmp/big.txt" --max-seq-len 2147483647
expect_in "$tmp/err" "1..16777216"
expect_exit 0 "$prepack" stats --lengths "$tmp/big.txt" --max-seq-len 16777216 --overlong split
expect_in "$tmp/out" "split: 384 chunks"
expect_in "$tmp/out" "6,442,450,947 in 385 items"
expect_exit 0 "$prepack" stats --lengths "$tmp/big.txt" --max-seq-len 1 --overlong truncate
expect_in "$tmp/out" "rows                 3 "
printf '4294967296\n' > "$tmp/too.txt"
expect_exit 1 "$prepack" stats --lengths "$tmp/too.txt" --max-seq-len 8
expect_in "$tmp/err" "too.txt:1: length too large"
printf '{"input_ids": [4294967295, 0]}\n' > "$tmp/bigid.jsonl"
expect_exit 0 "$prepack" pack "$tmp/bigid.jsonl" -o "$tmp/bigid" --max-seq-len 4
expect_exit 0 "$prepack" inspect "$tmp/bigid" --row 0
expect_in "$tmp/out" "4294967295 0"
expect_exit 0 "$prepack" verify "$tmp/bigid" --input "$tmp/bigid.jsonl"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
