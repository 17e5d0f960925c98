#!/usr/bin/env bash
# A single-node Slurm on this machine, for the tests and for trying
# scripts/slurm/submit.sh without a cluster: Debian 12's slurmctld, slurmd
# and munge, localhost only, everything (config, state, logs, munge key and
# socket) in one directory.
#
#   scripts/slurm/local_cluster.sh start DIR   # prints: export SLURM_CONF=...
#   scripts/slurm/local_cluster.sh stop DIR
#
# Needs root and the packages slurmctld slurmd munge slurm-client
# (scripts/deps.sh slurm installs them). Settings that Slurm 22.05 needs
# without systemd: proctrack/linuxproc and task/none (no cgroup tracking),
# select/cons_tres with CR_Core (else each job takes the whole node's
# memory and jobs run one at a time), and a cgroup.conf naming the v1
# plugin (slurmd initialises one even unused, and dies without it; on a
set -euo pipefail

cmd=${1:-}
dir=${2:-}
[ -n "$cmd" ] && [ -n "$dir" ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }
mkdir -p "$dir"
dir=$(cd "$dir" && pwd)
conf=$dir/slurm.conf

stop() {
    for name in slurmd slurmctld munged; do
        if [ -f "$dir/$name.pid" ]; then
            kill "$(cat "$dir/$name.pid")" 2>/dev/null || true
        fi
    done
    for name in slurmd slurmctld munged; do
        for _ in $(seq 50); do
            [ -f "$dir/$name.pid" ] && kill -0 "$(cat "$dir/$name.pid")" 2>/dev/null || break
            sleep 0.1
        done
        rm -f "$dir/$name.pid"
    done
}

if [ "$cmd" = stop ]; then
    stop
    exit 0
fi
[ "$cmd" = start ] || { echo "usage: $0 start|stop DIR" >&2; exit 2; }

for bin in slurmctld slurmd munged sbatch; do
    command -v "$bin" >/dev/null || [ -x "/usr/sbin/$bin" ] || {
        echo "$0: $bin is missing: bash scripts/deps.sh slurm" >&2; exit 1; }
done
export PATH=$PATH:/usr/sbin
node=$(hostname -s)
cpus=$(nproc)
mem=$(awk '/MemTotal/ {print int($2 / 1024 / 2)}' /proc/meminfo)
# ports of our own, so a Slurm already on the machine is left alone
port=$((16817 + RANDOM % 1000))
mkdir -p "$dir/state" "$dir/spool" "$dir/log" "$dir/munge"

# munge: a generated key, a socket in DIR
dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
chmod 600 "$dir/munge/munge.key"
chmod 700 "$dir/munge"
munged --force --socket="$dir/munge/socket" --key-file="$dir/munge/munge.key" \
    --pid-file="$dir/munged.pid" --log-file="$dir/log/munged.log" \
    --seed-file="$dir/munge/seed"

cat >"$conf" <<CONF
ClusterName=prepack-test
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$port
SlurmdPort=$((port + 1000))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/socket
CryptoType=crypto/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
MpiDefault=none
ReturnToService=2
JobCompType=jobcomp/none
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
SlurmctldTimeout=30
SlurmdTimeout=30
MinJobAge=600
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=local Nodes=$node Default=YES MaxTime=INFINITE State=UP
CONF
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = cgroup2fs ]; then
    printf 'CgroupPlugin=cgroup/v1\nIgnoreSystemd=yes\n' >"$dir/cgroup.conf"
else
    printf 'CgroupPlugin=cgroup/v1\n' >"$dir/cgroup.conf"
fi
printf '' >"$dir/plugstack.conf"

export SLURM_CONF=$conf
slurmctld -f "$conf"
slurmd -f "$conf"
for _ in $(seq 100); do
    state=$(sinfo -h -N -o %T 2>/dev/null | head -1 || true)
    case $state in idle*|mixed*|allocated*) echo "export SLURM_CONF=$conf"; exit 0 ;; esac
    sleep 0.2
done
echo "$0: the node did not come up (state '${state:-none}'); logs in $dir/log" >&2
tail -n 20 "$dir/log/"*.log >&2 || true
stop
exit 1
