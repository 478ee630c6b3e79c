#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, for trying the SLURM path without a real cluster:
# workflow/profiles/slurm-local runs the pipeline on it and tests/test_slurm.py checks it.
#
#   workflow/slurm/local-cluster.sh start    # install (Debian: slurm-wlm, munge), configure, start, wait
#   workflow/slurm/local-cluster.sh status   # the daemons and sinfo; exit 0 when the node is up
#   workflow/slurm/local-cluster.sh stop     # kill the daemons this script started, by their PIDs
#
# It runs as root (or re-runs itself through sudo) and needs no systemd: it starts munged,
# slurmctld and slurmd itself, in that order. A second `start` finds them running and returns.
#
# Where things are:
#   /etc/slurm/slurm.conf  written here (SLURM's clients read it from there); the script refuses to
#                          touch one that it did not write, so a real cluster's config is safe
#   /tmp/sagan-slurm/      state: the daemons' PID files, logs (slurmctld.log, slurmd.log,
#                          munged.log) and spool directories. Override with SAGAN_SLURM_DIR.
#
# The cluster: one node (this host, with the CPUs and memory `slurmd -C` reports), partitions `cpu`
# (default) and `gpu` (the same node, no GPU gres), no accounting database (so no sacct: the
# profile polls squeue, and MinJobAge keeps finished jobs visible there for 10 minutes), cores and
# memory shared between jobs (select/cons_tres), and no cgroups (proctrack/linuxproc,
# task/none), which containers rarely allow.
set -euo pipefail

PATH="$PATH:/usr/sbin:/sbin"   # the daemons, for a caller whose PATH lacks them
STATE="${SAGAN_SLURM_DIR:-/tmp/sagan-slurm}"
CONF=/etc/slurm/slurm.conf
MARKER="# Written by sagan's workflow/slurm/local-cluster.sh"
MIN_JOB_AGE=600          # seconds a finished job stays in squeue (the profile's status command)
WAIT_S="${SAGAN_SLURM_WAIT_S:-60}"

die() { echo "local-cluster: $*" >&2; exit 1; }
say() { echo "local-cluster: $*"; }

as_root() {
    # Re-run this script as root when it is not (apt-get, /etc, daemons).
    if [ "$(id -u)" != 0 ]; then
        command -v sudo >/dev/null || die "must run as root (no sudo found)"
        exec sudo --preserve-env=SAGAN_SLURM_DIR,SAGAN_SLURM_WAIT_S bash "$0" "$@"
    fi
}

alive() { [ -n "${1:-}" ] && kill -0 "$1" 2>/dev/null; }
pid_of() { cat "$STATE/$1.pid" 2>/dev/null || true; }

node_state() {
    # The node's state as sinfo prints it (idle, mix, alloc, down*, ...), or nothing.
    timeout 10 sinfo -h -N -o %t 2>/dev/null | head -n1 || true
}

node_up() {
    case "$(node_state)" in idle | mix | alloc | comp | idle~) return 0 ;; *) return 1 ;; esac
}

running() {
    alive "$(pid_of slurmctld)" && alive "$(pid_of slurmd)" && node_up
}

