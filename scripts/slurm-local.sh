#!/usr/bin/env bash
# A real one-machine Slurm cluster for tests and for trying eatnas's Slurm executor:
#
#   scripts/slurm-local.sh start    installs slurm-wlm and munge (Debian) when missing, starts
#                                   munged, slurmctld and slurmd as root in a temporary folder and
#                                   prints `SLURM_CONF=PATH` (export it to use the cluster)
#   scripts/slurm-local.sh status   sinfo of the running cluster
#   scripts/slurm-local.sh stop     stops the daemons and removes the folder
#
# The folder is $EATNAS_SLURM_DIR (default /tmp/eatnas-slurm). One node (this machine, its real
# CPU count), one partition `debug`, no accounting (so no sacct), jobs kept in squeue/scontrol
# for MinJobAge seconds after they end. $EATNAS_SLURM_DIR/node-private is a folder the jobs do not
# see (for tests of a run folder that is not shared).
set -euo pipefail

dir="${EATNAS_SLURM_DIR:-/tmp/eatnas-slurm}"
conf="$dir/slurm.conf"

fail() { echo "slurm-local: $*" >&2; exit 1; }

install_if_missing() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null && command -v munged >/dev/null \
    && command -v sbatch >/dev/null; then
    return
  fi
  [ "$(id -u)" = 0 ] || fail "slurm-wlm and munge are missing and installing them needs root"
  echo "slurm-local: installing slurm-wlm and munge from Debian's packages" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >&2
}

running() { [ -f "$dir/slurmctld.pid" ] && kill -0 "$(cat "$dir/slurmctld.pid")" 2>/dev/null; }

start() {
  [ "$(id -u)" = 0 ] || fail "start runs the daemons as root; run it as root"
  install_if_missing
  if running; then
    echo "SLURM_CONF=$conf"
    return
  fi
  rm -rf "$dir"
  mkdir -p "$dir"/{munge,state,spool}
  chmod 700 "$dir/munge"
  local host cpus memory
  host="$(hostname -s)"
  cpus="$(nproc)"
  memory="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"

  # munge: its own key, socket and files, so nothing of the system's is touched.
  dd if=/dev/urandom of="$dir/munge/munge.key" bs=1024 count=1 status=none
  chmod 400 "$dir/munge/munge.key"
  munged --force --key-file="$dir/munge/munge.key" --socket="$dir/munge/munge.socket" \
    --pid-file="$dir/munge/munged.pid" --log-file="$dir/munge/munged.log" \
    --seed-file="$dir/munge/munged.seed"

  cat >"$conf" <<EOF
ClusterName=eatnas-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${EATNAS_SLURMCTLD_PORT:-6817}
SlurmdPort=${EATNAS_SLURMD_PORT:-6818}
AuthType=auth/munge
AuthInfo=socket=$dir/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/filetxt
JobCompLoc=$dir/jobcomp.txt
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SchedulerType=sched/backfill
# Schedule a submitted job at once (defaults hold batch jobs back up to 3 s, for throughput).
SchedulerParameters=batch_sched_delay=0,sched_min_interval=0
MpiDefault=none
ReturnToService=2
JobRequeue=1
MinJobAge=300
KillWait=2
InactiveLimit=0
SlurmctldTimeout=30
SlurmdTimeout=30
NodeName=$host CPUs=$cpus RealMemory=$memory State=UNKNOWN
PartitionName=debug Nodes=$host Default=YES MaxTime=INFINITE State=UP
EOF
  export SLURM_CONF="$conf"
  slurmctld -f "$conf" -i
  # slurmd (and so every job) runs in a mount namespace of its own where $dir/node-private is an
  # empty tmpfs: a folder this machine sees and the "node" does not, as a run folder outside the
  # cluster's shared filesystem would be. Without namespaces, slurmd runs plainly and the folder
  # is absent.
  mkdir -p "$dir/node-private"
  if unshare --mount --propagation private true 2>/dev/null; then
    unshare --mount --propagation private \
      sh -c "mount -t tmpfs tmpfs '$dir/node-private' && exec slurmd -f '$conf'"
    echo "hidden from the jobs of this Slurm (their slurmd mounts an empty tmpfs here)" \
      > "$dir/node-private/README"
  else
    rmdir "$dir/node-private"
    slurmd -f "$conf"
  fi
  # Ready when the node takes jobs.
  for _ in $(seq 1 60); do
    if sinfo -h -o '%T' 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
      echo "SLURM_CONF=$conf"
      return
    fi
    sleep 0.5
  done
  echo "slurm-local: the node did not come up; logs:" >&2
  tail -n 20 "$dir/slurmctld.log" "$dir/slurmd.log" >&2 || true
  stop
  exit 1
}

stop() {
  for pid_file in "$dir/slurmd.pid" "$dir/slurmctld.pid" "$dir/munge/munged.pid"; do
    if [ -f "$pid_file" ]; then
      kill "$(cat "$pid_file")" 2>/dev/null || true
    fi
  done
  sleep 1
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status)
    running || fail "not running (start it with: $0 start)"
    SLURM_CONF="$conf" sinfo
    echo "SLURM_CONF=$conf"
    ;;
  *) fail "usage: $0 start|stop|status" ;;
esac
