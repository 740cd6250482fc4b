#!/usr/bin/env bash
# A one-node Slurm cluster on localhost, for tests and for trying sweeps without a real cluster.
#
#   scripts/local_slurm.sh start [DIR]   install slurm-wlm + munge if missing, start munged,
#                                        slurmctld and slurmd with config and state under DIR
#   scripts/local_slurm.sh stop [DIR]    stop the daemons started from DIR (by their pid files)
#   scripts/local_slurm.sh pids [DIR]    print the pids of those daemons that are running
#
# DIR defaults to $LOCAL_SLURM_DIR or /tmp/dynamics-slurm. Clients find the cluster through
#   export SLURM_CONF=DIR/slurm.conf
# Needs root (daemons, apt-get). Debian/Ubuntu only. `start` is idempotent: it skips the install
# when the daemons are installed and does nothing when the daemons of DIR are already running.
#
# The settings are the few that work without systemd or cgroups (containers, CI VMs): process
# tracking by /proc (proctrack/linuxproc), no task binding (task/none), and munge with its own key
# and socket so that it never touches a system-wide munge. munged runs as user munge, which may not
# be able to enter DIR (pytest's tmp dirs are 0700 root), so its files live in a directory of their
# own in /tmp named after DIR.
set -euo pipefail

cmd="${1:-}"
dir="$(realpath -m "${2:-${LOCAL_SLURM_DIR:-/tmp/dynamics-slurm}}")"
conf="$dir/slurm.conf"
munge_dir="/tmp/dynamics-munge-$(printf %s "$dir" | md5sum | cut -c1-12)"
munge_socket="$munge_dir/munge.socket.2"
pidfiles=("$dir/run/slurmd.pid" "$dir/run/slurmctld.pid" "$munge_dir/munged.pid")

die() { echo "local_slurm.sh: $*" >&2; exit 1; }

alive() { [[ -f "$1" ]] && kill -0 "$(cat "$1")" 2>/dev/null; }

install() {
  if command -v slurmctld >/dev/null && command -v slurmd >/dev/null \
      && command -v sbatch >/dev/null && command -v munged >/dev/null; then
    return
  fi
  command -v apt-get >/dev/null || die "apt-get not found: install slurm-wlm and munge yourself"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends slurm-wlm munge >/dev/null
  # The packages' own services may have been started by the install; they are not ours.
}

write_conf() {
  local host cpus mem_mb
  host="$(hostname -s)"
  cpus="$(nproc)"
  # Leave a margin: slurmd drains a node whose configured memory exceeds what it finds.
  mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  cat >"$conf" <<EOF
ClusterName=dynamics-local
SlurmctldHost=$host
SlurmUser=root
SlurmdUser=root
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
AuthType=auth/munge
CredType=cred/munge
AuthInfo=socket=$munge_socket
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
SchedulerType=sched/backfill
SwitchType=switch/none
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
ReturnToService=2
MinJobAge=600
StateSaveLocation=$dir/state/ctld
SlurmdSpoolDir=$dir/state/slurmd
SlurmctldPidFile=$dir/run/slurmctld.pid
SlurmdPidFile=$dir/run/slurmd.pid
SlurmctldLogFile=$dir/log/slurmctld.log
SlurmdLogFile=$dir/log/slurmd.log
NodeName=$host CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
PartitionName=local Nodes=ALL Default=YES MaxTime=INFINITE State=UP
EOF
}

start_munge() {
  alive "$munge_dir/munged.pid" && return
  mkdir -p "$munge_dir"
  if [[ ! -f "$munge_dir/munge.key" ]]; then
    dd if=/dev/urandom of="$munge_dir/munge.key" bs=1024 count=1 status=none
  fi
  chown -R munge:munge "$munge_dir"
  chmod 711 "$munge_dir"
  chmod 400 "$munge_dir/munge.key"
  runuser -u munge -- munged \
    --key-file="$munge_dir/munge.key" --socket="$munge_socket" \
    --pid-file="$munge_dir/munged.pid" --log-file="$munge_dir/munged.log" \
    --seed-file="$munge_dir/munged.seed"
}

wait_idle() {
  local host state
  host="$(hostname -s)"
  for _ in $(seq 60); do
    state="$(SLURM_CONF="$conf" sinfo -h -n "$host" -o %T 2>/dev/null || true)"
    case "$state" in
      idle*|mixed*|allocated*) return ;;
      down*|drain*) SLURM_CONF="$conf" scontrol update nodename="$host" state=resume || true ;;
    esac
    sleep 1
  done
  die "node $host not idle after 60 s (state: ${state:-none}); see $dir/log/"
}

start() {
  [[ "$(id -u)" == 0 ]] || die "must run as root (it starts slurmd and munged)"
  install
  mkdir -p "$dir/state/ctld" "$dir/state/slurmd" "$dir/run" "$dir/log"
  write_conf
  start_munge
  alive "$dir/run/slurmctld.pid" || slurmctld -f "$conf"
  alive "$dir/run/slurmd.pid" || slurmd -f "$conf"
  wait_idle
  echo "export SLURM_CONF=$conf"
}

stop() {
  local f pid
  for f in "${pidfiles[@]}"; do
    alive "$f" || continue
    pid="$(cat "$f")"
    kill "$pid"
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid"
    rm -f "$f"
  done
  rm -rf "$munge_dir"
}

pids() {
  local f
  for f in "${pidfiles[@]}"; do
    if alive "$f"; then cat "$f"; fi
  done
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  pids) pids ;;
  *) die "usage: $0 start|stop|pids [DIR]" ;;
esac