install_packages() {
    local missing=()
    for cmd in munged slurmctld slurmd sinfo sbatch squeue; do
        command -v "$cmd" >/dev/null || missing+=("$cmd")
    done
    [ ${#missing[@]} = 0 ] && return
    command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install SLURM and munge yourself"
    say "installing slurm-wlm and munge (missing: ${missing[*]})"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
}

write_config() {
    if [ -e "$CONF" ] && ! grep -qxF "$MARKER" "$CONF"; then
        die "$CONF exists and was not written by this script; refusing to replace a real cluster's config"
    fi
    local host node
    host="$(hostname -s)"
    # `slurmd -C` prints this host's real layout: NodeName=... CPUs=... RealMemory=...
    node="$(slurmd -C | head -n1)"
    [[ "$node" == NodeName=* ]] || die "slurmd -C printed no node line: $node"
    node="NodeName=$host ${node#NodeName=* }"  # sinfo and slurmctld know it by its short name
    mkdir -p "$(dirname "$CONF")" "$STATE/ctld" "$STATE/spool"
    cat >"$CONF.tmp" <<EOF
$MARKER
# One node, this host; state and logs under $STATE. Rewritten by every \`start\`.
ClusterName=sagan-local
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/spool
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
SlurmctldDebug=info
SlurmdDebug=info
# No cgroups in most containers: track job processes through /proc, bind no tasks.
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
MpiDefault=none
SwitchType=switch/none
# Jobs share the node by cores and memory; a job that names no memory gets 1 GB per CPU.
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1000
SchedulerType=sched/backfill
# No accounting database: no sacct. Finished jobs stay in squeue for MinJobAge seconds, which
# the Snakemake SLURM executor needs to see them finish (slurm-status-command: squeue).
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MinJobAge=$MIN_JOB_AGE
# A job runs at the nice value of the sbatch that submitted it (default: slurmd's), so that work
# submitted from a niced process (the test session's pipeline scenarios) stays in the background.
PropagatePrioProcess=1
ReturnToService=2
$node NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=cpu Nodes=$host Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=$host MaxTime=INFINITE State=UP
EOF
    mv "$CONF.tmp" "$CONF"
}

start_munge() {
    if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
        return  # a munged already answers (ours, or the system's)
    fi
    if [ ! -s /etc/munge/munge.key ]; then
        say "creating /etc/munge/munge.key"
        mkdir -p /etc/munge
        if command -v mungekey >/dev/null; then
            mungekey --create --keyfile=/etc/munge/munge.key --force
        else
            dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
        fi
    fi
    mkdir -p /run/munge /var/lib/munge /var/log/munge
    chown munge:munge /etc/munge /etc/munge/munge.key /run/munge /var/lib/munge /var/log/munge
    chmod 0700 /etc/munge /var/log/munge
    chmod 0400 /etc/munge/munge.key
    chmod 0755 /run/munge
    touch "$STATE/munged.log" && chown munge:munge "$STATE/munged.log"
    runuser -u munge -- munged --log-file="$STATE/munged.log" \
        || die "munged did not start: $(tail -n 5 "$STATE/munged.log" 2>/dev/null)"
    local i
    for i in $(seq 50); do
        if munge -n 2>/dev/null | unmunge >/dev/null 2>&1; then
            cp /run/munge/munged.pid "$STATE/munged.pid"
            return
        fi
        sleep 0.1
    done
    die "munged does not answer; its log: $(tail -n 5 "$STATE/munged.log" 2>/dev/null)"
}

show_logs() {
    local name
    for name in munged slurmctld slurmd; do
        echo "---- $STATE/$name.log (last 15 lines)" >&2
        tail -n 15 "$STATE/$name.log" 2>/dev/null >&2 || echo "(none)" >&2
    done
}

start() {
    as_root start
    if running; then
        say "already running (node $(node_state)); state in $STATE"
        return
    fi
    install_packages
    mkdir -p "$STATE"
    # A half-started cluster (one daemon died) is restarted whole.
    stop_daemons quiet
    write_config
    start_munge
    # -c: start with no jobs from an earlier run of this cluster.
    slurmctld -c || { show_logs; die "slurmctld did not start"; }
    slurmd || { show_logs; die "slurmd did not start"; }
    local deadline=$((SECONDS + WAIT_S)) state
    while ! node_up; do
        state="$(node_state)"
        if [ "$SECONDS" -ge "$deadline" ]; then
            show_logs
            die "the node is not up after ${WAIT_S} s (sinfo state: '${state:-no answer}')"
        fi
        # A node that registered as down (e.g. after an earlier crash) is resumed.
        case "$state" in down* | drain* | fail*) scontrol update nodename="$(hostname -s)" state=resume 2>/dev/null || true ;; esac
        sleep 0.5
    done
    say "running: node $(hostname -s) $(node_state), partitions cpu (default) and gpu; state and logs in $STATE"
}

stop_daemons() {
    # Kill, by their recorded PIDs, the daemons this script started (slurmd first).
    local name pid i quiet="${1:-}"
    for name in slurmd slurmctld munged; do
        pid="$(pid_of "$name")"
        if alive "$pid"; then
            [ -n "$quiet" ] || say "stopping $name (pid $pid)"
            kill "$pid" 2>/dev/null || true
            for i in $(seq 100); do alive "$pid" || break; sleep 0.1; done
            alive "$pid" && kill -9 "$pid" 2>/dev/null || true
        fi
        rm -f "$STATE/$name.pid"
    done
}

stop() {
    as_root stop
    stop_daemons
    say "stopped (logs kept in $STATE)"
}

status() {
    local name pid rc=0
    for name in munged slurmctld slurmd; do
        pid="$(pid_of "$name")"
        if alive "$pid"; then echo "$name: running (pid $pid)"; else echo "$name: not running"; fi
    done
    if node_up; then
        sinfo
    else
        local state
        state="$(node_state)"
        echo "node: ${state:-no answer from slurmctld}"
        rc=1
    fi
    return $rc
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    status) status ;;
    *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
