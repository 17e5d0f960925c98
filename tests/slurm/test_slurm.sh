#!/usr/bin/env bash
# Pack in steps on a real Slurm: a single-node cluster started on this
# machine (scripts/slurm/local_cluster.sh), the job submitted with
# scripts/slurm/submit.sh (scan and write as job arrays, plan and finalize
# as dependent jobs). Scan task 1's first run is killed while it runs
# (scontrol requeue): Slurm reruns it, and the set must still be byte for
# byte what one `prepack pack` writes.
# Usage: test_slurm.sh PREPACK ROOT
set -u
prepack=$(cd "$(dirname "$1")" && pwd)/$(basename "$1")
root=$(cd "$2" && pwd)
if [ "$(id -u)" -ne 0 ] || ! [ -x /usr/sbin/slurmctld ]; then
    echo "SKIP: needs root and Slurm (scripts/deps.sh test installs it)"
    exit 77
fi
tmp=$(mktemp -d)
cluster=$tmp/cluster
cleanup() {
    bash "$root/scripts/slurm/local_cluster.sh" stop "$cluster"
    rm -rf "$tmp"
}
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; tail -n 30 "$cluster/log/"*.log >&2 2>/dev/null; exit 1; }

env_line=$(bash "$root/scripts/slurm/local_cluster.sh" start "$cluster") ||
    fail "the local Slurm did not start"
export "${env_line#export }"
export PATH=$PATH:/usr/sbin

corpus=$root/fixtures/corpus/python-docs.jsonl.zst
mkdir -p "$tmp/in"
zstd -dcq "$corpus" >"$tmp/in/docs.jsonl" 2>/dev/null ||
    python3 -c 'import sys; sys.exit(1)' || fail "cannot decompress the corpus"
inputs=("$tmp/in/docs.jsonl" "$corpus")
opts=(--max-seq-len 2048 --overlong split --shard-rows 300 --rows-per-frame 32)

"$prepack" pack "${inputs[@]}" -o "$tmp/ref" "${opts[@]}" --quiet >/dev/null ||
    fail "prepack pack"

export PREPACK=$prepack PREPACK_SLURM_HOLD=scan:1
ids=$(bash "$root/scripts/slurm/submit.sh" --scan-tasks 3 --write-tasks 4 -- \
    "${inputs[@]}" -o "$tmp/out" "${opts[@]}") || fail "submit.sh"
read -r scan plan write final <<<"$ids"
echo "submitted: scan $scan, plan $plan, write $write, finalize $final"

# kill scan task 1 while it runs; Slurm requeues it
for _ in $(seq 300); do
    [ "$(squeue -h -j "${scan}_1" -o %T 2>/dev/null)" = RUNNING ] && break
    sleep 0.2
done
[ "$(squeue -h -j "${scan}_1" -o %T)" = RUNNING ] || fail "scan task 1 never ran"
scontrol requeue "${scan}_1" || fail "scontrol requeue"
# Slurm holds a requeued job back for two minutes (BeginTime); once it is
# pending again, let it go. Not in the second of the requeue: slurmd revokes
# the killed run's credential with a time in whole seconds and refuses any
# credential of that job created in the same second or before ("Job
# credential revoked"), which cancels the array and its dependants.
requeued_at=$(date +%s)
for _ in $(seq 100); do
    if scontrol show job "${scan}_1" | grep -q 'Reason=BeginTime'; then
        while [ "$(date +%s)" -le $((requeued_at + 1)) ]; do sleep 0.2; done
        scontrol update JobId="${scan}_1" StartTime=now && break
    fi
    sleep 0.2
done
restarts=$(scontrol show job "${scan}_1" | grep -o 'Restarts=[0-9]*')
[ "$restarts" = Restarts=1 ] || fail "scan task 1 was not requeued ($restarts)"

for _ in $(seq 600); do
    [ -z "$(squeue -h 2>/dev/null)" ] && break
    sleep 0.5
done
[ -z "$(squeue -h)" ] && echo "all jobs done" || fail "jobs still queued: $(squeue)"
state=$(scontrol show job "$final" | grep -o 'JobState=[A-Z]*')
[ "$state" = JobState=COMPLETED ] || {
    cat "$tmp"/out.logs/*.log >&2; fail "finalize: $state"; }

(cd "$tmp/ref" && ls -A) >"$tmp/ref.list"
(cd "$tmp/out" && ls -A) >"$tmp/out.list"
cmp -s "$tmp/ref.list" "$tmp/out.list" || fail "other files: $(diff "$tmp/ref.list" "$tmp/out.list")"
while read -r f; do
    cmp -s "$tmp/ref/$f" "$tmp/out/$f" || fail "$f differs from prepack pack's"
done <"$tmp/ref.list"
grep -q "holding scan task 1" "$tmp/out.logs/scan-1.log" 2>/dev/null ||
    grep -q "scan task 1 of 3" "$tmp/out.logs/scan-1.log" || fail "scan-1.log"
echo "PASS: Slurm job byte-identical to prepack pack ($(wc -l <"$tmp/ref.list") files)"
