#!/usr/bin/env bash
# Submits a pack in steps to Slurm: scan as a job array of N tasks, plan
# after it, write as an array of M tasks after the plan, finalize last,
# each stage waiting on the one before (--dependency=afterok; a failed
# stage cancels the rest). Prints the four job ids.
#
#   scripts/slurm/submit.sh --scan-tasks N --write-tasks M [--logs LOGDIR] \
#       [--sbatch "EXTRA SBATCH OPTIONS"] -- INPUT... -o DIR --max-seq-len L [PACK OPTIONS]
#
# Every step gets the same INPUTs and pack options ('prepack scan --help');
# paths must be the same on every node (a shared file system). prepack
# writes only in DIR; Slurm writes the tasks' logs to LOGDIR (default
# DIR.logs beside DIR: DIR itself ends up holding the set alone).
# $PREPACK names the prepack command on the nodes (default: prepack).
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
scan_tasks=
write_tasks=
logs=
extra=()
while [ $# -gt 0 ]; do
    case $1 in
    --scan-tasks) scan_tasks=$2; shift 2 ;;
    --write-tasks) write_tasks=$2; shift 2 ;;
    --logs) logs=$2; shift 2 ;;
    --sbatch) read -r -a extra <<<"$2"; shift 2 ;;
    --) shift; break ;;
    -h | --help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "submit.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ $scan_tasks =~ ^[1-9][0-9]*$ ]] && [[ $write_tasks =~ ^[1-9][0-9]*$ ]] ||
    { echo "submit.sh: --scan-tasks N and --write-tasks M are required" >&2; exit 2; }
[ $# -gt 0 ] || { echo "submit.sh: give the pack arguments after --" >&2; exit 2; }

# the output directory, for the logs' place
out=
args=("$@")
for ((i = 0; i < ${#args[@]}; i++)); do
    case ${args[i]} in
    -o | --output) out=${args[i + 1]:-} ;;
    --output=*) out=${args[i]#--output=} ;;
    esac
done
[ -n "$out" ] || { echo "submit.sh: the pack arguments need -o DIR" >&2; exit 2; }
logs=${logs:-${out%/}.logs}
mkdir -p "$logs"

sb=(sbatch --parsable --kill-on-invalid-dep=yes --export=ALL "${extra[@]}")
scan=$("${sb[@]}" --job-name=prepack-scan --array=0-$((scan_tasks - 1)) \
    --output="$logs/scan-%a.log" "$here/step.sbatch" scan "$@" --task-count "$scan_tasks")
plan=$("${sb[@]}" --job-name=prepack-plan --dependency=afterok:"$scan" \
    --output="$logs/plan.log" "$here/step.sbatch" plan "$@" --scan-tasks "$scan_tasks")
write=$("${sb[@]}" --job-name=prepack-write --dependency=afterok:"$plan" \
    --array=0-$((write_tasks - 1)) --output="$logs/write-%a.log" \
    "$here/step.sbatch" write "$@" --task-count "$write_tasks")
final=$("${sb[@]}" --job-name=prepack-finalize --dependency=afterok:"$write" \
    --output="$logs/finalize.log" "$here/step.sbatch" finalize "$@" --write-tasks "$write_tasks")
echo "$scan $plan $write $final"
