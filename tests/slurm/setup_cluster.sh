#!/usr/bin/env bash
# A one-node SLURM cluster on localhost, for the cluster test (tests/test_slurm.py) and CI.
#
#   tests/slurm/setup_cluster.sh install        # apt-get install slurm-wlm munge (root, Debian/Ubuntu)
#   tests/slurm/setup_cluster.sh start [DIR]    # write a config under DIR, start munged, slurmctld, slurmd
#   tests/slurm/setup_cluster.sh stop  [DIR]    # stop exactly the daemons `start` started (by their pids)
#
# DIR defaults to /tmp/losslandscape-slurm and holds the config, state, logs and pid files.
# Outside DIR, `start` only links /etc/slurm/slurm.conf and gres.conf to DIR's files (SLURM's
# commands inside a job find their config there: Snakemake's job step drops SLURM_CONF), and
# refuses to touch a real config already there; `stop` removes the links.
#
# The node has partitions `cpu` (default) and `gpu`, and one count-only GPU (generic resource
# without a device behind it: gres.conf names a harmless device file and turns autodetection
# off). SLURM still hands the GPU out and sets CUDA_VISIBLE_DEVICES for jobs that ask for it,
# which is what the test checks. There is no accounting database: Snakemake's SLURM plugin must
# query job states with `--slurm-status-command squeue`, which works because MinJobAge keeps
# finished jobs in squeue's view for a day. Runs as root (SlurmUser=root, no cgroups).
set -euo pipefail

action=${1:?usage: setup_cluster.sh install|start|stop [DIR]}
dir=${2:-/tmp/losslandscape-slurm}
node=localnode

install() {
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq slurm-wlm munge >/dev/null
}

write_config() {
    mkdir -p "$dir"/{state,spool,munge}
    chmod 700 "$dir/munge"
    local cpus mem
    cpus=$(nproc)
    mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 / 2 ))   # half the RAM, in MB
    # a munge key of our own (munged insists it is private to its user)
    if [ ! -s "$dir/munge/munge.key" ]; then
        dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
    fi
    chmod 400 "$dir/munge/munge.key"
    cat >"$dir/slurm.conf" <<CONF
ClusterName=losslandscape-test
SlurmctldHost=$(hostname -s)(127.0.0.1)
SlurmctldPort=16817
SlurmdPort=16818
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
# no cgroups, no accounting: enough for a container
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
ReturnToService=2
# keep finished jobs visible to squeue (the plugin's status command without sacct)
MinJobAge=86400
SlurmctldTimeout=30
SlurmdTimeout=30
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem Gres=gpu:1 State=UNKNOWN
PartitionName=cpu Nodes=$node Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$node MaxTime=INFINITE State=UP
CONF
    cat >"$dir/gres.conf" <<CONF
AutoDetect=off
NodeName=$node Name=gpu File=/dev/null
CONF
}

link_config() {
    local name
    mkdir -p /etc/slurm
    for name in slurm.conf gres.conf; do
        if [ -e "/etc/slurm/$name" ] && [ ! -L "/etc/slurm/$name" ]; then
            echo "setup_cluster.sh: /etc/slurm/$name exists and is not ours; not touching this machine's SLURM" >&2
            return 1
        fi
        ln -sfn "$dir/$name" "/etc/slurm/$name"
    done
}

start() {
    write_config
    link_config
    export SLURM_CONF="$dir/slurm.conf"
    munged --force --socket="$dir/munge/munge.socket" --key-file="$dir/munge/munge.key" \
        --pid-file="$dir/munged.pid" --log-file="$dir/munged.log" --seed-file="$dir/munge/munge.seed"
    slurmctld -i               # -i: ignore state left by an earlier cluster in DIR
    slurmd -N "$node"
    # wait until the node takes jobs
    for _ in $(seq 60); do
        if sinfo -h -N -o '%t' 2>/dev/null | grep -qE '^(idle|mix|alloc)'; then
            echo "setup_cluster.sh: one-node SLURM cluster up (config $dir/slurm.conf)"
            return 0
        fi
        sleep 1
    done
    echo "setup_cluster.sh: the node did not come up; see $dir/slurmctld.log and $dir/slurmd.log" >&2
    sinfo -N -l >&2 || true
    return 1
}

stop() {
    local name pid
    for name in slurmd slurmctld munged; do
        if [ -s "$dir/$name.pid" ]; then
            pid=$(cat "$dir/$name.pid")
            if kill "$pid" 2>/dev/null; then
                for _ in $(seq 30); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
            fi
            rm -f "$dir/$name.pid"
        fi
    done
    for name in slurm.conf gres.conf; do
        if [ "$(readlink "/etc/slurm/$name" 2>/dev/null)" = "$dir/$name" ]; then
            rm -f "/etc/slurm/$name"
        fi
    done
}

case "$action" in
    install) install ;;
    start) start ;;
    stop) stop ;;
    *) echo "usage: setup_cluster.sh install|start|stop [DIR]" >&2; exit 2 ;;
esac
